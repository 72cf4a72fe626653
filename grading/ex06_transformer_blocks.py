"""Trusted grading spec for ex06 (Transformer blocks): probes compute an answer's outputs on fixed inputs.

Each probe mirrors the visible and hidden tests of the graded cell it is named after: both norm placements, padding and
causal masks, cross-attention with T != S, a batch of one; for the attention, also key and value left out, queries
whose keys are all masked (zeros, not NaN) and bias=False. Weights are set from fixed seeds through the attribute
names that the notebook's __init__ methods define; nothing here computes the expected answer.
"""
import torch

ANSWERS = ["MultiHeadAttention", "EncoderBlock", "DecoderBlock"]
FORBIDDEN = [
    "MultiheadAttention", "multi_head_attention_forward", "scaled_dot_product_attention",
    "TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder", "TransformerDecoder", "Transformer",
    "course_lib",
]
TOLERANCE = {"atol": 1e-6, "rtol": 1e-5}

_ATTN = ("q_proj", "k_proj", "v_proj", "out_proj")


def _randn(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _fill(module, names, g):
    """Set the weight and bias of each named sub-module (dotted paths) from the generator, in a fixed order."""
    for name in names:
        sub = module
        for part in name.split("."):
            sub = sub._modules[part]
        scale = 1.0 if "norm" in name else sub.weight.shape[-1] ** -0.5
        base = 1.0 if "norm" in name else 0.0
        sub.weight.copy_(base + scale * _randn(g, *sub.weight.shape))
        if sub.bias is not None:  # bias=False
            sub.bias.copy_(0.1 * _randn(g, *sub.bias.shape))
    return module


def _attention(ns, D, H, seed, bias=True):
    mha = ns["MultiHeadAttention"](D, H, bias=bias).double()
    return _fill(mha, _ATTN, torch.Generator().manual_seed(seed))


def _encoder(ns, norm_first, seed, D=16, H=4, d_ff=32):
    block = ns["EncoderBlock"](D, H, d_ff, norm_first=norm_first).double()
    names = [f"self_attn.{n}" for n in _ATTN] + ["linear1", "linear2", "norm1", "norm2"]
    return _fill(block, names, torch.Generator().manual_seed(seed))


def _decoder(ns, norm_first, seed, D=16, H=4, d_ff=32):
    block = ns["DecoderBlock"](D, H, d_ff, norm_first=norm_first).double()
    names = ([f"self_attn.{n}" for n in _ATTN] + [f"cross_attn.{n}" for n in _ATTN]
             + ["linear1", "linear2", "norm1", "norm2", "norm3"])
    return _fill(block, names, torch.Generator().manual_seed(seed))


def _padding(lengths, S):
    return (torch.arange(S)[None, :] < torch.tensor(lengths)[:, None])[:, None, None, :]  # (B, 1, 1, S)


def _causal(T):
    return torch.ones(T, T, dtype=torch.bool).tril()


def probe_test_attention(ns):
    g = torch.Generator().manual_seed(20)
    mha = _attention(ns, 8, 2, seed=1)
    x = _randn(g, 2, 5, 8)
    mha3 = _attention(ns, 12, 3, seed=2)
    q, kv = _randn(g, 3, 4, 12), _randn(g, 3, 7, 12)
    pad = _padding([7, 5, 2], 7)
    both = _causal(4) & _padding([4, 3, 1], 4)
    mha1 = _attention(ns, 4, 1, seed=3)
    x1 = _randn(g, 1, 3, 4)
    mha0 = _attention(ns, 8, 2, seed=4, bias=False)
    empty = _padding([7, 0, 2], 7)  # the second source is all padding: its queries attend to nothing
    return {
        "self": mha(x, x, x),
        "cross_t4_s7_padding": mha3(q, kv, kv, mask=pad),
        "self_causal_padding": mha3(q, q, q, mask=both),
        "key_value_default_to_query": mha3(q, mask=both),
        "value_defaults_to_key": mha3(q, kv),
        "fully_masked_rows": mha3(q, kv, kv, mask=empty),
        "batch_of_one_one_head": mha1(x1, x1, x1),
        "no_bias": mha0(x, x, x),
    }


def _probe_encoder(ns, norm_first, seed):
    g = torch.Generator().manual_seed(seed + 100)
    block = _encoder(ns, norm_first, seed)
    x = _randn(g, 3, 6, 16)
    pad = _padding([6, 4, 1], 6)
    return {
        "no_mask": block(x),
        "padding": block(x, mask=pad),
        "causal_padding": block(x, mask=_causal(6) & pad),
        "batch_of_one": block(x[:1]),
        "batch_of_one_padded": block(x[2:3], mask=pad[2:3]),
    }


def probe_test_encoder_post_norm(ns):
    return _probe_encoder(ns, norm_first=False, seed=3)


def probe_test_encoder_pre_norm(ns):
    return _probe_encoder(ns, norm_first=True, seed=5)


def _probe_decoder(ns, norm_first, seed):
    g = torch.Generator().manual_seed(seed + 100)
    block = _decoder(ns, norm_first, seed)
    y, memory = _randn(g, 3, 5, 16), _randn(g, 3, 7, 16)
    tgt_pad, src_pad = _padding([5, 3, 2], 5), _padding([7, 7, 4], 7)
    return {
        "no_masks_t5_s7": block(y, memory),
        "causal": block(y, memory, self_mask=_causal(5)),
        "causal_padding_padded_memory": block(y, memory, self_mask=_causal(5) & tgt_pad, cross_mask=src_pad),
        "t5_gt_s3": block(y, memory[:, :3]),
        "batch_of_one_t1": block(y[:1, :1], memory[:1]),
        "batch_of_one_padded_memory": block(y[2:], memory[2:], cross_mask=src_pad[2:]),
    }


def probe_test_decoder_post_norm(ns):
    return _probe_decoder(ns, norm_first=False, seed=7)


def probe_test_decoder_pre_norm(ns):
    return _probe_decoder(ns, norm_first=True, seed=9)


PROBES = {
    "test_attention": probe_test_attention,
    "test_encoder_post_norm": probe_test_encoder_post_norm,
    "test_encoder_pre_norm": probe_test_encoder_pre_norm,
    "test_decoder_post_norm": probe_test_decoder_post_norm,
    "test_decoder_pre_norm": probe_test_decoder_pre_norm,
}
