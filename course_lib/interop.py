"""PyTorch interop: copy weights between course_lib's modules and ``torch.nn``'s, in one place.

Explained in chapter 03 (multi-head attention) and chapter 06 (Transformer blocks), where each course
module is shown to compute exactly what its PyTorch counterpart computes.

Three functions, each dispatching on the module's type:

* :func:`from_torch` ``(theirs) -> ours``: a new course module with the same sizes and weights;
* :func:`load_torch_weights` ``(ours, theirs)``: copy weights into an existing course module (same sizes);
* :func:`to_torch` ``(ours) -> theirs``: a new ``torch.nn`` module (``batch_first=True``) with our weights.

=====================================  =========================================
course_lib                             torch.nn
=====================================  =========================================
``attention.MultiHeadAttention``       ``nn.MultiheadAttention``
``transformer.EncoderBlock``           ``nn.TransformerEncoderLayer``
``transformer.DecoderBlock``           ``nn.TransformerDecoderLayer``
``transformer.Encoder``                ``nn.TransformerEncoder``
``transformer.Decoder``                ``nn.TransformerDecoder``
``transformer.Transformer``            ``nn.TransformerEncoder`` + ``nn.TransformerDecoder`` of ``nn.Transformer``
=====================================  =========================================

Nothing is converted into something that computes otherwise. What PyTorch's modules can hold and the
course's cannot compute raises ``ValueError`` naming the setting: ``add_bias_kv=True`` (a learned key and
value appended to every sequence), ``add_zero_attn=True`` (a zero key and value appended),
``kdim``/``vdim`` different from ``embed_dim``, biases on some projections and not others, activations
other than ReLU and exact GELU, LayerNorms without weights or with different epsilons inside one layer,
and (for :func:`to_torch`) grouped-query attention, which ``nn.MultiheadAttention`` has no way to hold.
Supported and copied: ``bias=False`` (every projection, linear layer and LayerNorm without bias),
dropout rates, ``norm_first``, ``layer_norm_eps``, a final LayerNorm on a stack (``nn.Transformer`` has one
even in post-norm). ``batch_first`` only changes PyTorch's calling convention, not its weights: our modules
are always batch first, and :func:`to_torch` returns ``batch_first=True`` modules.

PyTorch keeps the three input projections of attention stacked in ``in_proj_weight`` ``(3D, D)``
(``W_q``, ``W_k``, ``W_v`` one above the other) and ``in_proj_bias`` ``(3D,)``; ours are three
``nn.Linear``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.attention import MultiHeadAttention
from course_lib.transformer import Decoder, DecoderBlock, Encoder, EncoderBlock, Transformer, TransformerConfig

__all__ = ["from_torch", "load_torch_weights", "to_torch", "mha_from_torch"]


# --------------------------------------------------------------------------------------------------
# What PyTorch can hold that we do not compute
# --------------------------------------------------------------------------------------------------
def _check_torch_mha(mha: nn.MultiheadAttention, where: str) -> bool:
    """Raise ValueError for what ``MultiHeadAttention`` does not compute; return whether it has biases."""
    if mha.bias_k is not None or mha.bias_v is not None:
        raise ValueError(f"{where}: nn.MultiheadAttention(add_bias_kv=True) appends a learned key and value to "
                         f"every sequence; course_lib's MultiHeadAttention does not compute that")
    if mha.add_zero_attn:
        raise ValueError(f"{where}: nn.MultiheadAttention(add_zero_attn=True) appends a zero key and value to "
                         f"every sequence; course_lib's MultiHeadAttention does not compute that")
    if not mha._qkv_same_embed_dim:
        raise ValueError(f"{where}: kdim={mha.kdim} / vdim={mha.vdim} different from embed_dim={mha.embed_dim} "
                         f"are not supported (keys and values must have the query's width D)")
    in_bias, out_bias = mha.in_proj_bias is not None, mha.out_proj.bias is not None
    if in_bias != out_bias:
        raise ValueError(f"{where}: the input projections {'have' if in_bias else 'have no'} bias but the output "
                         f"projection {'has' if out_bias else 'has none'}; MultiHeadAttention(bias=...) has "
                         f"biases on all four or none")
    return in_bias


def _activation_name(layer: nn.Module, where: str) -> str:
    act = layer.activation
    if act is F.relu or isinstance(act, nn.ReLU):
        return "relu"
    if act is F.gelu or (isinstance(act, nn.GELU) and act.approximate == "none"):
        return "gelu"
    raise ValueError(f"{where}: unsupported activation {act!r} (expected relu or the exact gelu; "
                     f"nn.GELU(approximate='tanh') and others compute something else)")


def _layer_bias(layer: nn.Module, norms: tuple[str, ...], attns: tuple[str, ...], where: str) -> bool:
    """Whether every linear layer, LayerNorm and attention of ``layer`` has biases (all or none)."""
    has = {"linear1": layer.linear1.bias is not None, "linear2": layer.linear2.bias is not None}
    for name in norms:
        norm = getattr(layer, name)
        if norm.weight is None:
            raise ValueError(f"{where}: {name} has no weight (elementwise_affine=False); not supported")
        has[name] = norm.bias is not None
    for name in attns:
        has[name] = _check_torch_mha(getattr(layer, name), f"{where} ({name})")
    if len(set(has.values())) != 1:
        raise ValueError(f"{where}: biases on some parts and not others ({has}); course_lib's blocks take one "
                         f"bias=True/False for all")
    eps = {getattr(layer, name).eps for name in norms}
    if len(eps) != 1:
        raise ValueError(f"{where}: the LayerNorms have different eps {sorted(eps)}; our blocks use one layer_norm_eps")
    return next(iter(has.values()))


def _layer_dropout(layer: nn.Module, dropouts: tuple[str, ...], attns: tuple[str, ...], where: str) -> float:
    rates = {getattr(layer, name).p for name in dropouts} | {getattr(layer, name).dropout for name in attns}
    if len(rates) != 1:
        raise ValueError(f"{where}: different dropout rates inside one layer ({sorted(rates)}); our blocks use one")
    return next(iter(rates))


def _block_kwargs(layer: nn.Module, decoder: bool) -> dict:
    kind = "nn.TransformerDecoderLayer" if decoder else "nn.TransformerEncoderLayer"
    where = f"from_torch ({kind})"
    norms = ("norm1", "norm2", "norm3") if decoder else ("norm1", "norm2")
    attns = ("self_attn", "multihead_attn") if decoder else ("self_attn",)
    dropouts = ("dropout", "dropout1", "dropout2", "dropout3") if decoder else ("dropout", "dropout1", "dropout2")
    bias = _layer_bias(layer, norms, attns, where)
    return dict(d_model=layer.self_attn.embed_dim, n_heads=layer.self_attn.num_heads,
                d_ff=layer.linear1.out_features, dropout=_layer_dropout(layer, dropouts, attns, where),
                norm_first=layer.norm_first, activation=_activation_name(layer, where),
                layer_norm_eps=layer.norm1.eps, bias=bias)


def _like(module: nn.Module, ref: torch.Tensor) -> nn.Module:
    """Same dtype and device as ``ref``: no silent rounding."""
    return module.to(dtype=ref.dtype, device=ref.device)


# --------------------------------------------------------------------------------------------------
# Copying weights
# --------------------------------------------------------------------------------------------------
def _copy(ours: torch.Tensor | None, theirs: torch.Tensor | None, what: str) -> None:
    if (ours is None) != (theirs is None):
        raise ValueError(f"load_torch_weights: {what}: ours {'has no' if ours is None else 'has a'} bias, "
                         f"PyTorch's {'has none' if theirs is None else 'has one'} (build ours with bias=...)")
    if ours is None:
        return
    if ours.shape != theirs.shape:
        raise ValueError(f"load_torch_weights: {what}: expected shape {tuple(ours.shape)}, "
                         f"received {tuple(theirs.shape)}")
    ours.copy_(theirs)


def _copy_linear(ours: nn.Linear, theirs: nn.Linear, what: str) -> None:
    _copy(ours.weight, theirs.weight, f"{what}.weight")
    _copy(ours.bias, theirs.bias, f"{what}.bias")


def _copy_norm(ours: nn.LayerNorm, theirs: nn.LayerNorm, what: str) -> None:
    _copy(ours.weight, theirs.weight, f"{what}.weight")
    _copy(ours.bias, theirs.bias, f"{what}.bias")
    ours.eps = theirs.eps


@torch.no_grad()
def _load_mha(ours: MultiHeadAttention, mha: nn.MultiheadAttention) -> None:
    where = "load_torch_weights (nn.MultiheadAttention)"
    bias = _check_torch_mha(mha, where)
    if ours.n_kv_heads != ours.n_heads:
        raise ValueError(f"{where}: ours has n_kv_heads={ours.n_kv_heads} < n_heads={ours.n_heads} (grouped-query "
                         f"attention), which nn.MultiheadAttention does not have")
    if mha.embed_dim != ours.d_model or mha.num_heads != ours.n_heads:
        raise ValueError(
            f"{where}: expected embed_dim={ours.d_model}, num_heads={ours.n_heads} (n_kv_heads={ours.n_kv_heads}); "
            f"received embed_dim={mha.embed_dim}, num_heads={mha.num_heads}"
        )
    if bias != (ours.q_proj.bias is not None):
        raise ValueError(f"{where}: ours has bias={ours.q_proj.bias is not None}, PyTorch's bias={bias}")
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3, dim=0)  # each (D, D)
    ours.q_proj.weight.copy_(w_q)
    ours.k_proj.weight.copy_(w_k)
    ours.v_proj.weight.copy_(w_v)
    ours.out_proj.weight.copy_(mha.out_proj.weight)
    if bias:
        b_q, b_k, b_v = mha.in_proj_bias.chunk(3)  # each (D,)
        ours.q_proj.bias.copy_(b_q)
        ours.k_proj.bias.copy_(b_k)
        ours.v_proj.bias.copy_(b_v)
        ours.out_proj.bias.copy_(mha.out_proj.bias)
    ours.dropout = mha.dropout


@torch.no_grad()
def _load_block(ours: EncoderBlock | DecoderBlock, layer: nn.Module) -> None:
    decoder = isinstance(ours, DecoderBlock)
    kind = "nn.TransformerDecoderLayer" if decoder else "nn.TransformerEncoderLayer"
    theirs = _block_kwargs(layer, decoder)  # raises for what we do not compute
    if theirs["norm_first"] != ours.norm_first:
        raise ValueError(f"load_torch_weights ({kind}): norm_first differs: ours {ours.norm_first}, "
                         f"PyTorch's {theirs['norm_first']}")
    if theirs["activation"] != ours.ff.activation:
        raise ValueError(f"load_torch_weights ({kind}): activation differs: ours {ours.ff.activation!r}, "
                         f"PyTorch's {theirs['activation']!r}")
    _load_mha(ours.self_attn, layer.self_attn)
    if decoder:
        _load_mha(ours.cross_attn, layer.multihead_attn)
    _copy_linear(ours.ff.linear1, layer.linear1, "linear1")
    _copy_linear(ours.ff.linear2, layer.linear2, "linear2")
    for name in ("norm1", "norm2", "norm3") if decoder else ("norm1", "norm2"):
        _copy_norm(getattr(ours, name), getattr(layer, name), name)
    for name in ("dropout1", "dropout2", "dropout3") if decoder else ("dropout1", "dropout2"):
        getattr(ours, name).p = getattr(layer, name).p
    ours.ff.dropout.p = layer.dropout.p


@torch.no_grad()
def _load_stack(ours: Encoder | Decoder, theirs: nn.Module) -> None:
    what = "decoder" if isinstance(ours, Decoder) else "encoder"
    if len(ours.layers) != len(theirs.layers):
        raise ValueError(f"load_torch_weights: expected a {what} with {len(ours.layers)} layers, "
                         f"received {len(theirs.layers)}")
    if (ours.norm is None) != (theirs.norm is None):
        raise ValueError(
            f"load_torch_weights: our {what} has {'no ' if ours.norm is None else 'a '}final LayerNorm, PyTorch's "
            f"{'has one' if theirs.norm is not None else 'has none'} (nn.Transformer always adds one; set "
            f"its .{what}.norm = None to compare with a post-norm stack, or build ours with final_norm=True)"
        )
    for a, b in zip(ours.layers, theirs.layers):
        _load_block(a, b)
    if ours.norm is not None:
        _copy_norm(ours.norm, theirs.norm, f"{what}.norm")


# --------------------------------------------------------------------------------------------------
# The three public functions
# --------------------------------------------------------------------------------------------------
def mha_from_torch(mha: nn.MultiheadAttention, cls: type = MultiHeadAttention) -> MultiHeadAttention:
    """``from_torch`` for ``nn.MultiheadAttention``, building ``cls`` (a subclass of MultiHeadAttention)."""
    bias = _check_torch_mha(mha, "from_torch (nn.MultiheadAttention)")
    ours = _like(cls(mha.embed_dim, mha.num_heads, bias=bias, dropout=mha.dropout), mha.in_proj_weight)
    _load_mha(ours, mha)
    return ours.train(mha.training)


def from_torch(module: nn.Module, **config_fields) -> nn.Module:
    """A course module with the sizes, settings and weights of a ``torch.nn`` one.

    Args:
        module: ``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer``, ``nn.TransformerDecoderLayer``,
            ``nn.TransformerEncoder``, ``nn.TransformerDecoder`` or ``nn.Transformer``.
        config_fields: for ``nn.Transformer`` only, which has no embeddings: ``src_vocab_size`` and
            ``tgt_vocab_size`` (required) and other :class:`TransformerConfig` fields (``max_len``, ...).

    Returns:
        a :class:`MultiHeadAttention`, :class:`EncoderBlock`, :class:`DecoderBlock`, :class:`Encoder`,
        :class:`Decoder` or :class:`Transformer` (new embeddings, PyTorch's stacks), with the same dtype,
        device and training mode as ``module`` (dropout on or off as there).

    Raises:
        ValueError: for settings we do not compute (see the module docstring) and other module types.
    """
    if isinstance(module, nn.MultiheadAttention):
        return mha_from_torch(module)
    if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        decoder = isinstance(module, nn.TransformerDecoderLayer)
        block = (DecoderBlock if decoder else EncoderBlock)(**_block_kwargs(module, decoder))
        block = _like(block, module.linear1.weight)
        _load_block(block, module)
        return block.train(module.training)
    if isinstance(module, (nn.TransformerEncoder, nn.TransformerDecoder)):
        decoder = isinstance(module, nn.TransformerDecoder)
        if len(module.layers) == 0:
            raise ValueError("from_torch: the stack has no layers")
        kwargs = _block_kwargs(module.layers[0], decoder)
        stack = (Decoder if decoder else Encoder)(len(module.layers), **kwargs, final_norm=module.norm is not None)
        stack = _like(stack, module.layers[0].linear1.weight)
        _load_stack(stack, module)
        return stack.train(module.training)
    if isinstance(module, nn.Transformer):
        missing = {"src_vocab_size", "tgt_vocab_size"} - set(config_fields)
        if missing:
            raise ValueError(f"from_torch (nn.Transformer): it has no embeddings; give {sorted(missing)}")
        enc = _block_kwargs(module.encoder.layers[0], decoder=False)
        if not enc.pop("bias"):
            raise ValueError("from_torch (nn.Transformer): bias=False is not supported by TransformerConfig; "
                             "use from_torch on the encoder and decoder stacks")
        cfg = TransformerConfig(**{**enc, "n_encoder_layers": len(module.encoder.layers),
                                   "n_decoder_layers": len(module.decoder.layers), **config_fields})
        model = _like(Transformer(cfg), module.encoder.layers[0].linear1.weight)
        load_torch_weights(model, module)
        return model.train(module.training)
    raise ValueError(f"from_torch: no course_lib counterpart for {type(module).__name__} (expected "
                     f"nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, "
                     f"nn.TransformerEncoder, nn.TransformerDecoder or nn.Transformer)")


def load_torch_weights(ours: nn.Module, theirs: nn.Module) -> None:
    """Copy the weights of a ``torch.nn`` module into the matching course module, in place.

    Pairs: ``MultiHeadAttention`` <- ``nn.MultiheadAttention``; ``EncoderBlock`` <-
    ``nn.TransformerEncoderLayer``; ``DecoderBlock`` <- ``nn.TransformerDecoderLayer`` (its
    ``multihead_attn`` is our ``cross_attn``); ``Encoder`` / ``Decoder`` <- ``nn.TransformerEncoder`` /
    ``nn.TransformerDecoder`` (final norms must match); ``Transformer`` <- ``nn.Transformer`` (the two
    stacks; embeddings and output projection keep their values). Dropout rates and LayerNorm eps are copied.

    Raises:
        ValueError: for other pairs, different sizes, biases present on one side only, and settings we do not
        compute (see the module docstring).
    """
    pairs = (
        (MultiHeadAttention, nn.MultiheadAttention, _load_mha),
        (EncoderBlock, nn.TransformerEncoderLayer, _load_block),
        (DecoderBlock, nn.TransformerDecoderLayer, _load_block),
        (Encoder, nn.TransformerEncoder, _load_stack),
        (Decoder, nn.TransformerDecoder, _load_stack),
    )
    for our_type, their_type, load in pairs:
        if isinstance(ours, our_type):
            if not isinstance(theirs, their_type):
                raise ValueError(f"load_torch_weights: {our_type.__name__} takes the weights of "
                                 f"nn.{their_type.__name__}, received {type(theirs).__name__}")
            load(ours, theirs)
            return
    if isinstance(ours, Transformer):
        if not isinstance(theirs, nn.Transformer):
            raise ValueError(f"load_torch_weights: Transformer takes the weights of nn.Transformer, "
                             f"received {type(theirs).__name__}")
        _load_stack(ours.encoder, theirs.encoder)
        _load_stack(ours.decoder, theirs.decoder)
        return
    raise ValueError(f"load_torch_weights: no PyTorch counterpart for {type(ours).__name__}")


@torch.no_grad()
def _mha_to_torch(ours: MultiHeadAttention) -> nn.MultiheadAttention:
    if ours.n_kv_heads != ours.n_heads:
        raise ValueError(f"to_torch: nn.MultiheadAttention has no grouped-query attention "
                         f"(n_kv_heads={ours.n_kv_heads}, n_heads={ours.n_heads})")
    bias = ours.q_proj.bias is not None
    theirs = _like(nn.MultiheadAttention(ours.d_model, ours.n_heads, dropout=ours.dropout, bias=bias,
                                         batch_first=True), ours.q_proj.weight)
    _fill_torch_mha(theirs, ours)
    return theirs.train(ours.training)


@torch.no_grad()
def _fill_torch_mha(theirs: nn.MultiheadAttention, ours: MultiHeadAttention) -> None:
    """Stack our W_q, W_k, W_v into PyTorch's ``in_proj_weight`` (3D, D); copy the output projection."""
    if ours.n_kv_heads != ours.n_heads:
        raise ValueError(f"to_torch: nn.MultiheadAttention has no grouped-query attention "
                         f"(n_kv_heads={ours.n_kv_heads}, n_heads={ours.n_heads})")
    theirs.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))  # (3D, D)
    theirs.out_proj.weight.copy_(ours.out_proj.weight)
    if ours.q_proj.bias is not None:
        theirs.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))  # (3D,)
        theirs.out_proj.bias.copy_(ours.out_proj.bias)
    theirs.dropout = ours.dropout


def _block_settings(block: EncoderBlock | DecoderBlock) -> dict:
    return dict(d_model=block.d_model, nhead=block.self_attn.n_heads, dim_feedforward=block.ff.linear1.out_features,
                dropout=block.dropout1.p, activation=block.ff.activation, layer_norm_eps=block.norm1.eps,
                batch_first=True, norm_first=block.norm_first, bias=block.ff.linear1.bias is not None)


@torch.no_grad()
def _fill_torch_block(theirs: nn.Module, ours: EncoderBlock | DecoderBlock) -> None:
    decoder = isinstance(ours, DecoderBlock)
    _fill_torch_mha(theirs.self_attn, ours.self_attn)
    if decoder:
        _fill_torch_mha(theirs.multihead_attn, ours.cross_attn)
    names = ["linear1", "linear2", "norm1", "norm2"] + (["norm3"] if decoder else [])
    for name in names:
        our_part = getattr(ours.ff, name) if name.startswith("linear") else getattr(ours, name)
        getattr(theirs, name).load_state_dict(our_part.state_dict())


def _block_to_torch(ours: EncoderBlock | DecoderBlock) -> nn.Module:
    cls = nn.TransformerDecoderLayer if isinstance(ours, DecoderBlock) else nn.TransformerEncoderLayer
    theirs = _like(cls(**_block_settings(ours)), ours.norm1.weight)
    _fill_torch_block(theirs, ours)
    return theirs.train(ours.training)


def _stack_to_torch(ours: Encoder | Decoder) -> nn.Module:
    decoder = isinstance(ours, Decoder)
    settings = _block_settings(ours.layers[0])
    layer = (nn.TransformerDecoderLayer if decoder else nn.TransformerEncoderLayer)(**settings)
    norm = None
    if ours.norm is not None:
        norm = nn.LayerNorm(settings["d_model"], eps=ours.norm.eps, bias=ours.norm.bias is not None)
        norm.load_state_dict(ours.norm.state_dict())
    if decoder:
        theirs = nn.TransformerDecoder(layer, len(ours.layers), norm=norm)
    else:
        theirs = nn.TransformerEncoder(layer, len(ours.layers), norm=norm, enable_nested_tensor=False)
    theirs = _like(theirs, ours.layers[0].norm1.weight)
    for a, b in zip(theirs.layers, ours.layers):
        _fill_torch_block(a, b)
    return theirs.train(ours.training)


def to_torch(ours: nn.Module) -> nn.Module:
    """A new ``torch.nn`` module (``batch_first=True``) computing what ``ours`` computes, with its weights.

    ``MultiHeadAttention`` -> ``nn.MultiheadAttention``; ``EncoderBlock`` / ``DecoderBlock`` ->
    ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer``; ``Encoder`` / ``Decoder`` ->
    ``nn.TransformerEncoder`` / ``nn.TransformerDecoder``; ``Transformer`` -> ``nn.Transformer`` (its
    stacks only: PyTorch has no embeddings; in post-norm its final norms are set to None, as ours have
    none). Same dtype, device and training mode as ``ours``.

    Raises:
        ValueError: for grouped-query attention (``n_kv_heads < n_heads``) and modules with no counterpart.
    """
    if isinstance(ours, MultiHeadAttention):
        return _mha_to_torch(ours)
    if isinstance(ours, (EncoderBlock, DecoderBlock)):
        return _block_to_torch(ours)
    if isinstance(ours, (Encoder, Decoder)):
        return _stack_to_torch(ours)
    if isinstance(ours, Transformer):
        cfg = ours.cfg
        theirs = nn.Transformer(cfg.d_model, cfg.n_heads, cfg.n_encoder_layers, cfg.n_decoder_layers, cfg.d_ff,
                                dropout=cfg.dropout, activation=cfg.activation, layer_norm_eps=cfg.layer_norm_eps,
                                batch_first=True, norm_first=cfg.norm_first)
        theirs.encoder, theirs.decoder = _stack_to_torch(ours.encoder), _stack_to_torch(ours.decoder)
        return _like(theirs, ours.out_proj.weight).train(ours.training)
    raise ValueError(f"to_torch: no PyTorch counterpart for {type(ours).__name__}")
