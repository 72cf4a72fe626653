"""course_lib.attention against PyTorch's own attention, on random shapes."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from course_lib.attention import MultiHeadAttention, merge_heads, scaled_dot_product_attention, split_heads
from course_lib.masks import causal_mask, combine_masks, padding_mask, to_key_padding_mask, to_torch_attn_mask

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


@SETTINGS
@given(
    B=st.integers(1, 3), H=st.integers(1, 3), T=st.integers(1, 6), S=st.integers(1, 9),
    Dh=st.integers(1, 8), Dv=st.integers(1, 5), seed=st.integers(0, 10_000), masked=st.booleans(),
)
def test_sdpa_matches_torch(B, H, T, S, Dh, Dv, seed, masked):
    q, k, v = _rand(B, H, T, Dh, seed=seed), _rand(B, H, S, Dh, seed=seed + 1), _rand(B, H, S, Dv, seed=seed + 2)
    mask = None
    if masked:
        g = torch.Generator().manual_seed(seed + 3)
        mask = torch.rand(B, 1, T, S, generator=g) > 0.3
        mask[..., 0] = True  # at least one key per row (fully masked rows are tested below)
    ours = scaled_dot_product_attention(q, k, v, mask=mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(ours, ref)


def test_weights_are_softmax_rows_and_scale_is_sqrt_dh():
    q, k, v = _rand(2, 3, 4, 16), _rand(2, 3, 5, 16, seed=1), _rand(2, 3, 5, 7, seed=2)
    out, w = scaled_dot_product_attention(q, k, v, return_weights=True)
    assert w.shape == (2, 3, 4, 5) and out.shape == (2, 3, 4, 7)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 4, dtype=w.dtype))
    torch.testing.assert_close(w, torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(16), -1))
    # scaling by D (or not at all) gives different weights: the test can fail
    assert not torch.allclose(w, torch.softmax(q @ k.transpose(-2, -1) / 16, -1))


def test_single_query_over_long_cache_with_causal_mask():
    """The last query sees every key: lower-right alignment (PyTorch's is_causal aligns upper-left)."""
    T, S = 1, 12
    q, k, v = _rand(2, 2, T, 4), _rand(2, 2, S, 4, seed=1), _rand(2, 2, S, 4, seed=2)
    ours = scaled_dot_product_attention(q, k, v, mask=causal_mask(T, S))
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v))
    # the last rows of a full causal pass equal a pass with only the last queries
    Tq = 3
    full = scaled_dot_product_attention(_rand(1, 1, S, 4, seed=5), k[:1, :1], v[:1, :1], mask=causal_mask(S))
    tail = scaled_dot_product_attention(_rand(1, 1, S, 4, seed=5)[..., -Tq:, :], k[:1, :1], v[:1, :1],
                                        mask=causal_mask(Tq, S))
    torch.testing.assert_close(full[..., -Tq:, :], tail)


def test_causal_mask_square_matches_torch_is_causal():
    q, k, v = _rand(2, 2, 6, 4), _rand(2, 2, 6, 4, seed=1), _rand(2, 2, 6, 4, seed=2)
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v, mask=causal_mask(6)),
        F.scaled_dot_product_attention(q, k, v, is_causal=True),
    )


def test_fully_masked_row_gives_zeros_not_nan_and_finite_grads():
    q = _rand(1, 1, 3, 4).requires_grad_()
    k, v = _rand(1, 1, 5, 4, seed=1), _rand(1, 1, 5, 4, seed=2)
    mask = torch.ones(1, 1, 3, 5, dtype=torch.bool)
    mask[0, 0, 1] = False  # query 1 may attend to nothing
    out, w = scaled_dot_product_attention(q, k, v, mask=mask, return_weights=True)
    assert not torch.isnan(out).any()
    assert torch.equal(out[0, 0, 1], torch.zeros(4, dtype=out.dtype))
    assert torch.equal(w[0, 0, 1], torch.zeros(5, dtype=w.dtype))
    out.sum().backward()
    assert torch.isfinite(q.grad).all()
    ref = F.scaled_dot_product_attention(q.detach(), k, v, attn_mask=mask)
    torch.testing.assert_close(out.detach(), torch.nan_to_num(ref))


def test_batch_of_one_and_one_head():
    q, k, v = _rand(1, 1, 1, 3), _rand(1, 1, 1, 3, seed=1), _rand(1, 1, 1, 2, seed=2)
    out = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, v)  # one key: weight 1


@pytest.mark.parametrize(
    "q_shape,k_shape,v_shape,mask_shape,match",
    [
        ((4,), (4, 3), (4, 3), None, r"at least 2 dims.*\(4,\)"),
        ((2, 3, 4), (2, 5, 6), (2, 5, 6), None, r"same last dim.*\(2, 3, 4\).*\(2, 5, 6\)"),
        ((2, 3, 4), (2, 5, 4), (2, 6, 4), None, r"same number of keys.*\(2, 5, 4\).*\(2, 6, 4\)"),
        ((2, 3, 4), (2, 5, 4), (2, 5, 4), (3, 4), r"mask of shape \(3, 4\).*\(2, 3, 5\)"),
        ((2, 3, 4), (2, 5, 4), (2, 5, 4), (7, 3, 5), r"mask of shape \(7, 3, 5\).*\(2, 3, 5\)"),
        ((2, 3, 4), (3, 5, 4), (3, 5, 4), None, r"batch dimensions do not broadcast"),
    ],
)
def test_bad_shapes_raise_value_error_naming_shapes(q_shape, k_shape, v_shape, mask_shape, match):
    mask = None if mask_shape is None else torch.ones(mask_shape, dtype=torch.bool)
    with pytest.raises(ValueError, match=match):
        scaled_dot_product_attention(torch.zeros(q_shape), torch.zeros(k_shape), torch.zeros(v_shape), mask=mask)


def test_float_mask_is_refused():
    with pytest.raises(ValueError, match="boolean mask"):
        scaled_dot_product_attention(torch.zeros(1, 2, 4), torch.zeros(1, 2, 4), torch.zeros(1, 2, 4),
                                     mask=torch.zeros(2, 2))


def test_split_merge_roundtrip_and_view_bug():
    x = _rand(2, 5, 12)
    h = split_heads(x, 3)
    assert h.shape == (2, 3, 5, 4)
    torch.testing.assert_close(merge_heads(h), x)
    torch.testing.assert_close(h[:, 1], x[:, :, 4:8])  # head 1 is features 4..7 of every position
    assert not torch.equal(x.view(2, 3, 5, 4), h)  # the view-without-transpose bug


@SETTINGS
@given(
    B=st.integers(1, 3), T=st.integers(1, 6), S=st.integers(1, 7), H=st.sampled_from([1, 2, 4]),
    Dh=st.integers(1, 4), seed=st.integers(0, 10_000), use_mask=st.booleans(), cross=st.booleans(),
)
def test_multi_head_attention_matches_nn_multiheadattention(B, T, S, H, Dh, seed, use_mask, cross):
    torch.manual_seed(seed)
    D = H * Dh
    ref = nn_mha = torch.nn.MultiheadAttention(D, H, batch_first=True, dtype=torch.float64).eval()
    ours = MultiHeadAttention.from_torch(nn_mha).double().eval()
    x = _rand(B, T, D, seed=seed)
    mem = _rand(B, S, D, seed=seed + 1) if cross else x
    S_ = mem.shape[1]
    mask = None
    kwargs = {}
    if use_mask:
        lengths = torch.randint(1, S_ + 1, (B,), generator=torch.Generator().manual_seed(seed))
        ids = torch.where(torch.arange(S_)[None, :] < lengths[:, None], 1, 0)
        pad = padding_mask(ids, pad_id=0)  # (B, 1, 1, S)
        mask = pad if cross else combine_masks(pad, causal_mask(T, S_))
        kwargs = {"key_padding_mask": to_key_padding_mask(pad)}
        if not cross:
            kwargs["attn_mask"] = to_torch_attn_mask(causal_mask(T, S_))
    out, w = ours(x, mem, mem, mask=mask, return_weights=True)
    ref_out, ref_w = ref(x, mem, mem, need_weights=True, average_attn_weights=False, **kwargs)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(w, ref_w)


def test_mha_with_4d_mask_converted_for_torch():
    torch.manual_seed(0)
    nn_mha = torch.nn.MultiheadAttention(8, 2, batch_first=True, dtype=torch.float64)
    ours = MultiHeadAttention.from_torch(nn_mha).double()
    x = _rand(3, 4, 8)
    mask = combine_masks(padding_mask(torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]), 0), causal_mask(4))
    ref, _ = nn_mha(x, x, x, attn_mask=to_torch_attn_mask(mask, n_heads=2))
    torch.testing.assert_close(ours(x, mask=mask), ref)


def test_from_torch_keeps_dtype():
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True, dtype=torch.float64)
    ours = MultiHeadAttention.from_torch(mha)
    assert ours.q_proj.weight.dtype == torch.float64
    x = _rand(1, 3, 8)
    torch.testing.assert_close(ours(x), mha(x, x, x)[0])


def test_mha_rejects_wrong_width():
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"expected query of shape \(B, L, 8\), received \(2, 3, 6\)"):
        mha(torch.zeros(2, 3, 6))
    with pytest.raises(ValueError, match="not divisible"):
        MultiHeadAttention(10, 3)
