"""course_lib.masks: the convention (True = may attend) and the converters."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.attention import scaled_dot_product_attention
from course_lib.masks import (
    MASKED_BELOW, causal_mask, combine_masks, from_additive_mask, from_attention_mask, padding_mask,
    to_additive_mask, to_key_padding_mask, to_torch_attn_mask,
)

FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


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


# --- from_additive_mask: every fill in use, every float dtype, 2-D and 4-D ---------------------------

FILLS = {
    "-inf (PyTorch)": float("-inf"),
    "finfo.min (transformers)": "finfo",
    "-1e9 (Annotated Transformer)": -1e9,
    "-10000.0 (BERT's first release)": -10000.0,
}


def _additive(m: torch.Tensor, dtype: torch.dtype, fill) -> torch.Tensor:
    """The additive mask of a 0/1 float mask m, written the way each codebase writes it."""
    m = m.to(dtype)
    if fill == "finfo":
        return (1.0 - m) * torch.finfo(dtype).min  # transformers' get_extended_attention_mask
    if fill == float("-inf"):
        return torch.zeros_like(m).masked_fill(m == 0, fill)  # (1 - m) * -inf would give NaN at m = 1
    return (1.0 - m) * fill  # BERT / Annotated Transformer: (1 - m) * -1e9


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("fill", list(FILLS.values()), ids=list(FILLS))
def test_from_additive_mask_every_fill_and_dtype(dtype, fill):
    """The issue's case: m = [[1., 1., 0.]], (1 - m) * -1e9 -> [[True, True, False]] (was all True)."""
    m = torch.tensor([[1.0, 1.0, 0.0]])
    assert torch.equal(from_additive_mask(_additive(m, dtype, fill)), torch.tensor([[True, True, False]]))
    # 4-D (B, 1, T, S): padding AND causal, as a model would build it
    ids = torch.tensor([[5, 6, 7, 0], [5, 6, 0, 0], [5, 0, 0, 0]])
    ours = combine_masks(padding_mask(ids, 0), causal_mask(4))  # (B, 1, T, S)
    assert torch.equal(from_additive_mask(_additive(ours.double(), dtype, fill)), ours)
    # (T, S) causal, with T != S
    causal = causal_mask(2, 5)
    assert torch.equal(from_additive_mask(_additive(causal.double(), dtype, fill)), causal)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_from_additive_mask_matches_transformers_masks(dtype):
    """transformers' eager (additive, finfo.min) and sdpa (boolean, True = attend) masks describe the same mask."""
    from transformers.masking_utils import eager_mask, padding_mask_function, sdpa_mask

    attention_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 1, 1, 1]], dtype=torch.bool)
    for kwargs in ({}, {"mask_function": padding_mask_function(attention_mask)}):  # causal + padding, padding only
        common = dict(batch_size=3, q_length=5, kv_length=5, attention_mask=attention_mask, **kwargs)
        additive = eager_mask(dtype=dtype, **common)
        assert additive.dtype == dtype and additive.min() <= MASKED_BELOW
        expected = sdpa_mask(allow_is_causal_skip=False, allow_is_bidirectional_skip=False, **common)
        assert torch.equal(from_additive_mask(additive), expected)


def test_from_additive_mask_sums_and_round_trip():
    """Sums of masks (padding + causal: -2e9, finfo.min + finfo.min = -inf) and to_additive_mask round trips."""
    pad = (1 - torch.tensor([[1.0, 1.0, 0.0]])) * -1e9  # (1, 3)
    causal = to_additive_mask(causal_mask(3))  # (3, 3)
    expected = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 0]], dtype=torch.bool)
    assert torch.equal(from_additive_mask(pad + causal), expected)
    big = torch.finfo(torch.float16).min
    assert torch.equal(from_additive_mask(torch.tensor([0.0, big]).half() + big), torch.tensor([False, False]))
    mask = combine_masks(padding_mask(torch.tensor([[1, 1, 0], [1, 0, 0]]), 0), causal_mask(3))
    for dtype in FLOAT_DTYPES:
        assert torch.equal(from_additive_mask(to_additive_mask(mask, dtype)), mask)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8], ids=str)
def test_from_additive_mask_refuses_integer_masks(dtype):
    """An integer 0/1 mask failed inside torch.finfo (TypeError); now a ValueError naming the converter to use."""
    m = torch.tensor([[1, 1, 0]], dtype=dtype)
    with pytest.raises(ValueError, match=rf"{dtype}.*from_attention_mask"):
        from_additive_mask(m)
    assert torch.equal(from_attention_mask(m), torch.tensor([[True, True, False]])[:, None, None, :])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_from_additive_mask_refuses_01_float_masks_and_soft_biases(dtype):
    """A 0/1 float mask was read as all True; a soft bias (ALiBi) silently became a mask. Both now raise."""
    m = torch.tensor([[1.0, 1.0, 0.0]], dtype=dtype)
    with pytest.raises(ValueError, match="0 and 1.*from_attention_mask"):
        from_additive_mask(m)
    alibi = -0.5 * torch.arange(4.0).to(dtype)  # 0, -0.5, -1, -1.5: a bias, not a mask
    with pytest.raises(ValueError, match=r"-1000.*-1\.5.*soft score bias"):
        from_additive_mask(alibi)
    with pytest.raises(ValueError, match="NaN"):
        from_additive_mask(torch.tensor([0.0, float("nan")], dtype=dtype))
    with pytest.raises(ValueError, match=r"boolean already.*~mask"):
        from_additive_mask(m.bool())
    # all zeros is an additive mask that allows everything
    assert from_additive_mask(torch.zeros(2, 3, dtype=dtype)).all()


def test_from_attention_mask_matches_padding_mask():
    ids = torch.tensor([[5, 6, 0], [7, 0, 0]])
    attention_mask = (ids != 0).long()  # what transformers' tokenizers return: 1 = real token
    expected = padding_mask(ids, 0)  # (B, 1, 1, S)
    for am in (attention_mask, attention_mask.float(), attention_mask.half(), attention_mask.bool()):
        assert torch.equal(from_attention_mask(am), expected)
    four_d = combine_masks(expected, causal_mask(3))  # (B, 1, T, S)
    assert torch.equal(from_attention_mask(four_d.long()), four_d)
    with pytest.raises(ValueError, match="0 and 1.*from_additive_mask"):
        from_attention_mask((1.0 - attention_mask) * -1e9)
    with pytest.raises(ValueError, match=r"\(B, S\).*\(3,\)"):
        from_attention_mask(attention_mask[0])


def test_to_additive_mask_refuses_non_boolean_input():
    with pytest.raises(ValueError, match="boolean"):
        to_additive_mask(torch.ones(2, 2))
    with pytest.raises(ValueError, match="floating-point"):
        to_additive_mask(causal_mask(2), torch.int64)


# --- to_torch_attn_mask: what nn.MultiheadAttention accepts, for every mask the course builds -------

def _mha_pair(D=8, H=2, seed=0):
    """nn.MultiheadAttention, and the same computation written with course_lib's attention core."""
    torch.manual_seed(seed)
    theirs = nn.MultiheadAttention(D, H, batch_first=True, dtype=torch.float64).eval()
    w_q, w_k, w_v = theirs.in_proj_weight.detach().chunk(3)  # (D, D) each
    b_q, b_k, b_v = theirs.in_proj_bias.detach().chunk(3)

    def ours(query, key, value, mask):
        def heads(x):  # (B, L, D) -> (B, H, L, Dh)
            return x.view(x.shape[0], x.shape[1], H, D // H).transpose(1, 2)

        q, k, v = heads(query @ w_q.T + b_q), heads(key @ w_k.T + b_k), heads(value @ w_v.T + b_v)
        out = scaled_dot_product_attention(q, k, v, mask=mask)  # (B, H, T, Dh)
        out = out.transpose(1, 2).reshape(query.shape[0], query.shape[1], D)  # (B, T, D)
        return theirs.out_proj(out).detach()

    return theirs, ours


def _course_masks():
    """Every kind of mask the course builds, with at least one allowed key per row (nn.MultiheadAttention gives NaN else)."""
    B, H, T, S = 3, 2, 4, 5
    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 0, 0], [5, 6, 0, 0, 0]])  # (B, S), right padding
    g = torch.Generator().manual_seed(0)
    per_head = torch.rand(B, H, T, S, generator=g) > 0.5
    per_head[..., 0] = True
    return {
        "causal (T, S)": (causal_mask(T, S), {}),
        "causal (T, T)": (causal_mask(S), {}),
        "padding (B, 1, 1, S)": (padding_mask(ids, 0), {"T": T}),
        "combined (B, 1, T, S)": (combine_masks(padding_mask(ids, 0), causal_mask(T, S)), {}),
        "per-head (B, H, T, S)": (per_head, {}),
        "per-head (1, H, T, S)": (per_head[:1], {"B": B}),
        "per-head (H, T, S)": (per_head[0], {"B": B}),
        "causal (1, 1, T, S)": (causal_mask(T, S)[None, None], {}),
        "one query (1, S)": (causal_mask(1, S), {}),
        "one query, padding (B, 1, 1, S)": (combine_masks(padding_mask(ids, 0), causal_mask(1, S)), {"T": 1}),
    }


@pytest.mark.parametrize("name", list(_course_masks()))
def test_to_torch_attn_mask_feeds_nn_multihead_attention(name):
    """The converted mask goes into nn.MultiheadAttention and gives course_lib's attention output."""
    mask, kwargs = _course_masks()[name]
    B, H, T, S, D = 3, 2, 4, 5, 8
    theirs, ours = _mha_pair(D, H)
    g = torch.Generator().manual_seed(1)
    T_ = kwargs.get("T", mask.shape[-2])
    x = torch.randn(B, T_, D, generator=g, dtype=torch.float64)
    mem = torch.randn(B, mask.shape[-1], D, generator=g, dtype=torch.float64)
    attn_mask = to_torch_attn_mask(mask, n_heads=H, **kwargs)
    assert attn_mask.dtype == torch.bool and attn_mask.shape in ((T_, mem.shape[1]), (B * H, T_, mem.shape[1]))
    with torch.no_grad():
        expected, _ = theirs(x, mem, mem, attn_mask=attn_mask)
    torch.testing.assert_close(ours(x, mem, mem, mask=mask), expected)
    if mask.dim() == 4 and mask.shape[2] == 1:  # a padding mask: the same as key_padding_mask
        with torch.no_grad():
            via_kpm, _ = theirs(x, mem, mem, key_padding_mask=to_key_padding_mask(mask))
        torch.testing.assert_close(via_kpm, expected)


def test_to_torch_attn_mask_padding_mask_needs_T():
    """padding_mask(ids, 0) (B, 1, 1, S) with n_heads=2 gave (B*2, 1, S), which PyTorch rejects; now an error."""
    ids = torch.tensor([[5, 6, 0], [7, 0, 0]])
    mask = padding_mask(ids, 0)
    with pytest.raises(ValueError, match=r"dimension 2 \(T\).*to_key_padding_mask"):
        to_torch_attn_mask(mask, n_heads=2)
    converted = to_torch_attn_mask(mask, n_heads=2, T=3)
    assert converted.shape == (4, 3, 3)
    assert torch.equal(converted[1], (ids[0] == 0).expand(3, 3)) and torch.equal(converted[2], (ids[1] == 0).expand(3, 3))


def test_to_torch_attn_mask_errors_name_the_problem():
    per_head = torch.ones(2, 3, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="n_heads"):
        to_torch_attn_mask(per_head)
    with pytest.raises(ValueError, match=r"head dimension.*n_heads=2, received 3"):
        to_torch_attn_mask(per_head, n_heads=2)
    with pytest.raises(ValueError, match=r"dimension 0 \(B\).*B="):
        to_torch_attn_mask(per_head[:1], n_heads=3)
    with pytest.raises(ValueError, match=r"T=4.*received T=5"):
        to_torch_attn_mask(per_head, n_heads=3, T=5)
    with pytest.raises(ValueError, match="boolean"):
        to_torch_attn_mask(to_additive_mask(causal_mask(3)))
    with pytest.raises(ValueError, match=r"\(B, H, T, S\).*\(1, 1, 1, 3, 3\)"):
        to_torch_attn_mask(causal_mask(3)[None, None, None])
    assert torch.equal(to_torch_attn_mask(causal_mask(1, 3), T=2), torch.zeros(2, 3, dtype=torch.bool))
    # a 2-D mask is (T, S) as it is: one query over a cache (T = 1) stays (1, S)
    assert torch.equal(to_torch_attn_mask(causal_mask(1, 3)), torch.zeros(1, 3, dtype=torch.bool))
    assert torch.equal(to_torch_attn_mask(causal_mask(1, 1)), torch.zeros(1, 1, dtype=torch.bool))
    # a 4-D padding mask with one query: T=1 says so
    assert to_torch_attn_mask(padding_mask(torch.tensor([[1, 0], [1, 1]]), 0), n_heads=2, T=1).shape == (4, 1, 2)
