"""Trusted grading spec for ex02 (self-attention): probes compute an answer's outputs on fixed inputs.

Each probe mirrors the visible and hidden tests of the graded cell it is named after. The grader runs it on the
student's namespace inside the sandbox and on the solution's namespace outside, and compares the outputs.
"""
import torch

ANSWERS = ["scaled_dot_product_attention", "SelfAttention"]
# The answer has the name of PyTorch's function (and course_lib's). The grader counts a bare name the notebook defines
# itself (def/class) as the student's own, so F.scaled_dot_product_attention and any import of it stay forbidden while
# the answer may call itself; torch._C and torch.ops (the kernels underneath) are forbidden too.
FORBIDDEN = ["scaled_dot_product_attention", "_C", "ops", "MultiheadAttention", "multi_head_attention_forward",
             "course_lib"]
TOLERANCE = {"atol": 1e-5, "rtol": 1e-4}


def _randn(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def probe_test_attention_shapes(ns):
    att, g = ns["scaled_dot_product_attention"], torch.Generator().manual_seed(10)
    cases = {
        "2d": ((3, 4), (5, 4), (5, 2)),
        "batched": ((2, 3, 4), (2, 5, 4), (2, 5, 6)),
        "one_query_long_keys": ((2, 4, 1, 8), (2, 4, 9, 8), (2, 4, 9, 3)),
        "all_ones": ((1, 1, 1, 1), (1, 1, 1, 1), (1, 1, 1, 1)),
    }
    return {name: list(att(_randn(g, *q), _randn(g, *k), _randn(g, *v)).shape) for name, (q, k, v) in cases.items()}


def probe_test_attention_values(ns):
    att, g = ns["scaled_dot_product_attention"], torch.Generator().manual_seed(11)
    return {
        "small": att(_randn(g, 3, 4), _randn(g, 3, 4), _randn(g, 3, 2)),
        "t_ne_s_batch_heads": att(_randn(g, 2, 3, 4, 8), _randn(g, 2, 3, 7, 8), _randn(g, 2, 3, 7, 5)),
        "dh_64": att(_randn(g, 4, 64), _randn(g, 6, 64), _randn(g, 6, 3)),
        "one_key": att(_randn(g, 5, 4), _randn(g, 1, 4), _randn(g, 1, 2)),
    }


def probe_test_attention_mask(ns):
    att, g = ns["scaled_dot_product_attention"], torch.Generator().manual_seed(12)
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    pad = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)[:, None, None, :]
    full = torch.ones(3, 5, dtype=torch.bool)
    full[1] = False
    return {
        "causal": att(_randn(g, 4, 4), _randn(g, 4, 4), _randn(g, 4, 3), mask=causal),
        "padding": att(_randn(g, 2, 2, 3, 4), _randn(g, 2, 2, 5, 4), _randn(g, 2, 2, 5, 4), mask=pad),
        "fully_masked_row": att(_randn(g, 3, 4), _randn(g, 5, 4), _randn(g, 5, 2), mask=full),
    }


def _layer(ns, d_model, d_head, seed):
    layer = ns["SelfAttention"](d_model=d_model, d_head=d_head).double()
    g = torch.Generator().manual_seed(seed)
    for lin in (layer.W_q, layer.W_k, layer.W_v):
        lin.weight.copy_(_randn(g, d_head, d_model))
    return layer


def probe_test_self_attention(ns):
    g = torch.Generator().manual_seed(13)
    layer = _layer(ns, 6, 4, 1)
    x = _randn(g, 2, 5, 6)
    layer8 = _layer(ns, 8, 8, 2)
    x8 = _randn(g, 3, 6, 8)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    return {
        "plain": layer(x),
        "causal": layer8(x8, mask=causal),
        "batch_of_one": layer8(x8[:1]),
    }


PROBES = {
    "test_attention_shapes": probe_test_attention_shapes,
    "test_attention_values": probe_test_attention_values,
    "test_attention_mask": probe_test_attention_mask,
    "test_self_attention": probe_test_self_attention,
}
