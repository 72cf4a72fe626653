"""Trusted grading spec for ex05 (faster attention): probes compute an answer's outputs on fixed inputs.

Each probe mirrors the visible and hidden tests of the graded cell it is named after. The grader runs it on the
student's namespace inside the sandbox and on the solution's namespace outside, and compares the outputs.
"""
import torch

ANSWERS = ["sliding_window_mask", "linear_attention", "causal_linear_attention"]
FORBIDDEN = ["course_lib", "scaled_dot_product_attention", "MultiheadAttention", "multi_head_attention_forward"]
TOLERANCE = {"atol": 1e-5, "rtol": 1e-4}


def _randn(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _masks(ns, causal, cases):
    mask = ns["sliding_window_mask"]
    return {f"T{T}_w{w}": mask(T, w, causal=causal) for T, w in cases}


def probe_test_mask_causal(ns):
    # visible: (5, 1), (6, 2); hidden: window 0, T=7 w=3, window > T, T=1 with windows 0 and 5, T=9 w=1
    return _masks(ns, True, [(5, 1), (6, 2), (4, 0), (7, 3), (3, 10), (1, 0), (1, 5), (9, 1)])


def probe_test_mask_symmetric(ns):
    # visible: (5, 1); hidden: window 0, T=8 w=2, window > T, T=1, T=6 w=1 (symmetric matrix)
    return _masks(ns, False, [(5, 1), (4, 0), (8, 2), (3, 10), (1, 0), (6, 1)])


def probe_test_linear_attention(ns):
    lin, g = ns["linear_attention"], torch.Generator().manual_seed(21)
    return {
        "t_ne_s": lin(_randn(g, 4, 3), _randn(g, 6, 3), _randn(g, 6, 2)),
        "batch_heads": lin(_randn(g, 2, 3, 5, 4), _randn(g, 2, 3, 7, 4), _randn(g, 2, 3, 7, 6)),
        "one_query": lin(_randn(g, 1, 4), _randn(g, 5, 4), _randn(g, 5, 2)),
        "one_key": lin(_randn(g, 3, 4), _randn(g, 1, 4), _randn(g, 1, 2)),
        "square": lin(_randn(g, 6, 4), _randn(g, 6, 4), _randn(g, 6, 3)),
    }


def probe_test_causal_linear_attention(ns):
    cla, g = ns["causal_linear_attention"], torch.Generator().manual_seed(22)
    q, k, v = _randn(g, 7, 4), _randn(g, 7, 4), _randn(g, 7, 2)
    k2, v2 = k.clone(), v.clone()
    k2[4:], v2[4:] = _randn(g, 3, 4), _randn(g, 3, 2)
    return {
        "small": cla(_randn(g, 5, 3), _randn(g, 5, 3), _randn(g, 5, 2)),
        "batch_heads": cla(_randn(g, 2, 3, 6, 4), _randn(g, 2, 3, 6, 4), _randn(g, 2, 3, 6, 5)),
        "one_position": cla(_randn(g, 1, 4), _randn(g, 1, 4), _randn(g, 1, 3)),
        "t7": cla(q, k, v),
        "t7_future_changed_first4": cla(q, k2, v2)[:4],
    }


PROBES = {
    "test_mask_causal": probe_test_mask_causal,
    "test_mask_symmetric": probe_test_mask_symmetric,
    "test_linear_attention": probe_test_linear_attention,
    "test_causal_linear_attention": probe_test_causal_linear_attention,
}
