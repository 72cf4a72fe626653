"""The encoder-decoder Transformer, block by block.

Explained in chapter 06 (blocks, data flow and shapes); used by chapters 07-10.
Paper: Vaswani et al., "Attention Is All You Need", 2017, section 3.1 and figure 1.

Read top to bottom:

* :class:`TransformerConfig`: the sizes, with presets ``tiny()`` (tests) and ``base()`` (the paper).
* :class:`FeedForward`: ``Linear(D, d_ff) -> ReLU -> Linear(d_ff, D)``, applied to each position alone.
* :class:`EncoderBlock`: self-attention, then feed-forward, each wrapped in a residual connection and a
  layer norm ("add & norm").
* :class:`DecoderBlock`: masked self-attention, cross-attention (queries from the decoder, keys and values
  from the encoder's output, the *memory*), then feed-forward, each with add & norm.
* :class:`Encoder`, :class:`Decoder`: stacks of ``L`` blocks.
* :class:`Transformer`: token embeddings (times ``sqrt(D)``), positions (the sinusoidal table of
  :func:`course_lib.positional.sinusoidal_encoding`, or a learned table), the two stacks and the output
  projection to ``V`` logits.

Where the layer norm goes (``TransformerConfig.norm_first``)
-------------------------------------------------------------
*Post-norm* (``norm_first=False``, the paper): ``x = LayerNorm(x + sublayer(x))``. The norm sits on the
residual path itself, so every block's output has unit scale, but the gradient must pass through ``L``
layer norms on its way down; deep post-norm stacks need a learning-rate warm-up to train.

*Pre-norm* (``norm_first=True``, GPT-2 and most later models): ``x = x + sublayer(LayerNorm(x))``. The
residual path is a clean sum from the embeddings to the top, so gradients reach the bottom unchanged and
deep stacks train without warm-up (Xiong et al., 2020). Because nothing normalises that sum, the stack
ends with one extra LayerNorm (:class:`Encoder` and :class:`Decoder` add it only when ``norm_first``).

Masks follow :mod:`course_lib.masks` (boolean, True = may attend) and are always explicit arguments:
nothing here builds a causal mask for you, and nothing depends on ``self.training`` except dropout.

Compared with ``torch.nn``: :class:`EncoderBlock` and :class:`DecoderBlock` compute exactly what
``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer`` (``batch_first=True``) compute, and
``load_torch_weights`` copies their weights. ``nn.Transformer`` always ends its encoder and decoder with a
LayerNorm, even in post-norm mode, where the paper has none; our stacks have it only for pre-norm.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.attention import MultiHeadAttention
from course_lib.positional import sinusoidal_encoding

__all__ = [
    "TransformerConfig",
    "FeedForward",
    "EncoderBlock",
    "DecoderBlock",
    "Encoder",
    "Decoder",
    "Transformer",
]


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TransformerConfig:
    """Sizes and choices of an encoder-decoder Transformer."""

    src_vocab_size: int  # V_src: number of source tokens (encoder input)
    tgt_vocab_size: int  # V: number of target tokens (decoder input and output logits)
    d_model: int  # D: width of every vector between blocks (512 in the paper)
    n_heads: int  # H: attention heads per attention layer; Dh = D // H
    d_ff: int  # inner width of the feed-forward layer (2048 = 4 D in the paper)
    n_encoder_layers: int  # L_enc: encoder blocks (6 in the paper)
    n_decoder_layers: int  # L_dec: decoder blocks (6 in the paper)
    dropout: float = 0.0  # dropout on sub-layer outputs, embeddings + positions and FF hidden (0.1 in the paper)
    max_len: int = 512  # longest sequence the position table covers
    norm_first: bool = False  # False: post-norm, LayerNorm(x + f(x)) as in the paper; True: pre-norm, x + f(LayerNorm(x))
    tie_embeddings: bool = False  # share the target embedding matrix with the output projection
    share_src_tgt_embeddings: bool = False  # one embedding matrix for source and target (needs equal vocabularies)
    positional: str = "sinusoidal"  # "sinusoidal" (fixed, the paper) or "learned" (a trained table)
    pad_id: int = 0  # id of the padding token (used by the mask helpers, not here)
    activation: str = "relu"  # feed-forward non-linearity: "relu" (the paper) or "gelu"
    layer_norm_eps: float = 1e-5  # epsilon of every LayerNorm (PyTorch's default)

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"TransformerConfig: d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.positional not in ("sinusoidal", "learned"):
            raise ValueError(f"TransformerConfig: positional must be 'sinusoidal' or 'learned', got {self.positional!r}")
        if self.activation not in ("relu", "gelu"):
            raise ValueError(f"TransformerConfig: activation must be 'relu' or 'gelu', got {self.activation!r}")
        if self.share_src_tgt_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ValueError(
                "TransformerConfig: share_src_tgt_embeddings needs src_vocab_size == tgt_vocab_size, got "
                f"{self.src_vocab_size} and {self.tgt_vocab_size}"
            )

    @property
    def d_head(self) -> int:
        """Dh, the width of one head."""
        return self.d_model // self.n_heads

    @classmethod
    def tiny(cls, **overrides) -> "TransformerConfig":
        """A model small enough for tests: V=20, D=32, H=4, d_ff=64, 2 + 2 layers."""
        base = dict(src_vocab_size=20, tgt_vocab_size=20, d_model=32, n_heads=4, d_ff=64,
                    n_encoder_layers=2, n_decoder_layers=2, max_len=64)
        return cls(**{**base, **overrides})

    @classmethod
    def base(cls, **overrides) -> "TransformerConfig":
        """The paper's base model (table 3): D=512, H=8, d_ff=2048, 6 + 6 layers, dropout 0.1.

        One shared vocabulary of 37000 byte-pair tokens (English-German), and one matrix shared by the source
        embedding, the target embedding and the output projection (paper, section 3.4).
        """
        base = dict(src_vocab_size=37000, tgt_vocab_size=37000, d_model=512, n_heads=8, d_ff=2048,
                    n_encoder_layers=6, n_decoder_layers=6, dropout=0.1, max_len=512,
                    tie_embeddings=True, share_src_tgt_embeddings=True)
        return cls(**{**base, **overrides})

    def replace(self, **changes) -> "TransformerConfig":
        """A copy with some fields changed (the config itself is frozen)."""
        return replace(self, **changes)


def _block_config(d_model: int, n_heads: int, d_ff: int, norm_first: bool, activation: str,
                  layer_norm_eps: float) -> TransformerConfig:
    """A config for building one block (vocabulary and depth do not matter there)."""
    return TransformerConfig(src_vocab_size=1, tgt_vocab_size=1, d_model=d_model, n_heads=n_heads, d_ff=d_ff,
                             n_encoder_layers=1, n_decoder_layers=1, norm_first=norm_first,
                             activation=activation, layer_norm_eps=layer_norm_eps)


def _torch_activation_name(layer: nn.Module) -> str:
    act = layer.activation
    if act is F.relu or isinstance(act, nn.ReLU):
        return "relu"
    if act is F.gelu or (isinstance(act, nn.GELU) and act.approximate == "none"):
        return "gelu"
    raise ValueError(f"load_torch_weights: unsupported activation {act!r} (expected relu or gelu)")


def _check_d(name: str, x: torch.Tensor, d_model: int, what: str = "(B, L, D)") -> None:
    if x.dim() != 3 or x.shape[-1] != d_model:
        raise ValueError(f"{name}: expected shape {what} with D={d_model}, received {tuple(x.shape)}")


# --------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------
class FeedForward(nn.Module):
    """Position-wise feed-forward layer: ``linear2(dropout(act(linear1(x))))``.

    Each position goes through the same two-layer MLP on its own: no information moves between positions
    here (that is attention's job).

    Shape:
        ``(B, L, D)`` -> ``(B, L, D)``; hidden ``(B, L, d_ff)``.
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.linear1 = nn.Linear(cfg.d_model, cfg.d_ff)
        self.linear2 = nn.Linear(cfg.d_ff, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.activation = cfg.activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear1(x)  # (B, L, d_ff)
        h = F.relu(h) if self.activation == "relu" else F.gelu(h)
        return self.linear2(self.dropout(h))  # (B, L, D)


class EncoderBlock(nn.Module):
    """One encoder block: self-attention, then feed-forward, each with a residual connection and a LayerNorm.

    Post-norm (``cfg.norm_first=False``, the paper)::

        x = norm1(x + dropout(self_attn(x, x, x, mask)))
        x = norm2(x + dropout(ff(x)))

    Pre-norm (``cfg.norm_first=True``)::

        x = x + dropout(self_attn(norm1(x), mask=mask))
        x = x + dropout(ff(norm2(x)))

    Args:
        cfg: the sizes; uses ``d_model``, ``n_heads``, ``d_ff``, ``dropout``, ``norm_first``,
            ``activation``, ``layer_norm_eps``.

    Shape:
        ``x`` ``(B, S, D)``; ``mask`` boolean, True = may attend, broadcastable to ``(B, H, S, S)``
        (a padding mask ``(B, 1, 1, S)``); returns ``(B, S, D)``.

    Equals ``nn.TransformerEncoderLayer(D, H, d_ff, dropout, batch_first=True, norm_first=...)`` with the
    same weights (see :meth:`load_torch_weights`).
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.d_model, self.norm_first = cfg.d_model, cfg.norm_first
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads)
        self.ff = FeedForward(cfg)
        self.norm1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.norm2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.dropout1 = nn.Dropout(cfg.dropout)
        self.dropout2 = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        _check_d("EncoderBlock", x, self.d_model, "(B, S, D)")
        if self.norm_first:
            h = self.norm1(x)
            x = x + self.dropout1(self.self_attn(h, mask=mask))  # (B, S, D)
            x = x + self.dropout2(self.ff(self.norm2(x)))  # (B, S, D)
        else:
            x = self.norm1(x + self.dropout1(self.self_attn(x, mask=mask)))  # (B, S, D)
            x = self.norm2(x + self.dropout2(self.ff(x)))  # (B, S, D)
        return x

    @classmethod
    def from_torch(cls, layer: nn.TransformerEncoderLayer) -> "EncoderBlock":
        """Build a block with the same sizes and weights as a (``batch_first``) ``nn.TransformerEncoderLayer``."""
        cfg = _block_config(layer.self_attn.embed_dim, layer.self_attn.num_heads, layer.linear1.out_features,
                            layer.norm_first, _torch_activation_name(layer), layer.norm1.eps)
        block = cls(cfg).to(dtype=layer.linear1.weight.dtype, device=layer.linear1.weight.device)
        block.load_torch_weights(layer)
        return block

    @torch.no_grad()
    def load_torch_weights(self, layer: nn.TransformerEncoderLayer) -> None:
        """Copy the weights of an ``nn.TransformerEncoderLayer`` into this block (same sizes required)."""
        if layer.norm_first != self.norm_first:
            raise ValueError(f"load_torch_weights: norm_first differs: ours {self.norm_first}, "
                             f"PyTorch's {layer.norm_first}")
        self.self_attn.load_torch_weights(layer.self_attn)
        _copy_linear(self.ff.linear1, layer.linear1)
        _copy_linear(self.ff.linear2, layer.linear2)
        _copy_norm(self.norm1, layer.norm1)
        _copy_norm(self.norm2, layer.norm2)

    @torch.no_grad()
    def to_torch(self) -> nn.TransformerEncoderLayer:
        """An ``nn.TransformerEncoderLayer`` (``batch_first=True``) with this block's weights, for comparisons."""
        attn = self.self_attn
        layer = nn.TransformerEncoderLayer(
            self.d_model, attn.n_heads, self.ff.linear1.out_features, dropout=self.dropout1.p,
            activation=self.ff.activation, layer_norm_eps=self.norm1.eps, batch_first=True,
            norm_first=self.norm_first,
        ).to(dtype=self.norm1.weight.dtype, device=self.norm1.weight.device)
        _copy_mha_to_torch(layer.self_attn, attn)
        for theirs, ours in ((layer.linear1, self.ff.linear1), (layer.linear2, self.ff.linear2),
                             (layer.norm1, self.norm1), (layer.norm2, self.norm2)):
            theirs.load_state_dict(ours.state_dict())
        return layer.train(self.training)


class DecoderBlock(nn.Module):
    """One decoder block: masked self-attention, cross-attention, feed-forward, each with add & norm.

    * Self-attention: queries, keys and values are all computed from the decoder's own input ``y``
      (with a causal mask in training, so position ``t`` sees only ``0..t``).
    * Cross-attention: queries come from the decoder (``y``), keys and values from the encoder's output
      ``memory``. This is where the source sentence enters the decoder, and the only place.
    * Feed-forward: as in the encoder.

    Post-norm (``cfg.norm_first=False``, the paper)::

        y = norm1(y + dropout(self_attn(y, y, y, self_mask)))
        y = norm2(y + dropout(cross_attn(y, memory, memory, cross_mask)))
        y = norm3(y + dropout(ff(y)))

    Pre-norm (``cfg.norm_first=True``)::

        y = y + dropout(self_attn(norm1(y), mask=self_mask))
        y = y + dropout(cross_attn(norm2(y), memory, memory, cross_mask))
        y = y + dropout(ff(norm3(y)))

    (In pre-norm, ``memory`` is not normalised here: the encoder's final LayerNorm already did it.)

    Shape:
        ``y`` ``(B, T, D)``, ``memory`` ``(B, S, D)``; ``self_mask`` broadcastable to ``(B, H, T, T)``;
        ``cross_mask`` broadcastable to ``(B, H, T, S)`` (usually the source padding mask
        ``(B, 1, 1, S)``); returns ``(B, T, D)``.

    Equals ``nn.TransformerDecoderLayer(..., batch_first=True, norm_first=...)`` with the same weights.
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.d_model, self.norm_first = cfg.d_model, cfg.norm_first
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads)
        self.ff = FeedForward(cfg)
        self.norm1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.norm2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.norm3 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.dropout1 = nn.Dropout(cfg.dropout)
        self.dropout2 = nn.Dropout(cfg.dropout)
        self.dropout3 = nn.Dropout(cfg.dropout)

    def forward(
        self,
        y: torch.Tensor,
        memory: torch.Tensor,
        self_mask: torch.Tensor | None = None,
        cross_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        _check_d("DecoderBlock (y)", y, self.d_model, "(B, T, D)")
        _check_d("DecoderBlock (memory)", memory, self.d_model, "(B, S, D)")
        if memory.shape[0] != y.shape[0]:
            raise ValueError(f"DecoderBlock: y {tuple(y.shape)} and memory {tuple(memory.shape)} "
                             "must have the same batch size B")
        if self.norm_first:
            y = y + self.dropout1(self.self_attn(self.norm1(y), mask=self_mask))  # (B, T, D)
            y = y + self.dropout2(self.cross_attn(self.norm2(y), memory, memory, mask=cross_mask))  # (B, T, D)
            y = y + self.dropout3(self.ff(self.norm3(y)))  # (B, T, D)
        else:
            y = self.norm1(y + self.dropout1(self.self_attn(y, mask=self_mask)))  # (B, T, D)
            y = self.norm2(y + self.dropout2(self.cross_attn(y, memory, memory, mask=cross_mask)))  # (B, T, D)
            y = self.norm3(y + self.dropout3(self.ff(y)))  # (B, T, D)
        return y

    @classmethod
    def from_torch(cls, layer: nn.TransformerDecoderLayer) -> "DecoderBlock":
        """Build a block with the same sizes and weights as a (``batch_first``) ``nn.TransformerDecoderLayer``."""
        cfg = _block_config(layer.self_attn.embed_dim, layer.self_attn.num_heads, layer.linear1.out_features,
                            layer.norm_first, _torch_activation_name(layer), layer.norm1.eps)
        block = cls(cfg).to(dtype=layer.linear1.weight.dtype, device=layer.linear1.weight.device)
        block.load_torch_weights(layer)
        return block

    @torch.no_grad()
    def load_torch_weights(self, layer: nn.TransformerDecoderLayer) -> None:
        """Copy the weights of an ``nn.TransformerDecoderLayer`` (its ``multihead_attn`` is our ``cross_attn``)."""
        if layer.norm_first != self.norm_first:
            raise ValueError(f"load_torch_weights: norm_first differs: ours {self.norm_first}, "
                             f"PyTorch's {layer.norm_first}")
        self.self_attn.load_torch_weights(layer.self_attn)
        self.cross_attn.load_torch_weights(layer.multihead_attn)
        _copy_linear(self.ff.linear1, layer.linear1)
        _copy_linear(self.ff.linear2, layer.linear2)
        _copy_norm(self.norm1, layer.norm1)
        _copy_norm(self.norm2, layer.norm2)
        _copy_norm(self.norm3, layer.norm3)

    @torch.no_grad()
    def to_torch(self) -> nn.TransformerDecoderLayer:
        """An ``nn.TransformerDecoderLayer`` (``batch_first=True``) with this block's weights, for comparisons."""
        layer = nn.TransformerDecoderLayer(
            self.d_model, self.self_attn.n_heads, self.ff.linear1.out_features, dropout=self.dropout1.p,
            activation=self.ff.activation, layer_norm_eps=self.norm1.eps, batch_first=True,
            norm_first=self.norm_first,
        ).to(dtype=self.norm1.weight.dtype, device=self.norm1.weight.device)
        _copy_mha_to_torch(layer.self_attn, self.self_attn)
        _copy_mha_to_torch(layer.multihead_attn, self.cross_attn)
        for theirs, ours in ((layer.linear1, self.ff.linear1), (layer.linear2, self.ff.linear2),
                             (layer.norm1, self.norm1), (layer.norm2, self.norm2), (layer.norm3, self.norm3)):
            theirs.load_state_dict(ours.state_dict())
        return layer.train(self.training)


def _copy_mha_to_torch(theirs: nn.MultiheadAttention, ours: MultiHeadAttention) -> None:
    """Stack our W_q, W_k, W_v into PyTorch's ``in_proj_weight`` (3D, D); copy the output projection."""
    theirs.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
    theirs.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
    theirs.out_proj.weight.copy_(ours.out_proj.weight)
    theirs.out_proj.bias.copy_(ours.out_proj.bias)


def _copy_linear(ours: nn.Linear, theirs: nn.Linear) -> None:
    if ours.weight.shape != theirs.weight.shape:
        raise ValueError(f"load_torch_weights: expected a Linear weight of shape {tuple(ours.weight.shape)}, "
                         f"received {tuple(theirs.weight.shape)}")
    ours.weight.copy_(theirs.weight)
    ours.bias.copy_(theirs.bias)


def _copy_norm(ours: nn.LayerNorm, theirs: nn.LayerNorm) -> None:
    if ours.weight.shape != theirs.weight.shape:
        raise ValueError(f"load_torch_weights: expected a LayerNorm of shape {tuple(ours.weight.shape)}, "
                         f"received {tuple(theirs.weight.shape)}")
    ours.weight.copy_(theirs.weight)
    ours.bias.copy_(theirs.bias)
    ours.eps = theirs.eps


# --------------------------------------------------------------------------------------------------
# Stacks
# --------------------------------------------------------------------------------------------------
class Encoder(nn.Module):
    """``L_enc`` encoder blocks, one after the other; a final LayerNorm only for pre-norm.

    Shape:
        ``x`` ``(B, S, D)`` (embedded source), ``mask`` broadcastable to ``(B, H, S, S)``; returns the
        *memory* ``(B, S, D)`` that every decoder block's cross-attention reads.

    Equals ``nn.TransformerEncoder(layer, L, norm=LayerNorm(D) if norm_first else None)``.
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.layers = nn.ModuleList([EncoderBlock(cfg) for _ in range(cfg.n_encoder_layers)])
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps) if cfg.norm_first else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask=mask)  # (B, S, D)
        return x if self.norm is None else self.norm(x)

    @torch.no_grad()
    def load_torch_weights(self, encoder: nn.TransformerEncoder) -> None:
        """Copy an ``nn.TransformerEncoder``'s layers (and its final norm, which must match ours)."""
        _load_stack(self, encoder, "encoder")


class Decoder(nn.Module):
    """``L_dec`` decoder blocks, each reading the same ``memory``; a final LayerNorm only for pre-norm.

    Shape:
        ``y`` ``(B, T, D)`` (embedded target), ``memory`` ``(B, S, D)``; masks as in :class:`DecoderBlock`;
        returns ``(B, T, D)``.

    Equals ``nn.TransformerDecoder(layer, L, norm=LayerNorm(D) if norm_first else None)``.
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.layers = nn.ModuleList([DecoderBlock(cfg) for _ in range(cfg.n_decoder_layers)])
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps) if cfg.norm_first else None

    def forward(
        self,
        y: torch.Tensor,
        memory: torch.Tensor,
        self_mask: torch.Tensor | None = None,
        cross_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        for layer in self.layers:
            y = layer(y, memory, self_mask=self_mask, cross_mask=cross_mask)  # (B, T, D)
        return y if self.norm is None else self.norm(y)

    @torch.no_grad()
    def load_torch_weights(self, decoder: nn.TransformerDecoder) -> None:
        """Copy an ``nn.TransformerDecoder``'s layers (and its final norm, which must match ours)."""
        _load_stack(self, decoder, "decoder")


def _load_stack(ours: nn.Module, theirs: nn.Module, what: str) -> None:
    if len(ours.layers) != len(theirs.layers):
        raise ValueError(f"load_torch_weights: expected a {what} with {len(ours.layers)} layers, "
                         f"received {len(theirs.layers)}")
    if (ours.norm is None) != (theirs.norm is None):
        raise ValueError(
            f"load_torch_weights: our {what} has {'no ' if ours.norm is None else 'a '}final LayerNorm, PyTorch's "
            f"{'has one' if theirs.norm is not None else 'has none'} (nn.Transformer always adds one; set "
            f"its .{what}.norm = None to compare with a post-norm stack)"
        )
    for a, b in zip(ours.layers, theirs.layers):
        a.load_torch_weights(b)
    if ours.norm is not None:
        _copy_norm(ours.norm, theirs.norm)


# --------------------------------------------------------------------------------------------------
# The whole model
# --------------------------------------------------------------------------------------------------
class Transformer(nn.Module):
    """Encoder-decoder Transformer (figure 1 of the paper): token ids in, next-token logits out.

    ``encode``: source ids ``(B, S)`` -> embeddings ``* sqrt(D)`` + positions -> dropout -> encoder ->
    memory ``(B, S, D)``.
    ``decode``: target ids ``(B, T)`` -> embeddings ``* sqrt(D)`` + positions -> dropout -> decoder (reading
    the memory) -> output projection -> logits ``(B, T, V)``.

    Embeddings are initialised with standard deviation ``D ** -0.5``, so that after the ``sqrt(D)`` scaling
    they have unit scale, like the sinusoidal positions added to them. Block weights use Xavier-uniform
    initialisation, as ``nn.Transformer`` does. The output projection has no bias; with
    ``cfg.tie_embeddings`` its weight *is* the target embedding matrix (paper, section 3.4), and with
    ``cfg.share_src_tgt_embeddings`` the source embedding is that same matrix too.

    Masks are explicit (course convention, True = may attend); ``None`` means no mask at all. In training
    use ``course_lib.masks``: ``src_mask = padding_mask(src, pad)``, ``tgt_mask = padding AND causal``,
    ``cross_mask = src_mask``.
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.d_model
        self.src_embed = nn.Embedding(cfg.src_vocab_size, D)
        self.tgt_embed = self.src_embed if cfg.share_src_tgt_embeddings else nn.Embedding(cfg.tgt_vocab_size, D)
        if cfg.positional == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_encoding(cfg.max_len, D), persistent=False)  # (max_len, D)
            self.pos_embed = None
        else:
            self.pos_table = None
            self.pos_embed = nn.Embedding(cfg.max_len, D)
        self.dropout = nn.Dropout(cfg.dropout)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.out_proj = nn.Linear(D, cfg.tgt_vocab_size, bias=False)
        self._reset_parameters()
        if cfg.tie_embeddings:
            self.out_proj.weight = self.tgt_embed.weight  # one (V, D) matrix, two uses

    @torch.no_grad()
    def _reset_parameters(self) -> None:
        for stack in (self.encoder, self.decoder):
            for p in stack.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
        for emb in {id(self.src_embed): self.src_embed, id(self.tgt_embed): self.tgt_embed}.values():
            nn.init.normal_(emb.weight, std=self.cfg.d_model ** -0.5)
        # a learned position table keeps nn.Embedding's N(0, 1) start, the scale of the scaled token embeddings
        # (as course_lib.positional.LearnedPositionalEmbedding does)
        nn.init.normal_(self.out_proj.weight, std=self.cfg.d_model ** -0.5)

    def positions(self, L: int) -> torch.Tensor:
        """The positional vectors added to the first ``L`` embeddings, ``(L, D)``."""
        if L > self.cfg.max_len:
            raise ValueError(f"Transformer: sequence length {L} exceeds max_len={self.cfg.max_len}")
        if self.pos_table is not None:
            return self.pos_table[:L]  # (L, D)
        return self.pos_embed.weight[:L]  # (L, D)

    def _embed(self, ids: torch.Tensor, table: nn.Embedding, name: str) -> torch.Tensor:
        if ids.dim() != 2:
            raise ValueError(f"Transformer.{name}: expected token ids of shape (B, L), received {tuple(ids.shape)}")
        x = table(ids) * math.sqrt(self.cfg.d_model)  # (B, L, D)
        x = x + self.positions(ids.shape[1])  # (B, L, D) + (L, D)
        return self.dropout(x)

    def embed_source(self, src_ids: torch.Tensor) -> torch.Tensor:
        """Source ids ``(B, S)`` -> ``dropout(embedding * sqrt(D) + positions)`` ``(B, S, D)``."""
        return self._embed(src_ids, self.src_embed, "embed_source")

    def embed_target(self, tgt_ids: torch.Tensor) -> torch.Tensor:
        """Target ids ``(B, T)`` -> ``dropout(embedding * sqrt(D) + positions)`` ``(B, T, D)``."""
        return self._embed(tgt_ids, self.tgt_embed, "embed_target")

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Source ids ``(B, S)`` -> memory ``(B, S, D)``. ``src_mask``: usually ``padding_mask(src_ids, pad)``."""
        return self.encoder(self.embed_source(src_ids), mask=src_mask)

    def decode(
        self,
        tgt_ids: torch.Tensor,
        memory: torch.Tensor,
        self_mask: torch.Tensor | None = None,
        cross_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Target ids ``(B, T)`` and memory ``(B, S, D)`` -> logits ``(B, T, V)``.

        ``self_mask``: broadcastable to ``(B, H, T, T)`` (causal, and target padding);
        ``cross_mask``: broadcastable to ``(B, H, T, S)`` (source padding).
        """
        h = self.decoder(self.embed_target(tgt_ids), memory, self_mask=self_mask, cross_mask=cross_mask)
        return self.out_proj(h)  # (B, T, V)

    def forward(
        self,
        src_ids: torch.Tensor,
        tgt_ids: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        tgt_mask: torch.Tensor | None = None,
        cross_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced pass: source ``(B, S)`` and target input ``(B, T)`` ids -> logits ``(B, T, V)``.

        Equivalent to ``self.decode(tgt_ids, self.encode(src_ids, src_mask), tgt_mask, cross_mask)``.
        """
        memory = self.encode(src_ids, src_mask)  # (B, S, D)
        return self.decode(tgt_ids, memory, self_mask=tgt_mask, cross_mask=cross_mask)  # (B, T, V)

    @torch.no_grad()
    def load_torch_weights(self, model: nn.Transformer) -> None:
        """Copy the encoder and decoder stacks of a (``batch_first``) ``nn.Transformer``.

        ``nn.Transformer`` has no embeddings or output projection; those keep their own values.
        ``nn.Transformer`` always ends both stacks with a LayerNorm; for a post-norm model (the paper), set
        ``model.encoder.norm = model.decoder.norm = None`` first, or this raises.
        """
        self.encoder.load_torch_weights(model.encoder)
        self.decoder.load_torch_weights(model.decoder)

    def num_parameters(self) -> int:
        """Number of distinct trainable numbers (a shared matrix counts once)."""
        return sum(p.numel() for p in self.parameters())
