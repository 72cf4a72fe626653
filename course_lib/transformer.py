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
  projection to ``V`` logits. ``decode`` takes a :class:`course_lib.kv_cache.KVCache` for incremental
  decoding.

Blocks and stacks take their own sizes (``EncoderBlock(d_model, n_heads, d_ff, ...)``); ``from_config(cfg)``
builds them from a :class:`TransformerConfig`.

Where the layer norm goes (``norm_first``)
------------------------------------------
*Post-norm* (``norm_first=False``, the paper): ``x = LayerNorm(x + sublayer(x))``. The norm sits on the
residual path itself, so every block's output has unit scale, but the gradient must pass through ``L``
layer norms on its way down; deep post-norm stacks need a learning-rate warm-up to train.

*Pre-norm* (``norm_first=True``, GPT-2 and most later models): ``x = x + sublayer(LayerNorm(x))``. The
residual path is a clean sum from the embeddings to the top, so the top gradient reaches the bottom through
the identity path, undiminished (each branch adds its own contribution), and deep stacks train without
warm-up (Xiong et al., 2020). Because nothing normalises that sum, the stack
ends with one extra LayerNorm (:class:`Encoder` and :class:`Decoder` add it by default only when
``norm_first``).

Masks follow :mod:`course_lib.masks` (boolean, True = may attend) and are always explicit arguments:
nothing here builds a causal mask for you, and nothing depends on ``self.training`` except dropout.

Positions follow the padding: when a mask is given, each row's positions count from its first real token
(:func:`course_lib.positional.positions_from_mask`), so a left-padded sequence gives the same outputs at
its real tokens as the unpadded one; an explicit ``positions`` argument overrides.

Compared with ``torch.nn``: :class:`EncoderBlock` and :class:`DecoderBlock` compute exactly what
``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer`` (``batch_first=True``) compute; the
converters live in :mod:`course_lib.interop` (``from_torch``, ``to_torch``, ``load_torch_weights``, also
reachable as methods). ``nn.Transformer`` always ends its encoder and decoder with a LayerNorm, even in
post-norm mode, where the paper has none; our :class:`Transformer` has it only for pre-norm.

Dimension names: B batch, S source length (keys of the encoder), T target length (queries), D model
width, H heads, V vocabulary, L layers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.attention import MultiHeadAttention
from course_lib.positional import positions_from_mask, sinusoidal_encoding

if TYPE_CHECKING:  # pragma: no cover
    from course_lib.kv_cache import KVCache

__all__ = [
    "TransformerConfig",
    "FeedForward",
    "EncoderBlock",
    "DecoderBlock",
    "Encoder",
    "Decoder",
    "Transformer",
]

ACTIVATIONS = ("relu", "gelu")


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
    dropout: float = 0.0  # dropout on sub-layer outputs, attention weights, embeddings + positions, FF hidden (0.1 in the paper)
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
        if self.activation not in ACTIVATIONS:
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

    def block_sizes(self) -> dict:
        """The keyword arguments of one block: ``EncoderBlock(**cfg.block_sizes())``."""
        return dict(d_model=self.d_model, n_heads=self.n_heads, d_ff=self.d_ff, dropout=self.dropout,
                    norm_first=self.norm_first, activation=self.activation, layer_norm_eps=self.layer_norm_eps)


def _check_d(name: str, x: torch.Tensor, d_model: int, what: str) -> None:
    if x.dim() != 3 or x.shape[-1] != d_model:
        raise ValueError(f"{name}: expected shape {what} with D={d_model}, received {tuple(x.shape)}")


def _check_block_args(who: str, d_model: int, n_heads: int, d_ff: int, activation: str) -> None:
    if d_model <= 0 or n_heads <= 0 or d_ff <= 0 or d_model % n_heads:
        raise ValueError(f"{who}: expected positive sizes with d_model divisible by n_heads, received "
                         f"d_model={d_model}, n_heads={n_heads}, d_ff={d_ff}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"{who}: activation must be one of {ACTIVATIONS}, received {activation!r}")


# --------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------
class FeedForward(nn.Module):
    """Position-wise feed-forward layer: ``linear2(dropout(act(linear1(x))))``.

    Each position goes through the same two-layer MLP on its own: no information moves between positions
    here (that is attention's job).

    Args:
        d_model: model width ``D``.
        d_ff: hidden width.
        dropout: on the hidden activations, in training.
        activation: ``"relu"`` (the paper) or ``"gelu"``.
        bias: whether the two linear layers have biases.

    Shape:
        ``(B, T, D)`` -> ``(B, T, D)``; hidden ``(B, T, d_ff)``.
    """

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "relu", bias: bool = True):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"FeedForward: activation must be one of {ACTIVATIONS}, received {activation!r}")
        self.linear1 = nn.Linear(d_model, d_ff, bias=bias)
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.activation = activation

    @classmethod
    def from_config(cls, cfg: TransformerConfig) -> "FeedForward":
        """``FeedForward(cfg.d_model, cfg.d_ff, cfg.dropout, cfg.activation)``."""
        return cls(cfg.d_model, cfg.d_ff, cfg.dropout, cfg.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear1(x)  # (B, T, d_ff)
        h = F.relu(h) if self.activation == "relu" else F.gelu(h)
        return self.linear2(self.dropout(h))  # (B, T, D)


class EncoderBlock(nn.Module):
    """One encoder block: self-attention, then feed-forward, each with a residual connection and a LayerNorm.

    Post-norm (``norm_first=False``, the paper)::

        x = norm1(x + dropout(self_attn(x, x, x, mask)))
        x = norm2(x + dropout(ff(x)))

    Pre-norm (``norm_first=True``)::

        x = x + dropout(self_attn(norm1(x), mask=mask))
        x = x + dropout(ff(norm2(x)))

    Args:
        d_model: model width ``D``.
        n_heads: attention heads ``H``.
        d_ff: feed-forward hidden width.
        dropout: on sub-layer outputs, attention weights and the feed-forward hidden layer, in training
            (where ``nn.TransformerEncoderLayer`` puts it).
        norm_first: pre-norm (True) or post-norm (False, the paper).
        activation: ``"relu"`` or ``"gelu"``.
        layer_norm_eps: epsilon of both LayerNorms.
        bias: biases in every linear layer and LayerNorm (``nn.TransformerEncoderLayer(bias=...)``).

    Shape:
        ``x`` ``(B, S, D)``; ``mask`` boolean, True = may attend, broadcastable to ``(B, H, S, S)``
        (a padding mask ``(B, 1, 1, S)``); returns ``(B, S, D)``.

    Equals ``nn.TransformerEncoderLayer(D, H, d_ff, dropout, batch_first=True, norm_first=...)`` with the
    same weights (:func:`course_lib.interop.from_torch`, :meth:`load_torch_weights`, :meth:`to_torch`).
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0, norm_first: bool = False,
                 activation: str = "relu", layer_norm_eps: float = 1e-5, bias: bool = True):
        super().__init__()
        _check_block_args("EncoderBlock", d_model, n_heads, d_ff, activation)
        self.d_model, self.norm_first = d_model, norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, bias=bias, dropout=dropout)
        self.ff = FeedForward(d_model, d_ff, dropout, activation, bias=bias)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    @classmethod
    def from_config(cls, cfg: TransformerConfig) -> "EncoderBlock":
        """``EncoderBlock(**cfg.block_sizes())``: one block of the model ``cfg`` describes."""
        return cls(**cfg.block_sizes())

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
        """Build a block with the sizes and weights of an ``nn.TransformerEncoderLayer``
        (:func:`course_lib.interop.from_torch`)."""
        from course_lib import interop

        return interop.from_torch(layer)

    def load_torch_weights(self, layer: nn.TransformerEncoderLayer) -> None:
        """Copy the weights of an ``nn.TransformerEncoderLayer`` (same sizes required)."""
        from course_lib import interop

        interop.load_torch_weights(self, layer)

    def to_torch(self) -> nn.TransformerEncoderLayer:
        """An ``nn.TransformerEncoderLayer`` (``batch_first=True``) with this block's weights."""
        from course_lib import interop

        return interop.to_torch(self)


class DecoderBlock(nn.Module):
    """One decoder block: masked self-attention, cross-attention, feed-forward, each with add & norm.

    * Self-attention: queries, keys and values are all computed from the decoder's own input ``y``
      (with a causal mask in training, so position ``t`` sees only ``0..t``).
    * Cross-attention: queries come from the decoder (``y``), keys and values from the encoder's output
      ``memory``. This is where the source sentence enters the decoder, and the only place.
    * Feed-forward: as in the encoder.

    Post-norm (``norm_first=False``, the paper)::

        y = norm1(y + dropout(self_attn(y, y, y, self_mask)))
        y = norm2(y + dropout(cross_attn(y, memory, memory, cross_mask)))
        y = norm3(y + dropout(ff(y)))

    Pre-norm (``norm_first=True``)::

        y = y + dropout(self_attn(norm1(y), mask=self_mask))
        y = y + dropout(cross_attn(norm2(y), memory, memory, cross_mask))
        y = y + dropout(ff(norm3(y)))

    (In pre-norm, ``memory`` is not normalised here: the encoder's final LayerNorm already did it.)

    Args:
        as :class:`EncoderBlock`.

    Shape:
        ``y`` ``(B, T, D)``, ``memory`` ``(B, S, D)``; ``self_mask`` broadcastable to ``(B, H, T, T)``
        (``(B, H, T, S_cached + T)`` with a cache); ``cross_mask`` broadcastable to ``(B, H, T, S)``
        (usually the source padding mask ``(B, 1, 1, S)``); returns ``(B, T, D)``.

    Equals ``nn.TransformerDecoderLayer(..., batch_first=True, norm_first=...)`` with the same weights.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0, norm_first: bool = False,
                 activation: str = "relu", layer_norm_eps: float = 1e-5, bias: bool = True):
        super().__init__()
        _check_block_args("DecoderBlock", d_model, n_heads, d_ff, activation)
        self.d_model, self.norm_first = d_model, norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, bias=bias, dropout=dropout)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, bias=bias, dropout=dropout)
        self.ff = FeedForward(d_model, d_ff, dropout, activation, bias=bias)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    @classmethod
    def from_config(cls, cfg: TransformerConfig) -> "DecoderBlock":
        """``DecoderBlock(**cfg.block_sizes())``: one block of the model ``cfg`` describes."""
        return cls(**cfg.block_sizes())

    def forward(
        self,
        y: torch.Tensor,
        memory: torch.Tensor,
        self_mask: torch.Tensor | None = None,
        cross_mask: torch.Tensor | None = None,
        cache: "KVCache | None" = None,
        layer: int = 0,
    ) -> torch.Tensor:
        """``cache``, ``layer``: a :class:`course_lib.kv_cache.KVCache` and this block's index in it;
        ``y`` then holds only the new tokens and ``self_mask`` covers every cached key plus the new ones."""
        _check_d("DecoderBlock (y)", y, self.d_model, "(B, T, D)")
        _check_d("DecoderBlock (memory)", memory, self.d_model, "(B, S, D)")
        if memory.shape[0] != y.shape[0]:
            raise ValueError(f"DecoderBlock: y {tuple(y.shape)} and memory {tuple(memory.shape)} "
                             "must have the same batch size B")
        kv = dict(cache=cache, layer=layer)
        if self.norm_first:
            y = y + self.dropout1(self.self_attn(self.norm1(y), mask=self_mask, **kv))  # (B, T, D)
            y = y + self.dropout2(self.cross_attn(self.norm2(y), memory, memory, mask=cross_mask, **kv))  # (B, T, D)
            y = y + self.dropout3(self.ff(self.norm3(y)))  # (B, T, D)
        else:
            y = self.norm1(y + self.dropout1(self.self_attn(y, mask=self_mask, **kv)))  # (B, T, D)
            y = self.norm2(y + self.dropout2(self.cross_attn(y, memory, memory, mask=cross_mask, **kv)))  # (B, T, D)
            y = self.norm3(y + self.dropout3(self.ff(y)))  # (B, T, D)
        return y

    @classmethod
    def from_torch(cls, layer: nn.TransformerDecoderLayer) -> "DecoderBlock":
        """Build a block with the sizes and weights of an ``nn.TransformerDecoderLayer``
        (:func:`course_lib.interop.from_torch`)."""
        from course_lib import interop

        return interop.from_torch(layer)

    def load_torch_weights(self, layer: nn.TransformerDecoderLayer) -> None:
        """Copy the weights of an ``nn.TransformerDecoderLayer`` (its ``multihead_attn`` is our ``cross_attn``)."""
        from course_lib import interop

        interop.load_torch_weights(self, layer)

    def to_torch(self) -> nn.TransformerDecoderLayer:
        """An ``nn.TransformerDecoderLayer`` (``batch_first=True``) with this block's weights."""
        from course_lib import interop

        return interop.to_torch(self)


# --------------------------------------------------------------------------------------------------
# Stacks
# --------------------------------------------------------------------------------------------------
class Encoder(nn.Module):
    """``n_layers`` encoder blocks, one after the other; a final LayerNorm (by default only for pre-norm).

    Args:
        n_layers: number of blocks ``L_enc``.
        d_model, n_heads, d_ff, dropout, norm_first, activation, layer_norm_eps, bias: as :class:`EncoderBlock`.
        final_norm: end with a LayerNorm (default: ``norm_first``; ``nn.Transformer`` always has one).

    Shape:
        ``x`` ``(B, S, D)`` (embedded source), ``mask`` broadcastable to ``(B, H, S, S)``; returns the
        *memory* ``(B, S, D)`` that every decoder block's cross-attention reads.

    Equals ``nn.TransformerEncoder(layer, L, norm=LayerNorm(D) if final_norm else None)``.
    """

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0,
                 norm_first: bool = False, activation: str = "relu", layer_norm_eps: float = 1e-5,
                 bias: bool = True, final_norm: bool | None = None):
        super().__init__()
        final_norm = norm_first if final_norm is None else final_norm
        self.layers = nn.ModuleList([
            EncoderBlock(d_model, n_heads, d_ff, dropout, norm_first, activation, layer_norm_eps, bias)
            for _ in range(n_layers)
        ])
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias) if final_norm else None

    @classmethod
    def from_config(cls, cfg: TransformerConfig) -> "Encoder":
        """The encoder stack of the model ``cfg`` describes (``cfg.n_encoder_layers`` blocks)."""
        return cls(cfg.n_encoder_layers, **cfg.block_sizes())

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.layers:
            x = block(x, mask=mask)  # (B, S, D)
        return x if self.norm is None else self.norm(x)

    def load_torch_weights(self, encoder: nn.TransformerEncoder) -> None:
        """Copy an ``nn.TransformerEncoder``'s layers (and its final norm, which must match ours)."""
        from course_lib import interop

        interop.load_torch_weights(self, encoder)

    def to_torch(self) -> nn.TransformerEncoder:
        """An ``nn.TransformerEncoder`` with these weights."""
        from course_lib import interop

        return interop.to_torch(self)


class Decoder(nn.Module):
    """``n_layers`` decoder blocks, each reading the same ``memory``; a final LayerNorm (by default only for
    pre-norm).

    Args:
        as :class:`Encoder`.

    Shape:
        ``y`` ``(B, T, D)`` (embedded target), ``memory`` ``(B, S, D)``; masks as in :class:`DecoderBlock`;
        returns ``(B, T, D)``.

    Equals ``nn.TransformerDecoder(layer, L, norm=LayerNorm(D) if final_norm else None)``.
    """

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0,
                 norm_first: bool = False, activation: str = "relu", layer_norm_eps: float = 1e-5,
                 bias: bool = True, final_norm: bool | None = None):
        super().__init__()
        final_norm = norm_first if final_norm is None else final_norm
        self.layers = nn.ModuleList([
            DecoderBlock(d_model, n_heads, d_ff, dropout, norm_first, activation, layer_norm_eps, bias)
            for _ in range(n_layers)
        ])
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias) if final_norm else None

    @classmethod
    def from_config(cls, cfg: TransformerConfig) -> "Decoder":
        """The decoder stack of the model ``cfg`` describes (``cfg.n_decoder_layers`` blocks)."""
        return cls(cfg.n_decoder_layers, **cfg.block_sizes())

    def forward(
        self,
        y: torch.Tensor,
        memory: torch.Tensor,
        self_mask: torch.Tensor | None = None,
        cross_mask: torch.Tensor | None = None,
        cache: "KVCache | None" = None,
    ) -> torch.Tensor:
        """``cache``: a :class:`course_lib.kv_cache.KVCache`; block ``i`` uses its layer ``i``."""
        for i, block in enumerate(self.layers):
            y = block(y, memory, self_mask=self_mask, cross_mask=cross_mask, cache=cache, layer=i)  # (B, T, D)
        return y if self.norm is None else self.norm(y)

    def load_torch_weights(self, decoder: nn.TransformerDecoder) -> None:
        """Copy an ``nn.TransformerDecoder``'s layers (and its final norm, which must match ours)."""
        from course_lib import interop

        interop.load_torch_weights(self, decoder)

    def to_torch(self) -> nn.TransformerDecoder:
        """An ``nn.TransformerDecoder`` with these weights."""
        from course_lib import interop

        return interop.to_torch(self)


# --------------------------------------------------------------------------------------------------
# The whole model
# --------------------------------------------------------------------------------------------------
class Transformer(nn.Module):
    """Encoder-decoder Transformer (figure 1 of the paper): token ids in, next-token logits out.

    ``encode``: source ids ``(B, S)`` -> embeddings ``* sqrt(D)`` + positions -> dropout -> encoder ->
    memory ``(B, S, D)``.
    ``decode``: target ids ``(B, T)`` -> embeddings ``* sqrt(D)`` + positions -> dropout -> decoder (reading
    the memory) -> output projection -> logits ``(B, T, V)``; with a :class:`course_lib.kv_cache.KVCache`,
    only the new tokens go in and the cache grows in place.

    Embeddings are initialised with standard deviation ``D ** -0.5``, so that after the ``sqrt(D)`` scaling
    their entries have RMS 1, the same order as the sinusoidal positions added to them (RMS ``1/sqrt(2)``:
    every position vector has length ``sqrt(D/2)``; chapter 06 measures both). Block weights use Xavier-uniform
    initialisation, as ``nn.Transformer`` does. The output projection has no bias; with
    ``cfg.tie_embeddings`` its weight *is* the target embedding matrix (paper, section 3.4), and with
    ``cfg.share_src_tgt_embeddings`` the source embedding is that same matrix too.

    Masks are explicit (course convention, True = may attend); ``None`` means no mask at all. In training
    use ``course_lib.masks``: ``src_mask = padding_mask(src, pad)``, ``tgt_mask = padding AND causal``,
    ``cross_mask = src_mask`` (``seq2seq_masks`` builds all three). Positions follow the padding of the
    mask given (see :meth:`encode`, :meth:`decode`).
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
        self.encoder = Encoder.from_config(cfg)
        self.decoder = Decoder.from_config(cfg)
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

    def positions(self, T: int, start: int = 0) -> torch.Tensor:
        """The positional vectors of positions ``start .. start + T - 1``, ``(T, D)``."""
        if start < 0 or start + T > self.cfg.max_len:
            raise ValueError(f"Transformer: positions {start}..{start + T - 1} exceed max_len={self.cfg.max_len} "
                             f"(sequence length {T})")
        if self.pos_table is not None:
            return self.pos_table[start:start + T]  # (T, D)
        return self.pos_embed.weight[start:start + T]  # (T, D)

    def position_vectors(self, positions: torch.Tensor) -> torch.Tensor:
        """The positional vectors of integer ``positions`` of any shape ``(...)``: ``(..., D)``."""
        if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= self.cfg.max_len):
            raise ValueError(f"Transformer: positions from {int(positions.min())} to {int(positions.max())} do not "
                             f"fit 0..max_len-1 = 0..{self.cfg.max_len - 1}")
        if self.pos_table is not None:
            return self.pos_table[positions]  # (..., D)
        return self.pos_embed(positions)  # (..., D)

    def _embed(self, ids: torch.Tensor, table: nn.Embedding, name: str, length: str,
               positions: torch.Tensor | None) -> torch.Tensor:
        if ids.dim() != 2:
            raise ValueError(f"Transformer.{name}: expected token ids of shape (B, {length}), "
                             f"received {tuple(ids.shape)}")
        B, n = ids.shape
        x = table(ids) * math.sqrt(self.cfg.d_model)  # (B, n, D)
        if positions is None:
            x = x + self.positions(n)  # (B, n, D) + (n, D)
        else:
            ok = positions.dim() in (1, 2) and positions.shape[-1] == n and (
                positions.dim() == 1 or positions.shape[0] in (1, B))
            if not ok or positions.is_floating_point() or positions.dtype == torch.bool:
                raise ValueError(f"Transformer.{name}: expected integer positions of shape ({n},) or ({B}, {n}) "
                                 f"(B, {length}), received {tuple(positions.shape)} ({positions.dtype})")
            x = x + self.position_vectors(positions.to(ids.device))  # (B, n, D) + (B, n, D)
        return self.dropout(x)

    def embed_source(self, src_ids: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Source ids ``(B, S)`` -> ``dropout(embedding * sqrt(D) + positions)`` ``(B, S, D)``.

        ``positions``: integer ``(B, S)`` or ``(S,)``; default ``0 .. S-1``.
        """
        return self._embed(src_ids, self.src_embed, "embed_source", "S", positions)

    def embed_target(self, tgt_ids: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Target ids ``(B, T)`` -> ``dropout(embedding * sqrt(D) + positions)`` ``(B, T, D)``.

        ``positions``: integer ``(B, T)`` or ``(T,)``; default ``0 .. T-1``.
        """
        return self._embed(tgt_ids, self.tgt_embed, "embed_target", "T", positions)

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None,
               positions: torch.Tensor | None = None) -> torch.Tensor:
        """Source ids ``(B, S)`` -> memory ``(B, S, D)``.

        Args:
            src_ids: ``(B, S)``, padded on either side.
            src_mask: usually ``padding_mask(src_ids, pad)`` ``(B, 1, 1, S)``.
            positions: integer ``(B, S)`` or ``(S,)``. Default: counted from each row's first real token
                according to ``src_mask`` (:func:`course_lib.positional.positions_from_mask`), so left
                padding does not move the real tokens; ``0 .. S-1`` without a mask.
        """
        if positions is None and src_mask is not None and src_ids.dim() == 2:
            positions = positions_from_mask(src_mask, src_ids.shape[1], device=src_ids.device)  # (B, S)
        return self.encoder(self.embed_source(src_ids, positions), mask=src_mask)

    def decode(
        self,
        tgt_ids: torch.Tensor,
        memory: torch.Tensor,
        self_mask: torch.Tensor | None = None,
        cross_mask: torch.Tensor | None = None,
        cache: "KVCache | None" = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Target ids and memory ``(B, S, D)`` -> logits ``(B, T, V)``, with or without a cache.

        Args:
            tgt_ids: ``(B, T)``: the whole target input (teacher forcing), or, with a cache, only the
                ``T`` new tokens.
            memory: the encoder output ``(B, S, D)``. With a cache, cross-attention keys and values are
                computed from it at the first call only and read back afterwards.
            self_mask: broadcastable to ``(B, H, T, S_self)`` where ``S_self = cache.length + T`` (just ``T``
                without a cache): causal (``causal_mask(T, S_self)``, lower-right aligned) and target
                padding over every key, cached ones included. ``None`` = no mask (fine for one new token).
            cross_mask: broadcastable to ``(B, H, T, S)`` (source padding).
            cache: a :class:`course_lib.kv_cache.KVCache`, updated in place (one entry per decoder layer).
            positions: integer ``(B, T)`` or ``(T,)``. Default: ``cache.length .. cache.length + T - 1``,
                counted from each row's first real token according to ``self_mask``'s last row
                (:func:`course_lib.positional.positions_from_mask`), so a left-padded target keeps its
                real tokens at positions ``0, 1, ...``.

        Returns:
            logits ``(B, T, V)``. With a cache, they equal the last ``T`` rows of the uncached pass over the
            whole prefix (tested to 1e-5 in float32).

        Raises:
            ValueError: for ids that are not ``(B, T)``, a mask that does not cover ``S_self`` keys, or
            positions past ``max_len``.
        """
        if tgt_ids.dim() != 2:
            raise ValueError(f"Transformer.decode: expected token ids of shape (B, T), received {tuple(tgt_ids.shape)}")
        if positions is None:
            start = 0 if cache is None else cache.length
            T = tgt_ids.shape[1]
            if self_mask is None and start == 0:
                positions = None  # 0 .. T-1
            else:
                positions = positions_from_mask(self_mask, start + T, T, device=tgt_ids.device)  # (B, T)
        h = self.decoder(self.embed_target(tgt_ids, positions), memory, self_mask=self_mask, cross_mask=cross_mask,
                         cache=cache)  # (B, T, D)
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

    def load_torch_weights(self, model: nn.Transformer) -> None:
        """Copy the encoder and decoder stacks of a (``batch_first``) ``nn.Transformer``.

        ``nn.Transformer`` has no embeddings or output projection; those keep their own values.
        ``nn.Transformer`` always ends both stacks with a LayerNorm; for a post-norm model (the paper), set
        ``model.encoder.norm = model.decoder.norm = None`` first, or this raises
        (:func:`course_lib.interop.load_torch_weights`).
        """
        from course_lib import interop

        interop.load_torch_weights(self, model)

    def to_torch(self) -> nn.Transformer:
        """An ``nn.Transformer`` (``batch_first=True``) with these stacks (no embeddings: PyTorch has none)."""
        from course_lib import interop

        return interop.to_torch(self)

    @classmethod
    def from_torch(cls, model: nn.Transformer, src_vocab_size: int, tgt_vocab_size: int,
                   **config_fields) -> "Transformer":
        """A model with ``nn.Transformer``'s sizes and stacks and new embeddings of the given vocabularies
        (:func:`course_lib.interop.from_torch`)."""
        from course_lib import interop

        return interop.from_torch(model, src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size,
                                  **config_fields)

    def num_parameters(self) -> int:
        """Number of distinct trainable numbers (a shared matrix counts once)."""
        return sum(p.numel() for p in self.parameters())
