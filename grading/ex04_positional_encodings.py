"""Trusted grading spec for ex04 (positional encodings): probes compute an answer's outputs on fixed inputs.

Each probe mirrors the visible and hidden tests of the graded cell it is named after (closed-form values, position
offsets for a cache, odd widths, the relative-offset property of RoPE, queries aligned to the last positions). The
grader runs it on the student's namespace inside the sandbox and on the solution's namespace outside, and compares
the outputs.
"""
import torch

ANSWERS = ["sinusoidal_encoding", "apply_rotary", "rope_qk"]
FORBIDDEN = ["course_lib", "transformers"]
# float32 tables at positions up to a few hundred: a float32 angle is off by about 1e-5 there
TOLERANCE = {"atol": 1e-4, "rtol": 1e-4}


def _randn(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _outcome(fn, *args, **kwargs):
    """What a call does when it is expected to fail: the exception's type name, or that it returned."""
    try:
        fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - the type is the result
        return type(err).__name__
    return "returned"


def probe_test_sinusoidal_values(ns):
    f = ns["sinusoidal_encoding"]
    return {
        "6_8": f(6, 8),
        "1_4": f(1, 4),
        "50_64": f(50, 64),
        "40_16": f(40, 16),
        "5_2": f(5, 2),
        "dtype": str(f(3, 4).dtype),
    }


def probe_test_sinusoidal_offset_and_odd(ns):
    f = ns["sinusoidal_encoding"]
    return {
        "full_30_8": f(30, 8),
        "start_20": f(5, 8, start=20),
        "start_29_one_row": f(1, 8, start=29),
        "start_200": f(4, 32, start=200),
        "odd_5": _outcome(f, 4, 5),
        "odd_1": _outcome(f, 4, 1),
        "odd_33": _outcome(f, 4, 33),
    }


def probe_test_rotate_values(ns):
    f, g = ns["apply_rotary"], torch.Generator().manual_seed(40)
    x4 = _randn(g, 2, 3, 7, 8)
    out4 = f(x4)
    return {
        "5_4": f(_randn(g, 5, 4)),
        "bhtd": out4,
        "dtype": str(out4.dtype),
        "dh_2": f(_randn(g, 4, 2)),
        "6_16": f(_randn(g, 6, 16)),
        "odd": _outcome(f, _randn(g, 3, 5)),
    }


def probe_test_rotate_relative(ns):
    f, g = ns["apply_rotary"], torch.Generator().manual_seed(41)
    q, k = _randn(g, 1, 16), _randn(g, 1, 16)
    pairs = ((3, 1), (10, 8), (3, 2), (0, 5), (20, 25), (0, 0), (7, 7), (5, 2), (105, 102), (2, 9), (33, 40),
             (63, 0), (563, 500))
    scores = torch.stack([(f(q, start=m) @ f(k, start=n).T)[0, 0] for m, n in pairs])
    x = _randn(g, 2, 10, 6)
    return {
        "scores": scores,
        "tail_start_4": f(x[:, 4:], start=4),
        "last_start_9": f(x[:, -1:], start=9),
        "start_123": f(x[0], start=123),
    }


def probe_test_rope_qk(ns):
    f, g = ns["rope_qk"], torch.Generator().manual_seed(42)
    q, k = _randn(g, 2, 5, 8), _randn(g, 2, 5, 8)
    q9, k9 = _randn(g, 2, 3, 9, 8), _randn(g, 2, 3, 9, 8)
    q_last, k_last = f(q9[..., -1:, :], k9)
    q3, k7 = f(_randn(g, 1, 3, 4), _randn(g, 1, 7, 4))
    return {
        "t_eq_s": list(f(q, k)),
        "one_query_q": q_last,
        "one_query_k": k_last,
        "three_over_seven_q": q3,
        "three_over_seven_k": k7,
    }


PROBES = {
    "test_sinusoidal_values": probe_test_sinusoidal_values,
    "test_sinusoidal_offset_and_odd": probe_test_sinusoidal_offset_and_odd,
    "test_rotate_values": probe_test_rotate_values,
    "test_rotate_relative": probe_test_rotate_relative,
    "test_rope_qk": probe_test_rope_qk,
}
