"""course_lib.masks: the convention (True = may attend) and the converters."""
import pytest
import torch
import torch.nn.functional as F

from course_lib.attention import scaled_dot_product_attention
from course_lib.masks import (
    causal_mask, combine_masks, from_additive_mask, padding_mask, to_additive_mask,
    to_key_padding_mask, to_torch_attn_mask,
)


def test_causal_mask_square_is_lower_triangular():
    m = causal_mask(4)
    assert m.dtype == torch.bool and m.shape == (4, 4)
    assert torch.equal(m, torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool))


def test_causal_mask_lower_right_alignment():
    m = causal_mask(2, 5)
    assert torch.equal(m, torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool))
    assert causal_mask(1, 7).all()  # one query over a cache sees everything


def test_causal_mask_bad_sizes():
    with pytest.raises(ValueError, match="S >= T"):
        causal_mask(5, 3)


def test_padding_mask_shape_and_values():
    ids = torch.tensor([[5, 6, 0, 0], [7, 0, 0, 0]])
    m = padding_mask(ids, pad_id=0)
    assert m.shape == (2, 1, 1, 4)
    assert torch.equal(m[:, 0, 0], torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(B, S\).*\(4,\)"):
        padding_mask(ids[0], 0)


def test_padding_leaves_real_positions_unchanged():
    torch.manual_seed(0)
    q = torch.randn(1, 1, 3, 4, dtype=torch.float64)
    k = torch.randn(1, 1, 3, 4, dtype=torch.float64)
    v = torch.randn(1, 1, 3, 4, dtype=torch.float64)
    k_pad = torch.cat([k, torch.randn(1, 1, 2, 4, dtype=torch.float64)], dim=2)
    v_pad = torch.cat([v, torch.randn(1, 1, 2, 4, dtype=torch.float64)], dim=2)
    m = padding_mask(torch.tensor([[1, 1, 1, 0, 0]]), 0)
    torch.testing.assert_close(scaled_dot_product_attention(q, k_pad, v_pad, mask=m),
                               scaled_dot_product_attention(q, k, v))


def test_combine_and_converters_agree_with_torch():
    ids = torch.tensor([[1, 2, 3, 0], [1, 2, 0, 0]])
    mask = combine_masks(padding_mask(ids, 0), causal_mask(4))  # (B, 1, T, S)
    assert mask.shape == (2, 1, 4, 4)
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 2, 4, 3, dtype=torch.float64) for _ in range(3))
    ours = scaled_dot_product_attention(q, k, v, mask=mask)
    additive = to_additive_mask(mask, torch.float64)
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=additive))
    assert torch.equal(from_additive_mask(additive), mask)
    assert torch.equal(to_key_padding_mask(padding_mask(ids, 0)), ids == 0)
    tm = to_torch_attn_mask(mask, n_heads=2)
    assert tm.shape == (4, 4, 4) and torch.equal(tm[0], ~mask[0, 0]) and torch.equal(tm[3], ~mask[1, 0])
    assert combine_masks(None, None) is None
    with pytest.raises(ValueError, match="boolean"):
        combine_masks(torch.zeros(2, 2))
