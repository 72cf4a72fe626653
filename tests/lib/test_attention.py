"""course_lib.attention against PyTorch's own attention, on random shapes."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from course_lib.attention import MultiHeadAttention, merge_heads, scaled_dot_product_attention, split_heads
from course_lib.masks import causal_mask, combine_masks, padding_mask, to_key_padding_mask, to_torch_attn_mask
from _helpers import rand as _rand

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


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
    with pytest.raises(ValueError, match=r"expected query of shape \(B, T, 8\), received \(2, 3, 6\)"):
        mha(torch.zeros(2, 3, 6))
    with pytest.raises(ValueError, match="not divisible"):
        MultiHeadAttention(10, 3)


# --------------------------------------------------------------------------------------------------
# masked_softmax: the one masked softmax of the course
# --------------------------------------------------------------------------------------------------
from course_lib.attention import (  # noqa: E402
    check_qkv,
    fused_attention,
    masked_softmax,
    repeat_kv,
    set_fast_attention,
)


@SETTINGS
@given(T=st.integers(1, 5), S=st.integers(1, 7), seed=st.integers(0, 10_000))
def test_masked_softmax_matches_softmax_with_minus_inf(T, S, seed):
    scores = _rand(2, T, S, seed=seed) * 3
    mask = torch.rand(2, T, S, generator=torch.Generator().manual_seed(seed)) > 0.4
    ours = masked_softmax(scores, mask)
    ref = torch.nan_to_num(scores.masked_fill(~mask, float("-inf")).softmax(-1))  # NaN rows -> 0
    torch.testing.assert_close(ours, ref)
    assert torch.all(ours[~mask] == 0)
    rows = mask.any(-1)
    torch.testing.assert_close(ours.sum(-1), rows.to(ours.dtype))  # 1 per row that sees a key, 0 otherwise
    torch.testing.assert_close(masked_softmax(scores), scores.softmax(-1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_masked_softmax_fully_masked_row_zero_weights_finite_grads(dtype, device):
    scores = _rand(3, 4, seed=1).to(dtype=dtype, device=device).requires_grad_()
    mask = torch.tensor([[True, False, True, True], [False] * 4, [True] * 4], device=device)[:, None, :]
    w = masked_softmax(scores[None].expand(3, 3, 4), mask)  # (3, 3, 4): row 1 of every batch fully masked
    assert torch.equal(w[1], torch.zeros_like(w[1]))
    (w * torch.arange(4.0, device=device, dtype=dtype)).sum().backward()
    assert torch.isfinite(scores.grad).all()


def test_masked_softmax_bad_mask():
    with pytest.raises(ValueError, match="boolean mask"):
        masked_softmax(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"mask of shape \(4,\).*\(2, 3\)"):
        masked_softmax(torch.zeros(2, 3), torch.ones(4, dtype=torch.bool))


# --------------------------------------------------------------------------------------------------
# bias: an additive score bias next to the boolean mask
# --------------------------------------------------------------------------------------------------
@SETTINGS
@given(B=st.integers(1, 2), H=st.integers(1, 3), T=st.integers(1, 5), S=st.integers(1, 6),
       seed=st.integers(0, 10_000), masked=st.booleans(), bias_shape=st.sampled_from(["HTS", "TS", "B1TS", "S"]))
def test_sdpa_bias_matches_torch_float_mask(B, H, T, S, seed, masked, bias_shape):
    q, k, v = _rand(B, H, T, 4, seed=seed), _rand(B, H, S, 4, seed=seed + 1), _rand(B, H, S, 3, seed=seed + 2)
    shape = {"HTS": (H, T, S), "TS": (T, S), "B1TS": (B, 1, T, S), "S": (S,)}[bias_shape]
    bias = _rand(*shape, seed=seed + 3)
    mask = None
    attn_mask = bias
    if masked:
        mask = torch.rand(B, 1, T, S, generator=torch.Generator().manual_seed(seed)) > 0.3
        mask[..., -1] = True  # one key per row: PyTorch's float mask turns a fully masked row into NaN
        attn_mask = bias.masked_fill(~mask, float("-inf"))
    ours, w = scaled_dot_product_attention(q, k, v, mask=mask, bias=bias, return_weights=True)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask if attn_mask.dim() > 1 else attn_mask[None])
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(fused_attention(q, k, v, mask=mask, bias=bias), ref)
    scores = q @ k.transpose(-2, -1) / 2 + attn_mask
    torch.testing.assert_close(w, scores.softmax(-1))


def test_check_qkv_returns_scores_shape_and_names_the_function():
    q, k = torch.zeros(2, 1, 3, 4), torch.zeros(1, 5, 5, 4)
    assert check_qkv(q, k, k) == (2, 5, 3, 5)
    with pytest.raises(ValueError, match=r"^myfn: mask of shape \(2, 2\)"):
        check_qkv(q, k, k, mask=torch.ones(2, 2, dtype=torch.bool), fn="myfn")


# --------------------------------------------------------------------------------------------------
# The fused path (PyTorch's kernel) against the explicit one
# --------------------------------------------------------------------------------------------------
def _course_masks(B, H, T, S, seed):
    """Every mask shape the course builds, for T queries over S keys (S >= T), some with fully masked rows."""
    from course_lib.masks import seq2seq_masks

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, S + 1, (B,), generator=g)
    right = torch.where(torch.arange(S)[None] < lengths[:, None], 3, 0)  # right-padded ids
    left = right.flip(-1)  # left-padded ids
    pad_r, pad_l = padding_mask(right, 0), padding_mask(left, 0)  # (B, 1, 1, S)
    rand = torch.rand(B, H, T, S, generator=g) > 0.5  # (B, H, T, S), some rows fully masked
    rand[0, 0, 0] = False
    none = torch.zeros(B, 1, 1, S, dtype=torch.bool)
    none[:, :, :, 0] = True
    none[0] = False  # a row whose every key is padding
    masks = {
        "none": None,
        "causal (T, S)": causal_mask(T, S),
        "padding right (B, 1, 1, S)": pad_r,
        "padding left (B, 1, 1, S)": pad_l,
        "padding & causal (B, 1, T, S)": combine_masks(pad_l, causal_mask(T, S)),
        "random (B, H, T, S)": rand,
        "one query row (1, 1, T, S)": causal_mask(T, S)[None, None],
        "all pads in one row": none,
    }
    if T == S:
        masks["seq2seq tgt (B, 1, T, T)"] = seq2seq_masks(left, left, 0).tgt
    return masks


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("T,S", [(5, 5), (1, 7), (3, 8)])
def test_fused_equals_explicit_for_every_course_mask(dtype, T, S, device):
    B, H, Dh = 3, 2, 8
    tol = dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else {}
    q, k, v = (_rand(B, H, n, Dh, seed=i).to(dtype=dtype, device=device) for i, n in enumerate((T, S, S)))
    from course_lib.positional import alibi_bias

    for name, mask in _course_masks(B, H, T, S, seed=T * 10 + S).items():
        mask = None if mask is None else mask.to(device)
        for bias in (None, alibi_bias(H, T, S, dtype=dtype, device=device)):
            explicit = scaled_dot_product_attention(q, k, v, mask=mask, bias=bias)
            fused = fused_attention(q, k, v, mask=mask, bias=bias)
            assert torch.isfinite(fused).all(), name
            torch.testing.assert_close(fused, explicit, **tol, msg=name)
            if mask is not None:  # rows that see no key output exactly zero on both paths
                empty = ~mask.expand(B, H, T, S).any(-1)
                assert torch.all(fused[empty] == 0) and torch.all(explicit[empty] == 0), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_zeroes_fully_masked_rows_in_half_precision(dtype, device):
    """PyTorch's kernels disagree on such rows (cuDNN float16: the mean of the values); we zero them."""
    q, k, v = (_rand(2, 4, 6, 16, seed=i).to(dtype=dtype, device=device) for i in range(3))
    mask = torch.ones(2, 1, 6, 6, dtype=torch.bool, device=device)
    mask[0, 0, 2] = False
    mask[1, :, :, :] = causal_mask(6, device=device)
    out = fused_attention(q, k, v, mask=mask)
    assert torch.equal(out[0, :, 2], torch.zeros_like(out[0, :, 2]))
    torch.testing.assert_close(out, scaled_dot_product_attention(q, k, v, mask=mask), atol=2e-2, rtol=2e-2)


def test_fused_gradients_equal_explicit_and_are_finite(device):
    q, k, v = (_rand(2, 2, 4, 8, seed=i).to(device).requires_grad_() for i in range(3))
    mask = padding_mask(torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0]], device=device), 0)  # row 1: nothing to see
    grads = []
    for fn in (fused_attention, scaled_dot_product_attention):
        (fn(q, k, v, mask=mask) ** 2).sum().backward()
        grads.append([t.grad.clone() for t in (q, k, v)])
        for t in (q, k, v):
            t.grad = None
    for a, b in zip(*grads):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cross", [False, True])
def test_mha_fast_path_equals_explicit_path(cross, device):
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).double().to(device)
    x, mem = _rand(3, 5, 16).to(device), _rand(3, 7, 16, seed=1).to(device)
    key = mem if cross else None
    S = 7 if cross else 5
    for name, mask in _course_masks(3, 4, 5, S, seed=3).items():
        mask = None if mask is None else mask.to(device)
        mha.fast = True
        fast = mha(x, key, key, mask=mask)
        set_fast_attention(mha, False)
        slow = mha(x, key, key, mask=mask)
        torch.testing.assert_close(fast, slow, msg=name)
    assert set_fast_attention(mha, True).fast
    # with weights asked for, the explicit path runs whatever `fast` says
    _, w = mha(x, key, key, return_weights=True)
    assert w.shape == (3, 4, 5, S)


def test_fast_path_calls_torch_kernel_and_explicit_path_does_not(monkeypatch):
    import course_lib.attention as attention

    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(1, 3, 8)
    mha(x)
    assert calls == [1]
    mha.fast = False
    mha(x)
    mha.fast = True
    mha(x, return_weights=True)
    assert calls == [1]


# --------------------------------------------------------------------------------------------------
# Grouped-query attention, dropout, the cache
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("H,H_kv", [(4, 2), (4, 1), (6, 3), (2, 2)])
def test_grouped_query_attention_matches_torch_enable_gqa(H, H_kv, device):
    torch.manual_seed(0)
    D = 4 * H
    mha = MultiHeadAttention(D, H, n_kv_heads=H_kv).double().to(device)
    assert mha.k_proj.weight.shape == (H_kv * 4, D)  # fewer key/value parameters
    x = _rand(2, 5, D).to(device)
    mask = causal_mask(5, device=device)
    q = split_heads(mha.q_proj(x), H)
    k, v = split_heads(mha.k_proj(x), H_kv), split_heads(mha.v_proj(x), H_kv)  # (B, H_kv, S, Dh)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    for fast in (True, False):
        mha.fast = fast
        torch.testing.assert_close(mha(x, mask=mask), mha.out_proj(merge_heads(ref)))
    assert torch.equal(repeat_kv(k, H // H_kv)[:, H // H_kv - 1], k[:, 0])  # query head h reads kv head h // rep
    with pytest.raises(ValueError, match="n_kv_heads=3 must divide n_heads=4"):
        MultiHeadAttention(8, 4, n_kv_heads=3)


def test_attention_dropout_acts_in_training_only():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2, dropout=0.5).double()
    x = _rand(2, 6, 8)
    eval_out = mha.eval()(x)
    torch.testing.assert_close(mha(x), eval_out)  # eval: deterministic
    mha.train()
    for fast in (True, False):
        mha.fast = fast
        assert not torch.allclose(mha(x), eval_out)
    _, w = mha(x, return_weights=True)
    assert (w == 0).any()  # dropped weights
    assert not torch.allclose(w.sum(-1), torch.ones_like(w.sum(-1)))


@pytest.mark.parametrize("n_kv_heads", [None, 1])
def test_mha_with_cache_equals_full_causal_pass(n_kv_heads, device):
    from course_lib.kv_cache import KVCache

    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4, n_kv_heads=n_kv_heads).double().to(device)
    x = _rand(2, 7, 16).to(device)
    full = mha(x, mask=causal_mask(7, device=device))
    cache = KVCache()
    steps = [mha(x[:, :3], mask=causal_mask(3, device=device), cache=cache, layer=0)]  # a prompt of 3
    for t in range(3, 7):  # then one token at a time
        steps.append(mha(x[:, t:t + 1], cache=cache, layer=0))
    assert cache.length == 7 and cache[0][0].shape == (2, n_kv_heads or 4, 7, 4)
    torch.testing.assert_close(torch.cat(steps, 1), full)


def test_mha_cross_attention_cache_computes_memory_keys_once():
    from course_lib.kv_cache import KVCache

    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2).double()
    calls = []
    mha.k_proj.register_forward_hook(lambda *a: calls.append(1))
    y, memory = _rand(2, 3, 8), _rand(2, 5, 8, seed=1)
    cache = KVCache()
    outs = [mha(y[:, t:t + 1], memory, memory, cache=cache, layer=1) for t in range(3)]
    assert len(calls) == 1 and cache.get_cross(1)[0].shape == (2, 2, 5, 4) and cache.length == 0
    torch.testing.assert_close(torch.cat(outs, 1), mha(y, memory, memory))


def test_fused_tells_the_kernel_is_causal_only_for_the_exact_causal_mask(monkeypatch, device):
    """``causal_mask(T)`` (any leading dims) goes to PyTorch as ``is_causal=True``; anything else as a mask."""
    import course_lib.attention as attention

    calls = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append((kwargs.get("is_causal", False), kwargs.get("attn_mask") is not None))
        return real(*args, **kwargs)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", spy)
    B, H, T, Dh = 2, 2, 6, 8
    q, k, v = (_rand(B, H, T, Dh, seed=i).double().to(device).requires_grad_() for i in range(3))
    flipped = causal_mask(T, device=device).clone()
    flipped[3, 1] = False  # one hidden key more: not the causal mask
    padded = combine_masks(padding_mask(torch.tensor([[0, 5, 6, 7, 8, 9], [4, 5, 6, 7, 8, 9]], device=device), 0),
                           causal_mask(T, device=device))
    cases = {
        "(T, T)": (causal_mask(T, device=device), True),
        "(1, 1, T, T)": (causal_mask(T, device=device)[None, None], True),
        "(B, 1, T, T)": (causal_mask(T, device=device).expand(B, 1, T, T), True),
        "one entry flipped": (flipped, False),
        "with padding": (padded, False),
        "upper triangle": (causal_mask(T, device=device).T.contiguous(), False),
    }
    for name, (mask, causal) in cases.items():
        calls.clear()
        fused = fused_attention(q, k, v, mask=mask)
        assert calls == [(causal, not causal)], name
        explicit = scaled_dot_product_attention(q, k, v, mask=mask)
        torch.testing.assert_close(fused, explicit, msg=name)
        g_fused = torch.autograd.grad(fused.pow(2).sum(), (q, k, v))
        g_explicit = torch.autograd.grad(explicit.pow(2).sum(), (q, k, v))
        for a, b in zip(g_fused, g_explicit):
            torch.testing.assert_close(a, b, msg=name)
    calls.clear()
    fused_attention(q[:, :, :1], k, v, mask=causal_mask(1, T, device=device))  # T != S: lower right, as a mask
    assert calls == [(False, True)]
