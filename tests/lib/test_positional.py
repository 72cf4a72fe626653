"""course_lib.positional against closed forms and transformers' own implementations (random weights, no download)."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from course_lib.attention import MultiHeadAttention, scaled_dot_product_attention
from course_lib.masks import causal_mask
from course_lib.positional import (
    LearnedPositionalEmbedding,
    PositionalMultiHeadAttention,
    SinusoidalPositionalEncoding,
    alibi_bias,
    alibi_slopes,
    apply_rotary,
    half_to_interleaved,
    interleaved_to_half,
    rotary_angles,
    sinusoidal_encoding,
)
from _helpers import rand as _rand

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


# --- without positions: permutation equivariance -------------------------------------------------
@SETTINGS
@given(B=st.integers(1, 2), T=st.integers(2, 7), H=st.sampled_from([1, 2, 4]), seed=st.integers(0, 10_000))
def test_attention_without_positions_is_permutation_equivariant(B, T, H, seed):
    torch.manual_seed(seed)
    mha = MultiHeadAttention(8, H).double()
    x = _rand(B, T, 8, seed=seed)
    perm = torch.randperm(T, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(mha(x[:, perm]), mha(x)[:, perm])


def test_positions_break_permutation_equivariance():
    """The same check fails once positions are added (so the test above can fail)."""
    torch.manual_seed(0)
    x, perm = _rand(1, 6, 8), torch.tensor([2, 0, 5, 1, 3, 4])
    mha = MultiHeadAttention(8, 2).double()
    pe = SinusoidalPositionalEncoding(8)
    assert not torch.allclose(mha(pe(x[:, perm])), mha(pe(x))[:, perm], atol=1e-4)
    for position in ("rope", "alibi"):
        pmha = PositionalMultiHeadAttention(8, 2, position=position).double()
        assert not torch.allclose(pmha(x[:, perm]), pmha(x)[:, perm], atol=1e-4), position
    # a catch: the symmetric ALiBi bias -m|i - j| does not change when the sequence is reversed,
    # so bidirectional ALiBi attention cannot tell a sequence from its reverse (a causal mask can)
    alibi = PositionalMultiHeadAttention(8, 2, position="alibi").double()
    rev = torch.arange(5, -1, -1)
    torch.testing.assert_close(alibi(x[:, rev]), alibi(x)[:, rev])
    assert not torch.allclose(alibi(x[:, rev], mask=causal_mask(6)), alibi(x, mask=causal_mask(6))[:, rev])
    none = PositionalMultiHeadAttention(8, 2, position="none").double()
    torch.testing.assert_close(none(x[:, perm]), none(x)[:, perm])


# --- sinusoidal ----------------------------------------------------------------------------------
@SETTINGS
@given(T=st.integers(1, 20), half=st.integers(1, 16), start=st.integers(0, 50))
def test_sinusoidal_closed_form(T, half, start):
    D = 2 * half
    pe = sinusoidal_encoding(T, D, start=start, dtype=torch.float64)
    assert pe.shape == (T, D)
    for pos in (0, T - 1):
        for i in range(half):
            angle = (start + pos) / 10000 ** (2 * i / D)
            assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-12)
            assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-12)


def test_sinusoidal_first_values():
    pe = sinusoidal_encoding(3, 4, dtype=torch.float64)
    expected = torch.tensor([
        [0.0, 1.0, 0.0, 1.0],
        [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)],
        [math.sin(2), math.cos(2), math.sin(0.02), math.cos(0.02)],
    ], dtype=torch.float64)
    torch.testing.assert_close(pe, expected)


@pytest.mark.parametrize("D", [4, 16, 32])
def test_sinusoidal_matches_marian_after_unpermuting(D):
    """Marian stores [sin | cos]; ours interleaves sin, cos. Same numbers, columns permuted."""
    from transformers.models.marian.modeling_marian import MarianSinusoidalPositionalEmbedding

    ref = MarianSinusoidalPositionalEmbedding(40, D).create_weight().double()  # (T, D) [sin | cos]
    ours = sinusoidal_encoding(40, D, dtype=torch.float64)
    torch.testing.assert_close(interleaved_to_half(ours), ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours, half_to_interleaved(ref), atol=1e-6, rtol=0)


def test_sinusoidal_offset_is_a_slice_and_module_adds_it():
    full = sinusoidal_encoding(30, 8)
    torch.testing.assert_close(sinusoidal_encoding(5, 8, start=20), full[20:25])
    x = _rand(2, 5, 8, dtype=torch.float32)
    torch.testing.assert_close(SinusoidalPositionalEncoding(8)(x, start=20), x + full[20:25])


def test_sinusoidal_relative_shift_is_linear():
    """Paper, section 3.5: PE[pos + k] is a fixed linear (rotation) function of PE[pos]."""
    D, k = 8, 3
    pe = sinusoidal_encoding(20, D, dtype=torch.float64)
    M = torch.linalg.lstsq(pe[:-k], pe[k:]).solution  # (D, D)
    torch.testing.assert_close(pe[:-k] @ M, pe[k:], atol=1e-8, rtol=0)


@pytest.mark.parametrize("D", [0, 3, 7])
def test_odd_widths_raise(D):
    with pytest.raises(ValueError, match="even"):
        sinusoidal_encoding(4, D)
    with pytest.raises(ValueError, match="even"):
        rotary_angles(4, D)
    if D:
        with pytest.raises(ValueError, match=r"\(2, 4, %d\)" % D):
            apply_rotary(torch.zeros(2, 4, D))


# --- learned -------------------------------------------------------------------------------------
def test_learned_adds_rows_and_rejects_positions_past_the_table():
    emb = LearnedPositionalEmbedding(10, 6)
    x = _rand(2, 4, 6, dtype=torch.float32)
    torch.testing.assert_close(emb(x, start=3), x + emb.table.weight[3:7])
    with pytest.raises(ValueError, match="max_len=10"):
        emb(_rand(1, 11, 6, dtype=torch.float32))
    with pytest.raises(ValueError, match="max_len=10"):
        emb(x, start=7)
    with pytest.raises(ValueError, match=r"\(B, T, 6\)"):
        emb(_rand(2, 4, 5, dtype=torch.float32))


# --- rotary --------------------------------------------------------------------------------------
def test_rotary_closed_form_one_pair():
    x = _rand(1, 5, 2)
    out = apply_rotary(x, start=2)
    for t in range(5):
        a = float(t + 2)  # Dh = 2: one pair, frequency 1
        x0, x1 = x[0, t]
        torch.testing.assert_close(out[0, t], torch.stack([x0 * math.cos(a) - x1 * math.sin(a),
                                                           x0 * math.sin(a) + x1 * math.cos(a)]))


def test_rotary_preserves_norms_and_position_zero():
    x = _rand(2, 3, 7, 8)
    out = apply_rotary(x)
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(out[..., 0, :], x[..., 0, :])


def test_rotary_angles_are_the_sinusoidal_table():
    a = rotary_angles(12, 8, start=3, dtype=torch.float64)
    pe = sinusoidal_encoding(12, 8, start=3, dtype=torch.float64)
    torch.testing.assert_close(a.sin(), pe[:, 0::2])
    torch.testing.assert_close(a.cos(), pe[:, 1::2])


@SETTINGS
@given(m=st.integers(0, 200), n=st.integers(0, 200), shift=st.integers(0, 300),
       half=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_rotary_scores_depend_only_on_the_offset(m, n, shift, half, seed):
    """q_m . k_n == q_{m+s} . k_{n+s}: RoPE makes scores relative."""
    Dh = 2 * half
    q, k = _rand(Dh, seed=seed), _rand(Dh, seed=seed + 1)

    def score(m, n):
        return apply_rotary(q[None], start=m)[0] @ apply_rotary(k[None], start=n)[0]

    torch.testing.assert_close(score(m, n), score(m + shift, n + shift), atol=1e-9, rtol=1e-9)
    # and it equals the unrotated product with a rotation by (m - n) applied to q alone
    if m >= n:
        torch.testing.assert_close(score(m, n), apply_rotary(q[None], start=m - n)[0] @ k, atol=1e-9, rtol=1e-9)


def test_rotary_matches_gptj_interleaved():
    from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb, create_sinusoidal_positions

    B, T, H, Dh, start = 2, 9, 3, 16, 4
    x = _rand(B, T, H, Dh, dtype=torch.float32)  # GPT-J's layout: (B, T, H, Dh)
    sincos = create_sinusoidal_positions(start + T, Dh)[start:][None].expand(B, T, Dh)  # (B, T, Dh) [sin|cos]
    sin, cos = torch.split(sincos, Dh // 2, dim=-1)
    ref = apply_rotary_pos_emb(x, sin, cos)
    ours = apply_rotary(x.transpose(1, 2), start=start).transpose(1, 2)  # ours wants (B, H, T, Dh)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_rotary_matches_llama_rotate_half_after_permuting():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    B, H, T, Dh, start = 2, 2, 7, 16, 5
    config = LlamaConfig(hidden_size=H * Dh, num_attention_heads=H, num_key_value_heads=H, intermediate_size=64,
                         num_hidden_layers=1, vocab_size=99, max_position_embeddings=64)
    rope = LlamaRotaryEmbedding(config)
    q, k = _rand(B, H, T, Dh, dtype=torch.float32), _rand(B, H, T, Dh, seed=1, dtype=torch.float32)
    pos = torch.arange(start, start + T)[None].expand(B, T)
    cos, sin = rope(q, pos)  # (B, T, Dh)
    q_ref, k_ref = apply_rotary_pos_emb(interleaved_to_half(q), interleaved_to_half(k), cos, sin)
    torch.testing.assert_close(interleaved_to_half(apply_rotary(q, start=start)), q_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(half_to_interleaved(k_ref), apply_rotary(k, start=start), atol=1e-5, rtol=1e-5)
    # without the permutation the layouts disagree: the test could fail
    q_raw, _ = apply_rotary_pos_emb(q, k, cos, sin)
    assert not torch.allclose(q_raw, apply_rotary(q, start=start), atol=1e-3)


def test_layout_permutations_are_inverse():
    x = _rand(3, 10)
    torch.testing.assert_close(half_to_interleaved(interleaved_to_half(x)), x)
    assert interleaved_to_half(torch.arange(6.0)).tolist() == [0, 2, 4, 1, 3, 5]


# --- ALiBi ---------------------------------------------------------------------------------------
def test_alibi_slopes_paper_values_h8():
    assert alibi_slopes(8).tolist() == [1 / 2 ** h for h in range(1, 9)]


def test_alibi_slopes_non_power_of_two_paper_rule():
    # H = 6: the 4 slopes of H = 4, then every other slope of H = 8 (2^-1 and 2^-3... of 2^(-8h/8))
    expected = [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3]
    assert alibi_slopes(6).tolist() == pytest.approx(expected)


@pytest.mark.parametrize("H", [1, 2, 3, 4, 6, 8, 12, 16])
def test_alibi_slopes_match_bloom(H):
    from transformers.models.bloom.modeling_bloom import _get_alibi_slopes

    torch.testing.assert_close(alibi_slopes(H), _get_alibi_slopes(H, torch.device("cpu")))


def test_alibi_bias_values_and_lower_right_alignment():
    b = alibi_bias(2, 3, dtype=torch.float64)
    s = alibi_slopes(2).double()
    assert b.shape == (2, 3, 3)
    torch.testing.assert_close(b[1], -s[1] * torch.tensor([[0.0, 1, 2], [1, 0, 1], [2, 1, 0]], dtype=torch.float64))
    # one query over 5 keys is the last position
    torch.testing.assert_close(alibi_bias(2, 1, 5), alibi_bias(2, 5)[:, -1:, :])


@pytest.mark.parametrize("H", [4, 6])
def test_alibi_attention_matches_bloom_build_alibi_tensor(H):
    """Bloom adds slope * j (key position) instead of -slope * (i - j): they differ by a per-row
    constant, which softmax ignores. With the causal mask, the weights are identical."""
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    B, T, Dh = 2, 6, 4
    q, k, v = _rand(B, H, T, Dh), _rand(B, H, T, Dh, seed=1), _rand(B, H, T, Dh, seed=2)
    ref_bias = build_alibi_tensor(torch.ones(B, T, dtype=torch.long), H, torch.float64).view(B, H, 1, T)
    mask = causal_mask(T)
    _, ours = scaled_dot_product_attention(q, k, v, mask=mask, bias=alibi_bias(H, T, dtype=torch.float64),
                                           return_weights=True)
    _, ref = scaled_dot_product_attention(q, k, v, mask=mask, bias=ref_bias, return_weights=True)
    torch.testing.assert_close(ours, ref)


def test_attention_bias_none_equals_course_attention_and_bias_matches_torch():
    """The core's bias= replaces positional.attention_with_bias: an additive float bias on the scores."""
    import torch.nn.functional as F

    q, k, v = _rand(2, 2, 4, 8), _rand(2, 2, 6, 8, seed=1), _rand(2, 2, 6, 3, seed=2)
    mask = causal_mask(4, 6)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, mask=mask, bias=None),
                               scaled_dot_product_attention(q, k, v, mask))
    bias = alibi_bias(2, 4, 6, dtype=torch.float64)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, bias=bias),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=bias))
    # bias and mask together: PyTorch takes one additive mask, bias with -inf where masked
    both = bias.masked_fill(~mask, float("-inf"))
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, mask=mask, bias=bias),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=both))
    # a fully masked row: zeros, no NaN
    none = torch.zeros(4, 6, dtype=torch.bool)
    out = scaled_dot_product_attention(q, k, v, mask=none, bias=bias)
    assert torch.equal(out, torch.zeros_like(out))


def test_attention_bias_bad_shapes():
    q = _rand(1, 2, 4, 8)
    with pytest.raises(ValueError, match=r"bias of shape \(2, 3, 3\)"):
        scaled_dot_product_attention(q, q, q, bias=torch.zeros(2, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="float bias"):
        scaled_dot_product_attention(q, q, q, bias=torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="boolean"):
        scaled_dot_product_attention(q, q, q, mask=torch.ones(4, 4))
    with pytest.raises(ValueError, match=r"q \(1, 2, 4, 8\).*k \(1, 2, 4, 6\)"):
        scaled_dot_product_attention(q, q[..., :6], q)


# --- the attention module ------------------------------------------------------------------------
def test_positional_mha_none_equals_mha_and_rope_equals_rotated_manual():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 2).double()
    x = _rand(2, 5, 16)
    none = PositionalMultiHeadAttention(16, 2, position="none").double()
    none.load_state_dict(mha.state_dict())  # same parameter names as MultiHeadAttention
    torch.testing.assert_close(none(x), mha(x))
    # rope by hand
    from course_lib.attention import merge_heads, split_heads

    pmha = PositionalMultiHeadAttention(16, 2, position="rope").double()
    pmha.load_state_dict(mha.state_dict())
    q = apply_rotary(split_heads(mha.q_proj(x), 2))
    k = apply_rotary(split_heads(mha.k_proj(x), 2))
    v = split_heads(mha.v_proj(x), 2)
    manual = mha.out_proj(merge_heads(scaled_dot_product_attention(q, k, v)))
    torch.testing.assert_close(pmha(x), manual)


@pytest.mark.parametrize("position", ["rope", "alibi", "none"])
def test_positional_mha_last_query_over_cache_equals_full_causal_pass(position):
    """Queries are aligned lower-right: the last query alone over all keys equals the last row of a full pass."""
    torch.manual_seed(0)
    pmha = PositionalMultiHeadAttention(16, 4, position=position).double()
    x = _rand(2, 7, 16)
    full = pmha(x, mask=causal_mask(7))
    last = pmha(x[:, -2:], x, x, mask=causal_mask(2, 7))
    torch.testing.assert_close(last, full[:, -2:])


def test_positional_mha_rope_is_shift_invariant():
    """Same tokens, every position shifted: identical output for RoPE and ALiBi (relative), not for absolute."""
    torch.manual_seed(0)
    x = _rand(1, 6, 16)
    pad = _rand(1, 3, 16, seed=9)
    for position in ("rope", "alibi"):
        pmha = PositionalMultiHeadAttention(16, 2, position=position).double()
        mask = torch.ones(6, 9, dtype=torch.bool)
        mask[:, :3] = False  # the 3 extra keys in front are masked: only the offset changes
        shifted = pmha(x, torch.cat([pad, x], 1), torch.cat([pad, x], 1), mask=mask)
        # reference: queries and keys at positions 0..5 (the same relative offsets)
        torch.testing.assert_close(shifted, pmha(x), msg=position)


def test_positional_mha_bad_input():
    with pytest.raises(ValueError, match="position must be one of"):
        PositionalMultiHeadAttention(8, 2, position="sinusoidal")
    with pytest.raises(ValueError, match="even"):
        PositionalMultiHeadAttention(6, 2, position="rope")
    pmha = PositionalMultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"\(B, T, 8\)"):
        pmha(torch.zeros(1, 3, 6))
    with pytest.raises(ValueError, match="S >= T"):
        pmha(torch.zeros(1, 3, 8), torch.zeros(1, 2, 8))


# --- low precision, explicit positions, the device ------------------------------------------------
from course_lib.positional import positions_from_mask  # noqa: E402


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("start", [0, 7, 100, 1000, 4000])
def test_rotary_low_precision_is_off_by_its_own_rounding_only(dtype, start, device):
    """Angles, cos and sin in float32 at least: a bfloat16 angle of 1000 would be off by up to 2 radians."""
    x = _rand(2, 2, 8, 64, seed=start).to(dtype)
    ref = apply_rotary(x.double(), start=start)  # float64 rotation of the same (rounded) input
    floor = (ref.to(dtype).double() - ref).abs().max().item()  # rounding the exact result to dtype
    ours = apply_rotary(x.to(device), start=start)
    assert ours.dtype == dtype and ours.device.type == device.type
    err = (ours.double().cpu() - ref).abs().max().item()
    assert err <= 2 * floor + 1e-6, (err, floor)
    assert err < 0.02
    # with explicit positions (each row its own), the same precision
    pos = torch.tensor([[start] * 8, list(range(start, start + 8))], device=device)  # (B, T)
    ref_pos = torch.stack([apply_rotary(x[b:b + 1].double(), positions=pos[b].cpu())[0] for b in range(2)])
    err_pos = (apply_rotary(x.to(device), positions=pos).double().cpu() - ref_pos).abs().max().item()
    assert err_pos < 0.02


def test_rotary_angles_keep_float32_when_asked_and_low_precision_tables_are_wrong():
    """The fault the float32 rule fixes: angles rounded to bfloat16 at position 1000."""
    good = rotary_angles(4, 64, start=1000, dtype=torch.float32).double()
    exact = rotary_angles(4, 64, start=1000, dtype=torch.float64)
    assert (good - exact).abs().max() < 1e-3
    bad = rotary_angles(4, 64, start=1000, dtype=torch.bfloat16).double()
    assert (bad.cos() - exact.cos()).abs().max() > 0.5


def test_apply_rotary_explicit_positions_equal_start_offsets():
    x = _rand(3, 2, 5, 8)
    torch.testing.assert_close(apply_rotary(x, positions=torch.arange(4, 9)), apply_rotary(x, start=4))
    pos = torch.tensor([[0, 1, 2, 3, 4], [3, 4, 5, 6, 7], [0, 0, 0, 1, 2]])  # (B, T): one row per sequence
    out = apply_rotary(x, positions=pos)
    torch.testing.assert_close(out[1], apply_rotary(x[1], start=3))
    torch.testing.assert_close(out[2, :, 3:], apply_rotary(x[2, :, 3:], start=1))
    # (B, T, Dh) input takes (B, T) positions too
    torch.testing.assert_close(apply_rotary(x[:, 0], positions=pos), out[:, 0])
    with pytest.raises(ValueError, match=r"positions of shape \(T,\) or \(B, T\)"):
        apply_rotary(x, positions=torch.arange(4))
    with pytest.raises(ValueError, match="integer positions"):
        apply_rotary(x, positions=torch.arange(5.0))


def test_rotary_with_position_ids_matches_llama_per_row():
    """transformers' position_ids (B, T), a different offset per row (left padding), after the layout permutation."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    B, H, T, Dh = 2, 2, 6, 16
    config = LlamaConfig(hidden_size=H * Dh, num_attention_heads=H, num_key_value_heads=H, intermediate_size=64,
                         num_hidden_layers=1, vocab_size=99, max_position_embeddings=64)
    q = _rand(B, H, T, Dh, dtype=torch.float32)
    pos = torch.tensor([[0, 0, 0, 1, 2, 3], [5, 6, 7, 8, 9, 10]])
    cos, sin = LlamaRotaryEmbedding(config)(q, pos)
    ref, _ = apply_rotary_pos_emb(interleaved_to_half(q), interleaved_to_half(q), cos, sin)
    torch.testing.assert_close(interleaved_to_half(apply_rotary(q, positions=pos)), ref, atol=1e-5, rtol=1e-5)


def test_positional_tables_are_built_on_the_input_device(device):
    x = torch.zeros(2, 4, 8, device=device)
    assert SinusoidalPositionalEncoding(8)(x).device.type == device.type
    assert LearnedPositionalEmbedding(10, 8).to(device)(x).device.type == device.type
    assert alibi_bias(2, 4, device=device).device.type == device.type
    pmha = PositionalMultiHeadAttention(8, 2, position="alibi").to(device)
    assert pmha(x, mask=causal_mask(4, device=device)).device.type == device.type
    assert positions_from_mask(torch.ones(1, 1, 1, 4, dtype=torch.bool, device=device), 4).device.type == device.type


def test_sinusoidal_and_learned_take_explicit_positions():
    x = _rand(2, 4, 8, dtype=torch.float32)
    pos = torch.tensor([[0, 1, 2, 3], [0, 0, 0, 1]])
    full = sinusoidal_encoding(10, 8)
    torch.testing.assert_close(SinusoidalPositionalEncoding(8)(x, positions=pos), x + full[pos])
    emb = LearnedPositionalEmbedding(10, 8)
    torch.testing.assert_close(emb(x, positions=pos), x + emb.table.weight[pos])
    torch.testing.assert_close(emb(x, positions=torch.arange(3, 7)), emb(x, start=3))
    with pytest.raises(ValueError, match="max_len=10"):
        emb(x, positions=torch.tensor([7, 8, 9, 10]))
    with pytest.raises(ValueError, match=r"positions of shape \(4,\) or \(2, 4\)"):
        emb(x, positions=torch.arange(5))


# --- positions that follow the padding ------------------------------------------------------------
def test_positions_from_mask_left_right_and_no_padding():
    from course_lib.masks import padding_mask, seq2seq_masks

    ids = torch.tensor([[0, 0, 5, 6, 7], [5, 6, 7, 0, 0], [5, 6, 7, 8, 9], [0, 0, 0, 0, 0]])
    pos = positions_from_mask(padding_mask(ids, 0), 5)
    assert pos.tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0]]
    # the decoder's padding AND causal mask: its last row is the padding row
    assert torch.equal(positions_from_mask(seq2seq_masks(ids, ids, 0).tgt, 5), pos)
    # no batch information: 0 .. S-1; the last T of S (a cache): S-T .. S-1
    assert positions_from_mask(causal_mask(5), 5).tolist() == [[0, 1, 2, 3, 4]]
    assert positions_from_mask(None, 6, 2).tolist() == [[4, 5]]
    assert positions_from_mask(padding_mask(ids, 0), 5, 2).tolist() == [[1, 2], [3, 4], [3, 4], [0, 0]]
    with pytest.raises(ValueError, match=r"\(B, H, T, 6\)"):
        positions_from_mask(padding_mask(ids, 0), 6)


def test_positions_from_mask_matches_gpt2_position_ids_on_real_tokens():
    """transformers' GPT-2 generation makes position_ids = attention_mask.cumsum(-1) - 1 (pads filled with 1)."""
    from course_lib.masks import padding_mask

    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        lengths = torch.randint(1, 8, (4,), generator=g)
        attention_mask = (torch.arange(8)[None] >= 8 - lengths[:, None]).long()  # left padding
        ref = attention_mask.cumsum(-1) - 1
        ours = positions_from_mask(padding_mask(attention_mask, 0), 8)
        assert torch.equal(ours[attention_mask.bool()], ref[attention_mask.bool()])


@pytest.mark.parametrize("position", ["rope", "alibi", "none"])
def test_positional_mha_fast_path_and_cache_equal_explicit_full_pass(position, device):
    from course_lib.attention import set_fast_attention
    from course_lib.kv_cache import KVCache

    torch.manual_seed(0)
    pmha = PositionalMultiHeadAttention(16, 4, position=position, n_kv_heads=2).double().to(device)
    x = _rand(2, 6, 16).to(device)
    mask = causal_mask(6, device=device)
    fast = pmha(x, mask=mask)
    slow = set_fast_attention(pmha, False)(x, mask=mask)
    torch.testing.assert_close(fast, slow)
    pmha.fast = True
    cache = KVCache()
    steps = [pmha(x[:, :2], mask=causal_mask(2, device=device), cache=cache)]
    steps += [pmha(x[:, t:t + 1], cache=cache) for t in range(2, 6)]
    torch.testing.assert_close(torch.cat(steps, 1), slow)
