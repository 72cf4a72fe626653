"""course_lib.interop: every torch.nn setting is either copied (outputs match) or refused with a ValueError."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib import interop
from course_lib.attention import MultiHeadAttention
from course_lib.masks import causal_mask, padding_mask, to_key_padding_mask, to_torch_attn_mask
from course_lib.transformer import Decoder, DecoderBlock, Encoder, EncoderBlock, Transformer, TransformerConfig
from course_lib.interop import from_torch, load_torch_weights, to_torch
from _helpers import rand as _rand, randomize as _randomize

D, H, FF = 16, 4, 24


def _mha(**kw):
    torch.manual_seed(0)
    return _randomize(nn.MultiheadAttention(D, H, batch_first=True, dtype=torch.float64, **kw)).eval()


def _enc_layer(**kw):
    torch.manual_seed(0)
    kw = {"dropout": 0.0, **kw}
    return _randomize(nn.TransformerEncoderLayer(D, H, FF, batch_first=True, dtype=torch.float64, **kw)).eval()


def _dec_layer(**kw):
    torch.manual_seed(0)
    kw = {"dropout": 0.0, **kw}
    return _randomize(nn.TransformerDecoderLayer(D, H, FF, batch_first=True, dtype=torch.float64, **kw)).eval()


# --------------------------------------------------------------------------------------------------
# nn.MultiheadAttention
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_mha_with_and_without_biases_matches(bias):
    ref = _mha(bias=bias)
    ours = interop.from_torch(ref)
    assert isinstance(ours, MultiHeadAttention) and (ours.q_proj.bias is None) == (not bias)
    x, mem = _rand(2, 5, D), _rand(2, 7, D, seed=1)
    torch.testing.assert_close(ours(x, mem, mem), ref(x, mem, mem)[0])
    torch.testing.assert_close(MultiHeadAttention.from_torch(ref)(x), ref(x, x, x)[0])
    back = interop.to_torch(ours)
    torch.testing.assert_close(back(x, mem, mem)[0], ref(x, mem, mem)[0])
    assert (back.in_proj_bias is None) == (not bias)


@pytest.mark.parametrize("setting,match", [
    (dict(add_bias_kv=True), "add_bias_kv"),          # outputs differed by 0.24 before (silently ignored)
    (dict(add_zero_attn=True), "add_zero_attn"),      # outputs differed by 0.14 before
    (dict(kdim=8, vdim=8), "kdim=8 / vdim=8"),
])
def test_mha_settings_we_do_not_compute_are_refused(setting, match):
    ref = _mha(**setting)
    for call in (lambda: interop.from_torch(ref), lambda: MultiHeadAttention.from_torch(ref),
                 lambda: MultiHeadAttention(D, H).double().load_torch_weights(ref)):
        with pytest.raises(ValueError, match=match):
            call()


def test_mha_refused_settings_really_compute_something_else():
    """The refusals guard real differences: copying only the projections gives other outputs."""
    x = _rand(2, 5, D)
    for setting in (dict(add_bias_kv=True), dict(add_zero_attn=True)):
        ref = _mha(**setting)
        plain = nn.MultiheadAttention(D, H, batch_first=True, dtype=torch.float64).eval()
        plain.load_state_dict({k: v for k, v in ref.state_dict().items() if k not in ("bias_k", "bias_v")})
        assert (plain(x, x, x)[0] - ref(x, x, x)[0]).abs().max() > 1e-2


def test_mha_bias_mismatch_and_mixed_biases_are_refused():
    with pytest.raises(ValueError, match="bias"):
        MultiHeadAttention(D, H, bias=True).double().load_torch_weights(_mha(bias=False))  # kept our biases before
    with pytest.raises(ValueError, match="bias"):
        MultiHeadAttention(D, H, bias=False).double().load_torch_weights(_mha(bias=True))
    mixed = _mha()
    mixed.out_proj.bias = None
    with pytest.raises(ValueError, match="output projection has none"):
        interop.from_torch(mixed)
    with pytest.raises(ValueError, match="num_heads"):
        MultiHeadAttention(D, 2).double().load_torch_weights(_mha())


def test_mha_dropout_is_copied_both_ways():
    ref = _mha(dropout=0.3)
    ours = interop.from_torch(ref)
    assert ours.dropout == 0.3 and interop.to_torch(ours).dropout == 0.3
    ours.train()
    x = _rand(2, 5, D)
    assert not torch.allclose(ours(x), ours.eval()(x))  # dropout on the weights acts in training


def test_grouped_query_attention_has_no_torch_counterpart():
    with pytest.raises(ValueError, match="grouped-query"):
        interop.to_torch(MultiHeadAttention(D, H, n_kv_heads=2))


# --------------------------------------------------------------------------------------------------
# nn.TransformerEncoderLayer / nn.TransformerDecoderLayer
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("setting", [
    dict(), dict(bias=False), dict(norm_first=True, bias=False), dict(activation="gelu"),
    dict(activation=F.gelu), dict(activation=nn.ReLU()), dict(layer_norm_eps=1e-3, norm_first=True),
])
def test_encoder_layer_settings_are_copied(setting):
    ref = _enc_layer(**setting)
    ours = interop.from_torch(ref)
    assert isinstance(ours, EncoderBlock)
    x = _rand(3, 6, D)
    pad = padding_mask(torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4]), 0)
    torch.testing.assert_close(ours(x, mask=pad), ref(x, src_key_padding_mask=to_key_padding_mask(pad)))
    back = interop.to_torch(ours)
    torch.testing.assert_close(back(x), ref(x))


@pytest.mark.parametrize("setting", [dict(), dict(bias=False), dict(norm_first=True, activation="gelu")])
def test_decoder_layer_settings_are_copied(setting):
    ref = _dec_layer(**setting)
    ours = interop.from_torch(ref)
    assert isinstance(ours, DecoderBlock)
    y, mem = _rand(2, 5, D), _rand(2, 7, D, seed=1)
    expected = ref(y, mem, tgt_mask=to_torch_attn_mask(causal_mask(5)))
    torch.testing.assert_close(ours(y, mem, self_mask=causal_mask(5)), expected)
    torch.testing.assert_close(interop.to_torch(ours)(y, mem, tgt_mask=to_torch_attn_mask(causal_mask(5))), expected)


def test_bias_false_layer_failed_before_and_matches_now():
    """Before, the block was built with biases and copying crashed on PyTorch's missing biases."""
    ref = _enc_layer(bias=False)
    assert ref.linear1.bias is None and ref.norm1.bias is None and ref.self_attn.in_proj_bias is None
    ours = EncoderBlock.from_torch(ref)
    assert ours.ff.linear1.bias is None and ours.norm1.bias is None
    with pytest.raises(ValueError, match="bias"):
        EncoderBlock(D, H, FF).double().load_torch_weights(ref)


@pytest.mark.parametrize("activation,match", [
    (nn.GELU(approximate="tanh"), "unsupported activation"),
    (F.silu, "unsupported activation"),
    (lambda x: x, "unsupported activation"),
])
def test_other_activations_are_refused(activation, match):
    for ref in (_enc_layer(activation=activation), _dec_layer(activation=activation)):
        with pytest.raises(ValueError, match=match):
            interop.from_torch(ref)


def test_layer_attention_settings_are_checked_inside_blocks():
    enc = _enc_layer()
    enc.self_attn = _mha(add_bias_kv=True)
    with pytest.raises(ValueError, match=r"self_attn.*add_bias_kv"):
        interop.from_torch(enc)
    dec = _dec_layer()
    dec.multihead_attn = _mha(add_zero_attn=True)
    with pytest.raises(ValueError, match=r"multihead_attn.*add_zero_attn"):
        DecoderBlock.from_torch(dec)
    with pytest.raises(ValueError, match="add_zero_attn"):
        DecoderBlock(D, H, FF).double().load_torch_weights(dec)


def test_mixed_layer_settings_are_refused():
    part = _enc_layer()
    part.linear2.bias = None
    with pytest.raises(ValueError, match="biases on some parts"):
        interop.from_torch(part)
    eps = _enc_layer()
    eps.norm2.eps = 1e-3
    with pytest.raises(ValueError, match="different eps"):
        interop.from_torch(eps)
    drop = _enc_layer(dropout=0.1)
    drop.self_attn.dropout = 0.2
    with pytest.raises(ValueError, match="different dropout"):
        interop.from_torch(drop)


def test_dropout_and_eps_are_copied_into_blocks():
    ref = _dec_layer(dropout=0.25, layer_norm_eps=1e-4)
    ours = interop.from_torch(ref)
    rates = {ours.dropout1.p, ours.dropout3.p, ours.ff.dropout.p, ours.self_attn.dropout, ours.cross_attn.dropout}
    assert rates == {0.25}
    assert ours.norm3.eps == 1e-4
    back = interop.to_torch(ours)
    assert back.dropout.p == 0.25 and back.self_attn.dropout == 0.25 and back.norm1.eps == 1e-4


def test_load_mismatches_are_refused():
    with pytest.raises(ValueError, match="norm_first differs"):
        EncoderBlock(D, H, FF).double().load_torch_weights(_enc_layer(norm_first=True))
    with pytest.raises(ValueError, match="activation differs"):
        EncoderBlock(D, H, FF).double().load_torch_weights(_enc_layer(activation="gelu"))
    with pytest.raises(ValueError, match=r"linear1.weight: expected shape \(32, 16\)"):
        EncoderBlock(D, H, 32).double().load_torch_weights(_enc_layer())
    with pytest.raises(ValueError, match="takes the weights of nn.TransformerEncoderLayer"):
        interop.load_torch_weights(EncoderBlock(D, H, FF), _dec_layer())
    with pytest.raises(ValueError, match="no course_lib counterpart for Linear"):
        interop.from_torch(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="no PyTorch counterpart"):
        interop.to_torch(nn.Linear(2, 2))


# --------------------------------------------------------------------------------------------------
# Stacks and nn.Transformer
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("final_norm", [False, True])
def test_stacks_from_torch_with_or_without_final_norm(norm_first, final_norm):
    """nn.Transformer's post-norm stacks end with a LayerNorm: supported now (needed `.norm = None` before)."""
    torch.manual_seed(0)
    norm = nn.LayerNorm(D, dtype=torch.float64) if final_norm else None
    ref_enc = _randomize(nn.TransformerEncoder(_enc_layer(norm_first=norm_first), 2, norm=norm,
                                               enable_nested_tensor=False)).eval()
    dec_norm = nn.LayerNorm(D, dtype=torch.float64) if final_norm else None
    ref_dec = _randomize(nn.TransformerDecoder(_dec_layer(norm_first=norm_first), 2, norm=dec_norm)).eval()
    enc, dec = interop.from_torch(ref_enc), interop.from_torch(ref_dec)
    assert isinstance(enc, Encoder) and isinstance(dec, Decoder) and (enc.norm is not None) == final_norm
    x, y = _rand(2, 6, D), _rand(2, 4, D, seed=1)
    memory = enc(x)
    torch.testing.assert_close(memory, ref_enc(x))
    tgt_mask = causal_mask(4)
    torch.testing.assert_close(dec(y, memory, tgt_mask), ref_dec(y, memory, tgt_mask=to_torch_attn_mask(tgt_mask)))
    torch.testing.assert_close(interop.to_torch(enc)(x), ref_enc(x))
    torch.testing.assert_close(interop.to_torch(dec)(y, memory, tgt_mask=to_torch_attn_mask(tgt_mask)),
                               dec(y, memory, tgt_mask))
    with pytest.raises(ValueError, match="3 layers"):
        Encoder(3, D, H, FF, norm_first=norm_first, final_norm=final_norm).double().load_torch_weights(ref_enc)


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
def test_transformer_from_and_to_torch():
    torch.manual_seed(0)
    ref = _randomize(nn.Transformer(D, H, 2, 1, FF, dropout=0.0, batch_first=True, norm_first=True,
                                    dtype=torch.float64)).eval()
    ours = interop.from_torch(ref, src_vocab_size=11, tgt_vocab_size=13)
    assert isinstance(ours, Transformer) and ours.cfg.n_encoder_layers == 2 and ours.cfg.n_decoder_layers == 1
    assert ours.out_proj.weight.dtype == torch.float64
    src, tgt = torch.randint(1, 11, (2, 6)), torch.randint(1, 13, (2, 4))
    hidden = ref(ours.embed_source(src), ours.embed_target(tgt), tgt_mask=to_torch_attn_mask(causal_mask(4)))
    torch.testing.assert_close(ours(src, tgt, tgt_mask=causal_mask(4)), ours.out_proj(hidden))
    back = ours.to_torch()
    torch.testing.assert_close(back(ours.embed_source(src), ours.embed_target(tgt),
                                    tgt_mask=to_torch_attn_mask(causal_mask(4))), hidden)
    with pytest.raises(ValueError, match="tgt_vocab_size"):
        interop.from_torch(ref, src_vocab_size=11)
    post = Transformer(TransformerConfig.tiny()).to_torch()  # post-norm: no final norms, as ours
    assert post.encoder.norm is None and post.decoder.norm is None and post.batch_first


def test_from_torch_keeps_dtype_and_device(device):
    ref = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, batch_first=True).to(device=device, dtype=torch.float64)
    ours = interop.from_torch(ref)
    assert ours.norm1.weight.dtype == torch.float64 and ours.norm1.weight.device.type == device.type
    x = torch.randn(2, 5, D, dtype=torch.float64, device=device)
    torch.testing.assert_close(ours(x), ref.eval()(x))


# --- training mode travels with the weights, in both directions, for every converter -------------------------
def _torch_modules():
    torch.manual_seed(0)
    D, H = 8, 2
    enc = nn.TransformerEncoderLayer(D, H, 16, dropout=0.5, batch_first=True)
    dec = nn.TransformerDecoderLayer(D, H, 16, dropout=0.5, batch_first=True)
    return {
        "MultiheadAttention": nn.MultiheadAttention(D, H, dropout=0.5, batch_first=True),
        "TransformerEncoderLayer": enc,
        "TransformerDecoderLayer": dec,
        "TransformerEncoder": nn.TransformerEncoder(enc, 2, enable_nested_tensor=False),
        "TransformerDecoder": nn.TransformerDecoder(dec, 2),
    }


@pytest.mark.parametrize("name", list(_torch_modules()))
@pytest.mark.parametrize("training", [True, False])
def test_from_torch_and_to_torch_keep_the_training_mode(name, training):
    theirs = _torch_modules()[name].train(training)
    ours = from_torch(theirs)
    assert ours.training == training and all(m.training == training for m in ours.modules())
    back = to_torch(ours)
    assert back.training == training


def test_transformer_from_torch_keeps_the_training_mode():
    theirs = nn.Transformer(8, 2, 1, 1, 16, dropout=0.5, batch_first=True, norm_first=True).eval()
    ours = from_torch(theirs, src_vocab_size=5, tgt_vocab_size=5, norm_first=True)
    assert not ours.training and not any(m.training for m in ours.modules())


def test_grouped_query_attention_has_no_torch_counterpart():
    ours = MultiHeadAttention(8, 2, n_kv_heads=1)
    with pytest.raises(ValueError, match="grouped-query"):
        load_torch_weights(ours, nn.MultiheadAttention(8, 2))
