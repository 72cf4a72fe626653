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
  (the opposite), ``attn_mask`` of shape ``(T, S)`` or ``(B*H, T, S)`` (no broadcasting)
  and a separate ``key_padding_mask`` of shape ``(B, S)``: :func:`to_torch_attn_mask`,
  :func:`to_key_padding_mask`.
* Additive masks: ``0.0`` where allowed and ``-inf`` (or a large negative number:
  ``-1e9``, ``-1e4``, ``torch.finfo(dtype).min``) where not, added to the scores:
  :func:`to_additive_mask`, :func:`from_additive_mask`.
* transformers' ``attention_mask``: 0/1, ``(B, S)``, 1 = real token: :func:`from_attention_mask`.
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
    "from_attention_mask",
    "MASKED_BELOW",
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


def to_torch_attn_mask(mask: torch.Tensor, n_heads: int | None = None, *, B: int | None = None,
                       T: int | None = None) -> torch.Tensor:
    """Convert our mask to ``nn.MultiheadAttention``'s ``attn_mask`` (boolean, True = *ignore*).

    PyTorch accepts exactly two shapes: ``(T, S)`` (the same for every batch element and
    head) or ``(B * H, T, S)``; it does not broadcast. This function expands our broadcast
    dimensions to those shapes and returns the smallest that holds the mask:

    * a mask with no batch or head variation (``(T, S)``, ``(1, 1, T, S)``) -> ``(T, S)``;
    * otherwise -> ``(B * H, T, S)``, row ``b * H + h`` for batch element ``b``, head ``h``.

    A 2-D mask is taken as it is, ``(T, S)``. In a 3-D or 4-D mask a dimension of size 1
    is read as broadcast, and where PyTorch needs it spelled out its size comes from the
    arguments: ``T`` for a mask broadcast over queries (a padding mask ``(B, 1, 1, S)``;
    pass ``T=1`` for a single query), ``B`` for a mask broadcast over the batch but not over
    heads (``(1, H, T, S)``, ``(H, T, S)``). For a padding mask the simpler route is
    ``key_padding_mask=to_key_padding_mask(mask)``.

    Args:
        mask: our boolean mask (True = may attend): ``(T, S)``, ``(H, T, S)`` or
            ``(B, H, T, S)``, each of ``B``, ``H``, ``T`` possibly 1 (broadcast).
        n_heads: ``H`` of the ``nn.MultiheadAttention``; needed when the mask varies over
            the batch or the heads.
        B: batch size, needed only when the mask is broadcast over the batch and not over heads.
        T: number of queries, needed only when a 3-D or 4-D mask is broadcast over queries;
            with a ``(1, S)`` mask it expands the mask to ``(T, S)``.

    Shape:
        returns ``(T, S)`` or ``(B * H, T, S)``, boolean, True = ignore.

    Raises:
        ValueError: a mask that is not boolean or not 2-, 3- or 4-D; a head dimension
            that is neither 1 nor ``n_heads``; a size that disagrees with ``B`` or ``T``;
            a broadcast dimension whose size is needed and not given.

    Equivalent to::

        ~mask.expand(B, H, T, S).reshape(B * H, T, S)     # or ~mask.expand(T, S)
    """
    if mask.dtype != torch.bool:
        raise ValueError(
            f"to_torch_attn_mask: expected a boolean mask (True = may attend), received dtype {mask.dtype}; "
            f"an additive mask converts with from_additive_mask first"
        )
    if mask.dim() not in (2, 3, 4):
        raise ValueError(
            f"to_torch_attn_mask: expected a (T, S), (H, T, S) or (B, H, T, S) mask, "
            f"received shape {tuple(mask.shape)}"
        )
    m = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))  # (B|1, H|1, T|1, S): broadcasting adds dims in front
    b, h, t, S = m.shape

    def size(name: str, dim: int, have: int, given: int | None, hint: str) -> int:
        if have != 1:
            if given is not None and given != have:
                raise ValueError(
                    f"to_torch_attn_mask: the mask has {name}={have} (dimension {dim} of {tuple(m.shape)}), "
                    f"received {name}={given}"
                )
            return have
        if given is None:
            raise ValueError(
                f"to_torch_attn_mask: dimension {dim} ({name}) of the mask {tuple(mask.shape)} is 1 (broadcast), "
                f"but nn.MultiheadAttention needs it spelled out: {hint}"
            )
        return given

    t_hint = ("pass T=<number of queries>; for a padding mask (B, 1, 1, S) pass "
              "key_padding_mask=to_key_padding_mask(mask) to nn.MultiheadAttention instead")
    if mask.dim() == 2 and T is None:  # (T, S) is taken as it is: causal_mask(1, S) has one query
        return ~mask  # (T, S)
    if b == 1 and h == 1:  # the same (T, S) for every batch element and head
        T_ = size("T", 2, t, T, t_hint)
        return ~m[0, 0].expand(T_, S)  # (T, S)
    if n_heads is None:
        raise ValueError(
            f"to_torch_attn_mask: a mask of shape {tuple(mask.shape)} varies over the batch or the heads; "
            f"pass n_heads to build PyTorch's (B*H, T, S) mask"
        )
    if h not in (1, n_heads):
        raise ValueError(
            f"to_torch_attn_mask: expected the head dimension (dimension 1 of {tuple(m.shape)}) to be 1 or "
            f"n_heads={n_heads}, received {h}"
        )
    B_ = size("B", 0, b, B, "pass B=<batch size>")
    T_ = size("T", 2, t, T, t_hint)
    full = m.expand(B_, n_heads, T_, S)  # (B, H, T, S)
    return ~full.reshape(B_ * n_heads, T_, S)  # (B*H, T, S)


def to_key_padding_mask(mask: torch.Tensor) -> torch.Tensor:
    """Convert our ``(B, 1, 1, S)`` padding mask to PyTorch's ``key_padding_mask`` ``(B, S)``, True = ignore.

    Raises:
        ValueError: a mask that is not boolean or not of shape ``(B, 1, 1, S)``.
    """
    if mask.dtype != torch.bool:
        raise ValueError(f"to_key_padding_mask: expected a boolean mask (True = may attend), received dtype {mask.dtype}")
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2] != 1:
        raise ValueError(
            f"to_key_padding_mask: expected a padding mask of shape (B, 1, 1, S), received {tuple(mask.shape)}"
        )
    return ~mask[:, 0, 0, :]  # (B, S)


def to_additive_mask(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Boolean mask to an additive one: ``0.0`` where True, ``-inf`` where False (any shape).

    ``-inf`` rather than a large finite number: ``exp(-inf) = 0`` exactly in every dtype, and
    no finite fill is both large enough for float64 and representable in float16.

    Raises:
        ValueError: a mask that is not boolean, or a ``dtype`` that is not floating point.
    """
    if mask.dtype != torch.bool:
        raise ValueError(f"to_additive_mask: expected a boolean mask (True = may attend), received dtype {mask.dtype}")
    if not dtype.is_floating_point:
        raise ValueError(f"to_additive_mask: expected a floating-point dtype, received {dtype}")
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return out.masked_fill(~mask, float("-inf"))


# An additive mask's masked entries must push a score down so far that softmax gives it weight 0:
# exp(-1000) is exactly 0 even in float64 (whose smallest positive number is about exp(-745)).
# Every fill in use is far below: -1e4 (BERT's first release; -9984 once rounded to bfloat16), -1e9
# (the Annotated Transformer), torch.finfo(dtype).min (transformers today; -65504 in float16), -inf.
MASKED_BELOW = -1e3


def from_additive_mask(additive: torch.Tensor) -> torch.Tensor:
    """Additive mask to a boolean one: True where the added value is 0, False where it is a large negative number.

    Accepts every convention in use: ``-inf`` (PyTorch), ``torch.finfo(dtype).min``
    (transformers), ``-1e9`` (the Annotated Transformer, ``(1 - m) * -1e9``), ``-1e4`` (BERT's
    first release, ``(1.0 - m) * -10000.0``), in any floating dtype and any shape, and
    sums of such masks. A value counts as masked when it is at most :data:`MASKED_BELOW`
    (``-1000``).

    Args:
        additive: a float tensor, ``0`` where attending is allowed, a large negative number where not.

    Shape:
        returns a boolean tensor of the same shape, True = may attend.

    Raises:
        ValueError: an integer or boolean tensor; values that are neither 0 nor
            ``<= MASKED_BELOW`` (a 0/1 mask: use :func:`from_attention_mask`; a soft score bias
            such as ALiBi or relative positions is not a mask: add it to the scores); NaN.

    Equivalent to::

        additive == 0        # after checking that every other value is <= -1000
    """
    if not isinstance(additive, torch.Tensor) or not additive.is_floating_point():
        got = additive.dtype if isinstance(additive, torch.Tensor) else type(additive).__name__
        if got == torch.bool:
            hint = ("it is boolean already: in the course convention (True = may attend) use it as it is; "
                    "if True means ignore (nn.MultiheadAttention's attn_mask, key_padding_mask), use ~mask")
        else:
            hint = ("an integer mask of 0 and 1 (1 = may attend) converts with from_attention_mask(mask) "
                    "(transformers' (B, S) attention_mask, or a 4-D mask), or with mask == 1 for another shape")
        raise ValueError(
            f"from_additive_mask: expected a floating-point additive mask (0 = attend, -inf or a large negative "
            f"number such as -1e9 = masked), received dtype {got}; {hint}"
        )
    allowed = additive == 0
    masked = additive <= MASKED_BELOW
    other = ~(allowed | masked)
    if other.any():
        values = additive[other]
        if torch.isnan(values).any():
            raise ValueError("from_additive_mask: expected 0 or large negative values, received NaN")
        if bool(((additive == 0) | (additive == 1)).all()):
            raise ValueError(
                "from_additive_mask: expected an additive mask (0 = attend, -inf or a large negative number = "
                "masked), received a mask of 0 and 1 only; a 0/1 mask (1 = may attend) converts with "
                "from_attention_mask(mask) (transformers' (B, S) attention_mask, or a 4-D mask), or with "
                "mask == 1 for another shape"
            )
        raise ValueError(
            f"from_additive_mask: expected values 0 (attend) or <= {MASKED_BELOW:g} (masked), received values "
            f"from {values.min().item():.4g} to {values.max().item():.4g}; a soft score bias (ALiBi, relative "
            f"positions) is not a mask: add it to the scores instead"
        )
    return allowed


def from_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """A 0/1 mask (1 = may attend), as transformers' ``attention_mask``, to ours.

    transformers' tokenizers return ``attention_mask`` of shape ``(B, S)``: 1 for a real
    token, 0 for padding. Its models also accept a 4-D ``(B, 1, T, S)`` mask of 0 and 1.

    Args:
        attention_mask: integer, float or boolean tensor of 0 and 1 (1 = may attend),
            ``(B, S)`` or 4-D (for example ``(B, 1, T, S)``).

    Shape:
        ``(B, S)`` -> ``(B, 1, 1, S)`` (a padding mask, as :func:`padding_mask` builds);
        a 4-D mask keeps its shape. Boolean, True = may attend.

    Raises:
        ValueError: values other than 0 and 1 (an additive mask: use :func:`from_additive_mask`),
            or a shape that is neither 2-D nor 4-D.

    Equivalent to::

        (attention_mask == 1)[:, None, None, :]     # for (B, S)
    """
    if attention_mask.dim() not in (2, 4):
        raise ValueError(
            f"from_attention_mask: expected an attention_mask of shape (B, S) or a 4-D mask (B, 1, T, S), "
            f"received shape {tuple(attention_mask.shape)}"
        )
    if attention_mask.dtype != torch.bool and not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        raise ValueError(
            "from_attention_mask: expected values 0 and 1 (1 = may attend), received other values; "
            "an additive mask (0 = attend, -inf or -1e9 = masked) converts with from_additive_mask(mask)"
        )
    allowed = attention_mask == 1 if attention_mask.dtype != torch.bool else attention_mask
    return allowed[:, None, None, :] if allowed.dim() == 2 else allowed  # (B, 1, 1, S) or 4-D


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
    for name, ids, shape in (("src_ids", src_ids, "(B, S)"), ("tgt_ids", tgt_ids, "(B, T)")):
        if ids.dim() != 2:
            raise ValueError(f"seq2seq_masks: expected {name} of shape {shape}, received shape {tuple(ids.shape)}")
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
