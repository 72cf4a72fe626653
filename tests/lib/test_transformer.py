"""course_lib.transformer against torch.nn's Transformer layers with copied weights, plus invariances."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from course_lib.positional import sinusoidal_encoding
from course_lib.masks import causal_mask, combine_masks, padding_mask, to_key_padding_mask, to_torch_attn_mask
from course_lib.transformer import (
    Decoder,
    DecoderBlock,
    Encoder,
    EncoderBlock,
    Transformer,
    TransformerConfig,
)
from _helpers import rand as _rand, randomize as _randomize

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
PAD = 0


def _ids(B, S, V, seed, n_pad=None):
    """Random ids (B, S) in 1..V-1, right-padded with PAD: row b has n_pad[b] pads at the end."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (B, S), generator=g)
    for b, n in enumerate(n_pad or []):
        if n:
            ids[b, S - n:] = PAD
    return ids


def _torch_enc_layer(D, H, F, norm_first, seed, activation="relu"):
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(D, H, F, dropout=0.0, batch_first=True, norm_first=norm_first,
                                       activation=activation).double()
    _randomize(layer)
    return layer


def _torch_dec_layer(D, H, F, norm_first, seed):
    torch.manual_seed(seed)
    layer = nn.TransformerDecoderLayer(D, H, F, dropout=0.0, batch_first=True, norm_first=norm_first).double()
    _randomize(layer)
    return layer


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------
def test_config_presets_and_validation():
    tiny = TransformerConfig.tiny()
    assert (tiny.d_model, tiny.n_heads, tiny.d_ff, tiny.n_encoder_layers, tiny.n_decoder_layers) == (32, 4, 64, 2, 2)
    assert tiny.d_head == 8 and not tiny.norm_first
    base = TransformerConfig.base()
    assert (base.d_model, base.n_heads, base.d_ff, base.n_encoder_layers, base.n_decoder_layers) == (512, 8, 2048, 6, 6)
    assert base.src_vocab_size == base.tgt_vocab_size == 37000 and base.tie_embeddings and base.share_src_tgt_embeddings
    assert TransformerConfig.tiny(norm_first=True).norm_first
    assert tiny.replace(d_model=64).d_model == 64 and tiny.d_model == 32
    with pytest.raises(Exception):
        tiny.d_model = 3  # frozen
    with pytest.raises(ValueError, match="divisible"):
        TransformerConfig.tiny(d_model=30)
    with pytest.raises(ValueError, match="positional"):
        TransformerConfig.tiny(positional="rotary")
    with pytest.raises(ValueError, match="share_src_tgt_embeddings"):
        TransformerConfig.tiny(src_vocab_size=10, share_src_tgt_embeddings=True)


def test_base_parameter_count():
    """Paper sizes with one shared 37000 x 512 matrix: 63,082,496 parameters (the paper reports 65M)."""
    with torch.device("meta"):
        model = Transformer(TransformerConfig.base())
    D, F, V, L = 512, 2048, 37000, 6
    attn = 4 * (D * D + D)
    ff = D * F + F + F * D + D
    expected = V * D + L * (attn + ff + 2 * 2 * D) + L * (2 * attn + ff + 3 * 2 * D)
    assert model.num_parameters() == expected == 63_082_496
    with torch.device("meta"):
        untied = Transformer(TransformerConfig.base(tie_embeddings=False, share_src_tgt_embeddings=False))
    assert untied.num_parameters() == expected + 2 * V * D


# --------------------------------------------------------------------------------------------------
# Blocks against nn.TransformerEncoderLayer / nn.TransformerDecoderLayer
# --------------------------------------------------------------------------------------------------
@SETTINGS
@given(B=st.integers(1, 3), S=st.integers(1, 6), H=st.sampled_from([1, 2, 4]), Dh=st.integers(1, 4),
       norm_first=st.booleans(), masked=st.booleans(), seed=st.integers(0, 1000))
def test_encoder_block_matches_torch(B, S, H, Dh, norm_first, masked, seed):
    D = H * Dh * 2
    ref = _torch_enc_layer(D, H, 3 * D, norm_first, seed)
    ours = EncoderBlock.from_torch(ref)
    assert ours.norm_first == norm_first
    x = _rand(B, S, D, seed=seed)
    if masked:
        n_pad = [(seed + b) % S for b in range(B)]  # at least one real token per row
        mask = padding_mask(_ids(B, S, 9, seed, n_pad), PAD)  # (B, 1, 1, S)
        expected = ref(x, src_key_padding_mask=to_key_padding_mask(mask))
        torch.testing.assert_close(ours(x, mask=mask), expected)  # padded positions too (no fast path in train mode)
    else:
        torch.testing.assert_close(ours(x), ref(x))


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_block_with_causal_and_padding_mask(norm_first):
    B, S, D, H = 3, 6, 16, 4
    ref = _torch_enc_layer(D, H, 32, norm_first, seed=1)
    ours = EncoderBlock(D, H, 32, norm_first=norm_first).double()
    ours.load_torch_weights(ref)
    x = _rand(B, S, D, seed=2)
    mask = combine_masks(padding_mask(_ids(B, S, 9, 3, [0, 2, 4]), PAD), causal_mask(S))  # (B, 1, S, S)
    # two ways to hand the same mask to PyTorch: one (B*H, S, S) attn_mask, or attn_mask + key_padding_mask
    expected = ref(x, src_mask=to_torch_attn_mask(mask, n_heads=H))
    torch.testing.assert_close(ours(x, mask=mask), expected)
    expected2 = ref(x, src_mask=to_torch_attn_mask(causal_mask(S)),
                    src_key_padding_mask=to_key_padding_mask(padding_mask(_ids(B, S, 9, 3, [0, 2, 4]), PAD)))
    torch.testing.assert_close(ours(x, mask=mask), expected2)


def test_encoder_block_gelu():
    ref = _torch_enc_layer(8, 2, 16, False, seed=4, activation="gelu")
    ours = EncoderBlock.from_torch(ref)
    x = _rand(2, 5, 8, seed=5)
    torch.testing.assert_close(ours(x), ref(x))


@SETTINGS
@given(B=st.integers(1, 3), T=st.integers(1, 5), S=st.integers(1, 6), H=st.sampled_from([1, 2, 4]),
       Dh=st.integers(1, 4), norm_first=st.booleans(), masked=st.booleans(), seed=st.integers(0, 1000))
def test_decoder_block_matches_torch(B, T, S, H, Dh, norm_first, masked, seed):
    D = H * Dh * 2
    ref = _torch_dec_layer(D, H, 3 * D, norm_first, seed)
    ours = DecoderBlock.from_torch(ref)
    y, memory = _rand(B, T, D, seed=seed), _rand(B, S, D, seed=seed + 1)
    if masked:
        tgt_pad = padding_mask(_ids(B, T, 9, seed, [(seed + b) % T for b in range(B)]), PAD)  # (B, 1, 1, T)
        src_pad = padding_mask(_ids(B, S, 9, seed + 2, [(seed + 2 * b) % S for b in range(B)]), PAD)  # (B, 1, 1, S)
        self_mask = combine_masks(tgt_pad, causal_mask(T))  # (B, 1, T, T)
        expected = ref(y, memory, tgt_mask=to_torch_attn_mask(causal_mask(T)),
                       tgt_key_padding_mask=to_key_padding_mask(tgt_pad),
                       memory_key_padding_mask=to_key_padding_mask(src_pad))
        got = ours(y, memory, self_mask=self_mask, cross_mask=src_pad)
    else:
        expected = ref(y, memory)
        got = ours(y, memory)
    torch.testing.assert_close(got, expected)


def test_decoder_block_keys_and_values_come_from_memory():
    """Cross-attention: changing the memory changes the output; the output has the decoder's length T."""
    cfg = TransformerConfig.tiny()
    block = DecoderBlock.from_config(cfg).double()
    y, memory = _rand(2, 3, 32), _rand(2, 7, 32, seed=1)
    out = block(y, memory)
    assert out.shape == (2, 3, 32)
    assert not torch.allclose(out, block(y, memory + 1.0))
    # one memory position masked out of cross-attention: its value no longer matters
    cross = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    cross[:, :, :, -1] = False
    changed = memory.clone()
    changed[:, -1] += 5.0
    torch.testing.assert_close(block(y, memory, cross_mask=cross), block(y, changed, cross_mask=cross))


@pytest.mark.parametrize("norm_first", [False, True])
def test_to_torch_round_trip(norm_first):
    cfg = TransformerConfig.tiny(norm_first=norm_first, activation="gelu")
    torch.manual_seed(0)
    enc, dec = EncoderBlock.from_config(cfg).double(), DecoderBlock.from_config(cfg).double()
    _randomize(enc), _randomize(dec)
    x, memory = _rand(2, 5, 32), _rand(2, 7, 32, seed=1)
    mask = padding_mask(_ids(2, 5, 9, 0, [0, 2]), PAD)
    torch.testing.assert_close(enc.to_torch()(x, src_key_padding_mask=to_key_padding_mask(mask)), enc(x, mask))
    torch.testing.assert_close(dec.to_torch()(x, memory, tgt_mask=to_torch_attn_mask(causal_mask(5))),
                               dec(x, memory, self_mask=causal_mask(5)))
    back = DecoderBlock.from_torch(dec.to_torch())
    for (name, a), (_, b) in zip(back.named_parameters(), dec.named_parameters()):
        assert torch.equal(a, b), name


def test_blocks_reject_bad_shapes():
    cfg = TransformerConfig.tiny()
    with pytest.raises(ValueError, match=r"\(B, S, D\)"):
        EncoderBlock.from_config(cfg)(torch.randn(2, 5, 16))
    with pytest.raises(ValueError, match="memory"):
        DecoderBlock.from_config(cfg)(torch.randn(2, 5, 32), torch.randn(2, 5))
    with pytest.raises(ValueError, match="batch"):
        DecoderBlock.from_config(cfg)(torch.randn(2, 5, 32), torch.randn(3, 4, 32))
    with pytest.raises(ValueError, match="norm_first"):
        EncoderBlock.from_config(cfg).load_torch_weights(
            nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, norm_first=True))


# --------------------------------------------------------------------------------------------------
# Stacks and the whole model against nn.TransformerEncoder / Decoder / nn.Transformer
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm_first", [False, True])
def test_stacks_match_torch(norm_first):
    B, S, T, D, H, L = 2, 6, 4, 16, 4, 3
    cfg = TransformerConfig.tiny(d_model=D, n_heads=H, d_ff=32, n_encoder_layers=L, n_decoder_layers=L,
                                 norm_first=norm_first)
    torch.manual_seed(0)
    final = (lambda: nn.LayerNorm(D).double()) if norm_first else (lambda: None)
    ref_enc = nn.TransformerEncoder(_torch_enc_layer(D, H, 32, norm_first, 0), L, norm=final(),
                                    enable_nested_tensor=False).double()
    ref_dec = nn.TransformerDecoder(_torch_dec_layer(D, H, 32, norm_first, 1), L, norm=final()).double()
    _randomize(ref_enc), _randomize(ref_dec)  # the layers are deep copies: make them differ
    enc, dec = Encoder.from_config(cfg).double(), Decoder.from_config(cfg).double()
    enc.load_torch_weights(ref_enc)
    dec.load_torch_weights(ref_dec)
    assert (enc.norm is None) == (not norm_first)
    x, y = _rand(B, S, D), _rand(B, T, D, seed=1)
    src_pad = padding_mask(_ids(B, S, 9, 0, [0, 2]), PAD)
    memory = enc(x, mask=src_pad)
    torch.testing.assert_close(memory, ref_enc(x, src_key_padding_mask=to_key_padding_mask(src_pad)))
    out = dec(y, memory, self_mask=causal_mask(T), cross_mask=src_pad)
    expected = ref_dec(y, memory, tgt_mask=to_torch_attn_mask(causal_mask(T)),
                       memory_key_padding_mask=to_key_padding_mask(src_pad))
    torch.testing.assert_close(out, expected)


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_matches_nn_transformer_plus_embeddings(norm_first):
    """nn.Transformer has no embeddings and always ends both stacks with a LayerNorm (even post-norm)."""
    cfg = TransformerConfig.tiny(src_vocab_size=11, tgt_vocab_size=13, norm_first=norm_first)
    torch.manual_seed(0)
    ref = nn.Transformer(cfg.d_model, cfg.n_heads, cfg.n_encoder_layers, cfg.n_decoder_layers, cfg.d_ff,
                         dropout=0.0, batch_first=True, norm_first=norm_first).double()
    _randomize(ref)
    ours = Transformer(cfg).double()
    if not norm_first:
        with pytest.raises(ValueError, match="final LayerNorm"):
            ours.load_torch_weights(ref)
        ref.encoder.norm = None  # the paper's post-norm model has no final LayerNorm
        ref.decoder.norm = None
    ours.load_torch_weights(ref)
    B, S, T = 3, 7, 5
    src = _ids(B, S, 11, 1, [0, 3, 1])
    tgt = _ids(B, T, 13, 2, [0, 1, 2])
    src_mask = padding_mask(src, PAD)  # (B, 1, 1, S)
    tgt_mask = combine_masks(padding_mask(tgt, PAD), causal_mask(T))  # (B, 1, T, T)
    logits = ours(src, tgt, src_mask=src_mask, tgt_mask=tgt_mask, cross_mask=src_mask)
    assert logits.shape == (B, T, 13)
    hidden = ref(ours.embed_source(src), ours.embed_target(tgt),
                 tgt_mask=to_torch_attn_mask(causal_mask(T)),
                 src_key_padding_mask=to_key_padding_mask(src_mask),
                 tgt_key_padding_mask=to_key_padding_mask(padding_mask(tgt, PAD)),
                 memory_key_padding_mask=to_key_padding_mask(src_mask))
    torch.testing.assert_close(logits, ours.out_proj(hidden))
    # encode + decode is the same computation as forward
    memory = ours.encode(src, src_mask)
    torch.testing.assert_close(ours.decode(tgt, memory, tgt_mask, src_mask), logits)


def test_embeddings_are_scaled_by_sqrt_d_plus_positions():
    cfg = TransformerConfig.tiny()
    model = Transformer(cfg)
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    expected = model.src_embed(ids) * math.sqrt(cfg.d_model) + sinusoidal_encoding(5, cfg.d_model)
    torch.testing.assert_close(model.embed_source(ids), expected)
    learned = Transformer(cfg.replace(positional="learned"))
    assert learned.pos_table is None and learned.pos_embed.weight.shape == (cfg.max_len, cfg.d_model)
    torch.testing.assert_close(learned.embed_target(ids),
                               learned.tgt_embed(ids) * math.sqrt(cfg.d_model) + learned.pos_embed.weight[:5])
    with pytest.raises(ValueError, match="max_len"):
        model.encode(torch.ones(1, cfg.max_len + 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        model.encode(torch.ones(5, dtype=torch.long))


def test_tied_and_shared_embeddings():
    cfg = TransformerConfig.tiny(tie_embeddings=True, share_src_tgt_embeddings=True)
    model = Transformer(cfg)
    assert model.out_proj.weight is model.tgt_embed.weight and model.src_embed is model.tgt_embed
    separate = Transformer(TransformerConfig.tiny())
    V, D = cfg.tgt_vocab_size, cfg.d_model
    assert separate.num_parameters() - model.num_parameters() == 2 * V * D
    # training moves the shared matrix through all three uses
    logits = model(torch.tensor([[1, 2]]), torch.tensor([[3, 4]]))
    logits.sum().backward()
    assert model.tgt_embed.weight.grad is not None and model.tgt_embed.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------------
# Invariances
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm_first", [False, True])
def test_causal_mask_future_target_tokens_do_not_change_earlier_outputs(norm_first):
    torch.manual_seed(0)
    model = Transformer(TransformerConfig.tiny(norm_first=norm_first)).double().eval()
    src = _ids(2, 6, 20, 0)
    tgt = _ids(2, 5, 20, 1)
    changed = tgt.clone()
    changed[:, 3:] = _ids(2, 2, 20, 2)  # new tokens at positions 3 and 4
    memory = model.encode(src)
    a = model.decode(tgt, memory, self_mask=causal_mask(5))
    b = model.decode(changed, memory, self_mask=causal_mask(5))
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3:], b[:, 3:])
    # without the mask, the future leaks into every position: the test above can fail
    a_nomask, b_nomask = model.decode(tgt, memory), model.decode(changed, memory)
    assert not torch.allclose(a_nomask[:, :3], b_nomask[:, :3])


@pytest.mark.parametrize("norm_first", [False, True])
def test_padding_leaves_real_positions_unchanged(norm_first):
    torch.manual_seed(0)
    model = Transformer(TransformerConfig.tiny(norm_first=norm_first)).double().eval()
    src, tgt = _ids(1, 5, 20, 0), _ids(1, 4, 20, 1)
    src_padded = torch.cat([src, torch.full((1, 3), PAD)], dim=1)  # (1, 8)
    tgt_padded = torch.cat([tgt, torch.full((1, 2), PAD)], dim=1)  # (1, 6)
    ref = model(src, tgt, tgt_mask=causal_mask(4))
    src_mask = padding_mask(src_padded, PAD)
    tgt_mask = combine_masks(padding_mask(tgt_padded, PAD), causal_mask(6))
    padded = model(src_padded, tgt_padded, src_mask=src_mask, tgt_mask=tgt_mask, cross_mask=src_mask)
    torch.testing.assert_close(padded[:, :4], ref)
    torch.testing.assert_close(model.encode(src_padded, src_mask)[:, :5], model.encode(src))
    # without the padding masks the pads are attended to and the outputs change
    unmasked = model(src_padded, tgt_padded, tgt_mask=causal_mask(6))
    assert not torch.allclose(unmasked[:, :4], ref)


def test_batch_rows_are_independent():
    torch.manual_seed(0)
    model = Transformer(TransformerConfig.tiny()).double()
    src, tgt = _ids(3, 6, 20, 0), _ids(3, 4, 20, 1)
    full = model(src, tgt, tgt_mask=causal_mask(4))
    one = model(src[1:2], tgt[1:2], tgt_mask=causal_mask(4))
    torch.testing.assert_close(full[1:2], one)


def test_behaviour_does_not_depend_on_training_mode_without_dropout():
    torch.manual_seed(0)
    model = Transformer(TransformerConfig.tiny()).double()
    src, tgt = _ids(2, 6, 20, 0), _ids(2, 4, 20, 1)
    train_out = model.train()(src, tgt, tgt_mask=causal_mask(4))
    eval_out = model.eval()(src, tgt, tgt_mask=causal_mask(4))
    torch.testing.assert_close(train_out, eval_out)


# --------------------------------------------------------------------------------------------------
# Blocks take their own sizes
# --------------------------------------------------------------------------------------------------
def test_blocks_and_stacks_take_their_own_sizes():
    cfg = TransformerConfig.tiny(norm_first=True, activation="gelu", layer_norm_eps=1e-6, dropout=0.1)
    block = EncoderBlock(32, 4, 64, dropout=0.1, norm_first=True, activation="gelu", layer_norm_eps=1e-6)
    same = EncoderBlock.from_config(cfg)
    assert [(n, p.shape) for n, p in block.named_parameters()] == [(n, p.shape) for n, p in same.named_parameters()]
    assert block.norm1.eps == 1e-6 and block.self_attn.dropout == 0.1 and block.ff.activation == "gelu"
    dec = DecoderBlock(16, 2, 24)
    assert dec.ff.linear1.weight.shape == (24, 16) and dec.cross_attn.n_heads == 2 and not dec.norm_first
    enc = Encoder(3, 16, 2, 24, norm_first=False, final_norm=True)
    assert len(enc.layers) == 3 and enc.norm is not None  # a final norm in post-norm (nn.Transformer's layout)
    assert Encoder(2, 16, 2, 24, norm_first=True).norm is not None and Decoder(2, 16, 2, 24).norm is None
    no_bias = EncoderBlock(16, 2, 24, bias=False)
    assert all(p.dim() == 2 for p in no_bias.parameters() if p is not no_bias.norm1.weight
               and p is not no_bias.norm2.weight)
    assert no_bias.norm1.bias is None and no_bias.self_attn.q_proj.bias is None
    with pytest.raises(ValueError, match="divisible"):
        EncoderBlock(10, 3, 8)
    with pytest.raises(ValueError, match="activation"):
        DecoderBlock(8, 2, 8, activation="silu")


def test_transformer_config_dropout_reaches_attention_weights():
    model = Transformer(TransformerConfig.tiny(dropout=0.2))
    rates = {m.dropout for m in model.modules() if hasattr(m, "q_proj")}
    assert rates == {0.2}


# --------------------------------------------------------------------------------------------------
# Positions follow the padding
# --------------------------------------------------------------------------------------------------
def _pad(ids, n, side):
    pads = torch.full((ids.shape[0], n), PAD)
    return torch.cat([pads, ids], 1) if side == "left" else torch.cat([ids, pads], 1)


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_source_gives_the_unpadded_encoder_outputs(side, norm_first, positional):
    """The new user's case: Transformer.tiny(), [0, 0, 5, 6, 7] against [5, 6, 7] (left padding differed by 1.13)."""
    torch.manual_seed(0)
    model = Transformer(TransformerConfig.tiny(norm_first=norm_first, positional=positional)).eval()
    src = torch.tensor([[5, 6, 7]])
    padded = _pad(src, 2, side)
    real = slice(2, 5) if side == "left" else slice(0, 3)
    out = model.encode(padded, padding_mask(padded, PAD))[:, real]
    assert (out - model.encode(src)).abs().max() < 1e-5
    # an explicit positions argument overrides: counting from the first (pad) column moves the real tokens
    moved = model.encode(padded, padding_mask(padded, PAD), positions=torch.arange(5))[:, real]
    assert torch.allclose(moved, out, atol=1e-5) == (side == "right")


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_rows_equal_their_unpadded_selves(side, norm_first):
    """Both sides, encoder and decoder, in one batch of different lengths (float64)."""
    torch.manual_seed(0)
    model = Transformer(TransformerConfig.tiny(norm_first=norm_first)).double().eval()
    srcs = [_ids(1, n, 20, seed=n) for n in (4, 6, 2)]
    tgts = [_ids(1, n, 20, seed=10 + n) for n in (3, 1, 5)]
    S, T = 6, 5
    src = torch.cat([_pad(s, S - s.shape[1], side) for s in srcs])  # (3, S)
    tgt = torch.cat([_pad(t, T - t.shape[1], side) for t in tgts])  # (3, T)
    src_mask = padding_mask(src, PAD)
    tgt_mask = combine_masks(padding_mask(tgt, PAD), causal_mask(T))
    logits = model(src, tgt, src_mask, tgt_mask, src_mask)
    for b, (s, t) in enumerate(zip(srcs, tgts)):
        alone = model(s, t, tgt_mask=causal_mask(t.shape[1]))
        n = t.shape[1]
        rows = slice(T - n, T) if side == "left" else slice(0, n)
        torch.testing.assert_close(logits[b:b + 1, rows], alone)


def test_explicit_positions_shapes_and_errors():
    torch.manual_seed(0)
    model = Transformer(TransformerConfig.tiny()).double().eval()
    src, tgt = _ids(2, 5, 20, 0), _ids(2, 4, 20, 1)
    memory = model.encode(src)
    torch.testing.assert_close(model.encode(src, positions=torch.arange(5)), memory)
    torch.testing.assert_close(model.encode(src, positions=torch.arange(5).expand(2, 5)), memory)
    shifted = model.decode(tgt, memory, causal_mask(4), positions=torch.arange(3, 7))
    assert not torch.allclose(shifted, model.decode(tgt, memory, causal_mask(4)))
    torch.testing.assert_close(model.embed_target(tgt, positions=torch.arange(3, 7)),
                               model.tgt_embed(tgt) * math.sqrt(32) + model.positions(4, start=3))
    with pytest.raises(ValueError, match=r"positions of shape \(5,\) or \(2, 5\)"):
        model.encode(src, positions=torch.arange(4))
    with pytest.raises(ValueError, match="max_len"):
        model.encode(src, positions=torch.arange(60, 65))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model.decode(tgt[0], memory)
