"""Chapter 03's claims about multi-head attention, checked on course_lib.attention.

- the parameters and the matrix FLOPs of MultiHeadAttention do not depend on the number of heads H;
- splitting heads with ``view(B, H, T, Dh)`` (no transpose) gives wrong outputs for H >= 2 and is invisible for H = 1;
- split_heads / merge_heads agree with a slice-by-slice reference, on random shapes.
"""
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch.utils.flop_counter import FlopCounterMode

from course_lib.attention import MultiHeadAttention, merge_heads, scaled_dot_product_attention, split_heads
from _helpers import rand as _rand

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


def _matrix_flops(D, B, T, S):
    """Multiply-adds count 2: projections 2BTD^2 + 4BSD^2 + 2BTD^2, scores and weighted sum 2BTSD each."""
    return 4 * B * T * D**2 + 4 * B * S * D**2 + 4 * B * T * S * D


@pytest.mark.parametrize("H", [1, 2, 4, 8])
def test_parameters_do_not_depend_on_heads(H):
    D = 64
    assert sum(p.numel() for p in MultiHeadAttention(D, H).parameters()) == 4 * D * D + 4 * D
    assert sum(p.numel() for p in MultiHeadAttention(D, H, bias=False).parameters()) == 4 * D * D


@pytest.mark.parametrize("H", [1, 2, 4, 8])
@pytest.mark.parametrize("T,S", [(9, 9), (3, 9), (1, 12)])
def test_matrix_flops_match_formula_for_every_head_count(H, T, S):
    D, B = 32, 2
    layer = MultiHeadAttention(D, H)
    query, memory = torch.randn(B, T, D), torch.randn(B, S, D)
    with FlopCounterMode(display=False) as counter:
        _, w = layer(query, memory, memory, return_weights=True)
    assert counter.get_total_flops() == _matrix_flops(D, B, T, S)
    assert w.shape == (B, H, T, S)  # what does grow with H: the attention weights


def _mha_with_split(layer, x, split):
    q, k, v = (split(proj(x), layer.n_heads) for proj in (layer.q_proj, layer.k_proj, layer.v_proj))
    return layer.out_proj(merge_heads(scaled_dot_product_attention(q, k, v)))


def _view_no_transpose(x, n_heads):
    B, T, D = x.shape
    return x.view(B, n_heads, T, D // n_heads)  # (B, H, T, Dh), the classic bug


@pytest.mark.parametrize("H", [1, 2, 4])
def test_view_without_transpose_is_wrong_for_several_heads_only(H):
    torch.manual_seed(0)
    ref = torch.nn.MultiheadAttention(8, H, batch_first=True, dtype=torch.float64)
    ours = MultiHeadAttention(8, H).double()
    ours.load_torch_weights(ref)
    x = _rand(2, 5, 8)
    expected, _ = ref(x, x, x)
    torch.testing.assert_close(_mha_with_split(ours, x, split_heads), expected)
    buggy = _mha_with_split(ours, x, _view_no_transpose)
    assert torch.allclose(buggy, expected) == (H == 1)


@SETTINGS
@given(B=st.integers(1, 3), T=st.integers(1, 6), H=st.integers(1, 4), Dh=st.integers(1, 4), seed=st.integers(0, 999))
def test_split_and_merge_match_slice_reference(B, T, H, Dh, seed):
    x = _rand(B, T, H * Dh, seed=seed)
    heads = split_heads(x, H)
    assert heads.shape == (B, H, T, Dh)
    for h in range(H):
        torch.testing.assert_close(heads[:, h], x[..., h * Dh:(h + 1) * Dh])
    torch.testing.assert_close(merge_heads(heads), x)
    # merge also accepts a non-contiguous tensor, as attention outputs after a transpose can be
    nc = _rand(B, T, H, Dh, seed=seed + 1).transpose(1, 2)
    torch.testing.assert_close(merge_heads(nc), nc.transpose(1, 2).reshape(B, T, H * Dh))
