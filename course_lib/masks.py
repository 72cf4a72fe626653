"""Attention masks, one convention for the whole course.

Explained in chapter 02 (self-attention) and chapter 07 (masks).

The convention
--------------
A mask is a boolean tensor, **True means "this query may attend to this key"**,
broadcastable to the scores' shape ``(B, H, T, S)``:

* ``B`` batch, ``H`` heads, ``T`` queries, ``S`` keys.
* A ``(T, S)`` mask applies to every batch element and head (causal masks).
* A ``(B, 1, 1, S)`` mask applies per batch element to every head and query
  (padding masks).

Other libraries use other conventions; the converters at the end of this module
are the only place where the course translates between them:

* ``torch.nn.functional.scaled_dot_product_attention``: boolean, True = attend
  (same as ours), or additive floats.
* ``torch.nn.MultiheadAttention`` / ``nn.Transformer*``: boolean, **True = ignore**
  (the opposite), ``attn_mask`` of shape ``(T, S)`` or ``(B*H, T, S)`` and a
  separate ``key_padding_mask`` of shape ``(B, S)``.
* Additive masks: ``0.0`` where allowed and ``-inf`` where not, added to the scores.
"""
from __future__ import annotations

import torch

__all__ = [
    "causal_mask",
    "padding_mask",
    "combine_masks",
    "to_torch_attn_mask",
    "to_key_padding_mask",
    "to_additive_mask",
    "from_additive_mask",
]


def causal_mask(T: int, S: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Causal ("no peeking at the future") mask, aligned to the lower right.

    Query ``i`` (of ``T``) sits at absolute position ``S - T + i`` and may attend
    to keys ``0 .. S - T + i``. With ``S == T`` this is the usual lower-triangular
    mask; with a cache (``S > T``) the last query sees every key, which is what
    one-token-at-a-time decoding needs. (``is_causal=True`` in PyTorch aligns to the
    *upper left* instead, which is wrong for a single query over a longer cache.)

    Args:
        T: number of queries.
        S: number of keys (default ``T``). Must be ``>= T``.
        device: where to build the mask.

    Shape:
        returns ``(T, S)``, boolean, True = may attend.

    Equivalent to::

        torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)
    """
    S = T if S is None else S
    if T < 0 or S < 0:
        raise ValueError(f"causal_mask: expected non-negative sizes, received T={T}, S={S}")
    if S < T:
        raise ValueError(
            f"causal_mask: expected S >= T (keys include the queries' own positions), received T={T}, S={S}"
        )
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)  # (T, S)


def padding_mask(input_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Mask out padding keys: True where ``input_ids != pad_id``.

    Args:
        input_ids: token ids, ``(B, S)``.
        pad_id: the id of the padding token.

    Shape:
        returns ``(B, 1, 1, S)``: broadcast over heads ``H`` and queries ``T``.
    """
    if input_ids.dim() != 2:
        raise ValueError(
            f"padding_mask: expected input_ids of shape (B, S), received shape {tuple(input_ids.shape)}"
        )
    return (input_ids != pad_id)[:, None, None, :]  # (B, 1, 1, S)


def combine_masks(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """Logical AND of masks (None entries are skipped); shapes broadcast.

    Example: ``combine_masks(padding_mask(ids, pad), causal_mask(T))`` has shape
    ``(B, 1, T, T)``.
    """
    result = None
    for m in masks:
        if m is None:
            continue
        if m.dtype != torch.bool:
            raise ValueError(f"combine_masks: expected boolean masks, received dtype {m.dtype}")
        result = m if result is None else (result & m)
    return result


def to_torch_attn_mask(mask: torch.Tensor, n_heads: int | None = None) -> torch.Tensor:
    """Convert our mask to ``nn.MultiheadAttention``'s ``attn_mask`` (True = *ignore*).

    Args:
        mask: our boolean mask, ``(T, S)`` or broadcastable to ``(B, H, T, S)``.
        n_heads: needed when ``mask`` has batch dimensions: PyTorch then wants
            ``(B * H, T, S)``.

    Shape:
        returns ``(T, S)`` if ``mask`` is 2-D, else ``(B * H, T, S)``.
    """
    if mask.dim() == 2:
        return ~mask
    if mask.dim() != 4:
        raise ValueError(
            f"to_torch_attn_mask: expected a (T, S) or (B, H, T, S) mask, received shape {tuple(mask.shape)}"
        )
    if n_heads is None:
        raise ValueError("to_torch_attn_mask: a 4-D mask needs n_heads to build PyTorch's (B*H, T, S) mask")
    B, _, T, S = mask.shape
    full = mask.expand(B, n_heads, T, S)  # (B, H, T, S)
    return ~full.reshape(B * n_heads, T, S)  # (B*H, T, S)


def to_key_padding_mask(mask: torch.Tensor) -> torch.Tensor:
    """Convert our ``(B, 1, 1, S)`` padding mask to PyTorch's ``key_padding_mask`` ``(B, S)``, True = ignore."""
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2] != 1:
        raise ValueError(
            f"to_key_padding_mask: expected a padding mask of shape (B, 1, 1, S), received {tuple(mask.shape)}"
        )
    return ~mask[:, 0, 0, :]  # (B, S)


def to_additive_mask(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Boolean mask to an additive one: ``0.0`` where True, ``-inf`` where False."""
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return out.masked_fill(~mask, float("-inf"))


def from_additive_mask(additive: torch.Tensor) -> torch.Tensor:
    """Additive mask to a boolean one: True where the added value is finite.

    Only masks made of ``0`` and ``-inf`` (or very large negative values) convert
    exactly; a soft bias (ALiBi, for instance) is not a mask.
    """
    return additive > torch.finfo(additive.dtype).min / 2


# --- Masks for an encoder-decoder (chapter 07) ---------------------------------------------------

from typing import NamedTuple  # noqa: E402  (kept next to the code that uses it)


class Seq2SeqMasks(NamedTuple):
    """The three masks of an encoder-decoder, in the course convention (True = may attend).

    Fields:
        src: encoder self-attention, ``(B, 1, 1, S)``: source padding only.
        tgt: decoder self-attention, ``(B, 1, T, T)``: target padding AND causal.
        cross: decoder cross-attention, ``(B, 1, 1, S)``: source padding only
            (every target query may read every real source token).
    """

    src: torch.Tensor
    tgt: torch.Tensor
    cross: torch.Tensor


def seq2seq_masks(src_ids: torch.Tensor, tgt_ids: torch.Tensor, pad_id: int,
                  tgt_pad_id: int | None = None) -> Seq2SeqMasks:
    """Build the encoder, decoder self-attention and cross-attention masks for a padded batch.

    Args:
        src_ids: source token ids ``(B, S)``, padded with ``pad_id`` (on either side).
        tgt_ids: decoder input ids ``(B, T)`` (BOS + target, teacher forcing), padded.
        pad_id: the padding id of the source (and of the target unless ``tgt_pad_id`` is given).
        tgt_pad_id: the padding id of the target, if it differs.

    Shape:
        returns ``Seq2SeqMasks(src (B, 1, 1, S), tgt (B, 1, T, T), cross (B, 1, 1, S))``;
        it unpacks like a tuple: ``src_mask, tgt_mask, cross_mask = seq2seq_masks(...)``.

    A query at a padding position of the target may find no key at all (left padding:
    its causal window holds only pads). Its row is all False; the course's attention
    returns zeros there instead of NaN, and the loss ignores those positions.

    Equivalent to::

        src_mask = padding_mask(src_ids, pad_id)                                  # (B, 1, 1, S)
        tgt_mask = padding_mask(tgt_ids, pad_id) & causal_mask(T)                 # (B, 1, T, T)
        cross_mask = src_mask                                                     # (B, 1, 1, S)
    """
    for name, ids in (("src_ids", src_ids), ("tgt_ids", tgt_ids)):
        if ids.dim() != 2:
            raise ValueError(f"seq2seq_masks: expected {name} of shape (B, L), received shape {tuple(ids.shape)}")
    if src_ids.shape[0] != tgt_ids.shape[0]:
        raise ValueError(
            f"seq2seq_masks: src_ids {tuple(src_ids.shape)} and tgt_ids {tuple(tgt_ids.shape)} "
            f"must have the same batch size B"
        )
    tgt_pad_id = pad_id if tgt_pad_id is None else tgt_pad_id
    T = tgt_ids.shape[1]
    src_mask = padding_mask(src_ids, pad_id)  # (B, 1, 1, S)
    tgt_mask = combine_masks(padding_mask(tgt_ids, tgt_pad_id), causal_mask(T, device=tgt_ids.device))  # (B, 1, T, T)
    return Seq2SeqMasks(src=src_mask, tgt=tgt_mask, cross=src_mask)


__all__ += ["Seq2SeqMasks", "seq2seq_masks"]
