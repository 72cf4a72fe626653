"""course_lib.masks.seq2seq_masks: the encoder, decoder and cross-attention masks of a padded batch."""
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from course_lib.attention import MultiHeadAttention, scaled_dot_product_attention
from course_lib.masks import causal_mask, padding_mask, seq2seq_masks, to_key_padding_mask

PAD = 0


def _padded(lengths, L, left=False, low=1, high=9, seed=0):
    """A (B, L) batch of random ids in [low, high), padded with PAD to L on the right (or left)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths), L), PAD)
    for b, n in enumerate(lengths):
        tokens = torch.randint(low, high, (n,), generator=g)
        if n:
            if left:
                ids[b, L - n:] = tokens
            else:
                ids[b, :n] = tokens
    return ids


def test_hand_example_right_padding():
    src = torch.tensor([[5, 6, 7], [5, 6, PAD]])
    tgt = torch.tensor([[1, 4, 4, 4], [1, 4, PAD, PAD]])
    src_mask, tgt_mask, cross_mask = seq2seq_masks(src, tgt, PAD)
    assert src_mask.shape == (2, 1, 1, 3) and cross_mask.shape == (2, 1, 1, 3) and tgt_mask.shape == (2, 1, 4, 4)
    assert src_mask.dtype == tgt_mask.dtype == cross_mask.dtype == torch.bool
    assert torch.equal(src_mask[:, 0, 0], torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool))
    assert torch.equal(cross_mask, src_mask)
    assert torch.equal(tgt_mask[0, 0], causal_mask(4))
    expected = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    assert torch.equal(tgt_mask[1, 0], expected)


def test_named_fields_and_other_target_pad_id():
    src = torch.tensor([[5, 6, PAD]])
    tgt = torch.tensor([[1, 4, -1]])
    masks = seq2seq_masks(src, tgt, PAD, tgt_pad_id=-1)
    assert torch.equal(masks.src, padding_mask(src, PAD))
    assert torch.equal(masks.tgt[0, 0], torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 0]], dtype=torch.bool))
    assert masks.cross is masks.src


def test_bad_shapes_raise():
    # L is the number of layers only: a source has length S, a target length T
    with pytest.raises(ValueError, match=r"src_ids of shape \(B, S\).*\(3,\)"):
        seq2seq_masks(torch.tensor([1, 2, 3]), torch.tensor([[1, 2]]), PAD)
    with pytest.raises(ValueError, match=r"tgt_ids of shape \(B, T\).*\(2,\)"):
        seq2seq_masks(torch.tensor([[1, 2, 3]]), torch.tensor([1, 2]), PAD)
    with pytest.raises(ValueError, match="same batch size"):
        seq2seq_masks(torch.tensor([[1, 2, 3]]), torch.tensor([[1, 2], [1, 2]]), PAD)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=4),
    extra=st.integers(0, 3),
    left=st.booleans(),
)
def test_decoder_mask_matches_transformers(lengths, extra, left):
    """transformers builds (B, 1, T, S) boolean masks with True = attend too: they must agree."""
    from transformers.masking_utils import sdpa_mask

    T = max(lengths) + extra
    tgt = _padded(lengths, max(T, 1), left=left)
    src = _padded([max(n, 1) for n in lengths], 7, left=not left, seed=1)
    _, tgt_mask, _ = seq2seq_masks(src, tgt, PAD)
    theirs = sdpa_mask(batch_size=tgt.shape[0], q_length=tgt.shape[1], kv_length=tgt.shape[1],
                       attention_mask=tgt != PAD, allow_is_causal_skip=False)
    assert torch.equal(tgt_mask, theirs)


def test_masks_agree_with_torch_multihead_attention():
    """Our True = attend masks, converted, give nn.MultiheadAttention's result (which uses True = ignore)."""
    torch.manual_seed(0)
    D, H = 8, 2
    mha = nn.MultiheadAttention(D, H, batch_first=True, dtype=torch.float64)
    ours = MultiHeadAttention.from_torch(mha).double()
    src = _padded([5, 3, 1], 5)
    tgt = _padded([4, 2, 3], 4, seed=2)
    src_mask, tgt_mask, cross_mask = seq2seq_masks(src, tgt, PAD)
    y = torch.randn(3, 4, D, dtype=torch.float64)
    memory = torch.randn(3, 5, D, dtype=torch.float64)
    # decoder self-attention: torch takes a (T, T) causal attn_mask plus a (B, T) key_padding_mask
    torch_causal = nn.Transformer.generate_square_subsequent_mask(4) == float("-inf")  # True = ignore
    theirs, _ = mha(y, y, y, attn_mask=torch_causal, key_padding_mask=(tgt == PAD))
    torch.testing.assert_close(ours(y, mask=tgt_mask), theirs)
    # cross-attention: queries from the decoder, keys from the encoder, source padding only
    theirs, _ = mha(y, memory, memory, key_padding_mask=to_key_padding_mask(cross_mask))
    torch.testing.assert_close(ours(y, memory, mask=cross_mask), theirs)
    # encoder self-attention
    theirs, _ = mha(memory, memory, memory, key_padding_mask=to_key_padding_mask(src_mask))
    torch.testing.assert_close(ours(memory, mask=src_mask), theirs)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(n_src=st.integers(1, 5), n_tgt=st.integers(1, 5), extra_src=st.integers(1, 3),
       extra_tgt=st.integers(1, 3), left=st.booleans())
def test_padding_leaves_real_positions_unchanged(n_src, n_tgt, extra_src, extra_tgt, left):
    """Adding pads (left or right) to source and target changes no real position's output."""
    torch.manual_seed(0)
    D, H = 8, 2
    self_attn, cross_attn = MultiHeadAttention(D, H).double(), MultiHeadAttention(D, H).double()
    emb = torch.randn(10, D, dtype=torch.float64)

    def decoder_layer(src, tgt):
        _, tgt_mask, cross_mask = seq2seq_masks(src, tgt, PAD)
        y = emb[tgt]
        y = y + self_attn(y, mask=tgt_mask)
        return y + cross_attn(y, emb[src], mask=cross_mask)  # (B, T, D)

    src, tgt = _padded([n_src], n_src), _padded([n_tgt], n_tgt, seed=3)
    src_p, tgt_p = _padded([n_src], n_src + extra_src, left=left), _padded([n_tgt], n_tgt + extra_tgt, left=left, seed=3)
    out, out_p = decoder_layer(src, tgt), decoder_layer(src_p, tgt_p)
    real = tgt_p[0] != PAD
    torch.testing.assert_close(out_p[0, real], out[0])


def test_future_tokens_do_not_change_earlier_outputs():
    torch.manual_seed(0)
    attn = MultiHeadAttention(8, 2).double()
    emb = torch.randn(10, 8, dtype=torch.float64)
    src = _padded([3], 3)
    a = torch.tensor([[1, 4, 5, 6, 7]])
    b = torch.tensor([[1, 4, 5, 9, 2]])  # same first three tokens, different future
    out_a = attn(emb[a], mask=seq2seq_masks(src, a, PAD).tgt)
    out_b = attn(emb[b], mask=seq2seq_masks(src, b, PAD).tgt)
    torch.testing.assert_close(out_a[:, :3], out_b[:, :3])
    assert not torch.allclose(out_a[:, 3:], out_b[:, 3:])


def test_left_padded_target_rows_fully_masked_without_nan():
    """Left padding: a pad query's causal window holds only pads; its row is all False and gives zeros."""
    tgt = torch.tensor([[PAD, PAD, 1, 4], [1, 4, 5, 6]])
    src = torch.tensor([[PAD, PAD, PAD], [PAD, PAD, PAD]])  # fully padded sources too
    src_mask, tgt_mask, cross_mask = seq2seq_masks(src, tgt, PAD)
    assert not tgt_mask[0, 0, :2].any() and tgt_mask[0, 0, 2:].any(dim=-1).all()
    assert not src_mask.any() and not cross_mask.any()
    q = torch.randn(2, 2, 4, 3, requires_grad=True)
    out = scaled_dot_product_attention(q, q, q, mask=tgt_mask)
    assert not torch.isnan(out).any() and torch.equal(out[0, :, :2], torch.zeros(2, 2, 3))
    out.sum().backward()
    assert not torch.isnan(q.grad).any()
    k = torch.randn(2, 2, 3, 3)
    out = scaled_dot_product_attention(q, k, k, mask=cross_mask)
    assert not torch.isnan(out).any() and not out.any()
