"""Checks used by the exercises' visible tests: on failure they print "yours vs expected".

Explained in the student guide (appendix). Students' answers never import this
module; only the test cells do.
"""
from __future__ import annotations

import torch

__all__ = ["check_close", "check_equal", "check_shape"]


def _fmt(t) -> str:
    if isinstance(t, torch.Tensor):
        with torch.no_grad():
            body = torch.round(t.detach().double(), decimals=4) if t.is_floating_point() else t
        return f"tensor of shape {tuple(t.shape)}, dtype {t.dtype}:\n{body}"
    return repr(t)


def check_shape(yours, expected_shape, what: str = "result") -> None:
    """Fail with a clear message unless ``yours`` is a tensor of shape ``expected_shape``."""
    if not isinstance(yours, torch.Tensor):
        raise AssertionError(f"{what}: expected a torch.Tensor, yours is {type(yours).__name__}: {yours!r}")
    if tuple(yours.shape) != tuple(expected_shape):
        raise AssertionError(f"{what}: wrong shape\n  yours:    {tuple(yours.shape)}\n  expected: {tuple(expected_shape)}")


def check_close(yours, expected, what: str = "result", atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Fail unless ``yours`` equals ``expected`` (same shape, values within tolerance, no NaN)."""
    if isinstance(expected, (tuple, list)):
        if not isinstance(yours, (tuple, list)) or len(yours) != len(expected):
            raise AssertionError(f"{what}: expected {len(expected)} results, yours is {_fmt(yours)}")
        for i, (y, e) in enumerate(zip(yours, expected)):
            check_close(y, e, f"{what}[{i}]", atol, rtol)
        return
    check_shape(yours, expected.shape, what)
    y, e = yours.detach().double(), expected.detach().double()
    if torch.isnan(y).any() and not torch.isnan(e).any():
        raise AssertionError(f"{what}: yours contains NaN\n  yours:    {_fmt(yours)}\n  expected: {_fmt(expected)}")
    if not torch.allclose(y, e, atol=atol, rtol=rtol, equal_nan=True):
        worst = (y - e).abs().nan_to_num(float("inf")).max().item()
        raise AssertionError(
            f"{what}: values differ (largest difference {worst:.3g})\n"
            f"  yours:    {_fmt(yours)}\n  expected: {_fmt(expected)}"
        )


def check_equal(yours, expected, what: str = "result") -> None:
    """Fail unless ``yours == expected`` exactly (tensors: same shape, dtype kind and values)."""
    if isinstance(expected, torch.Tensor):
        check_shape(yours, expected.shape, what)
        if yours.dtype != expected.dtype or not torch.equal(yours, expected):
            raise AssertionError(f"{what}: not equal\n  yours:    {_fmt(yours)}\n  expected: {_fmt(expected)}")
    elif yours != expected:
        raise AssertionError(f"{what}: not equal\n  yours:    {yours!r}\n  expected: {expected!r}")
