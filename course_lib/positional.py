"""Positional encodings: sinusoidal, learned, rotary (RoPE) and ALiBi.

Explained in chapter 04 (positional encodings).

Without positions, self-attention is *permutation-equivariant*: shuffle the
tokens and the outputs come back shuffled the same way, so "I saw a saw" and
"a saw I saw" give the same set of vectors. Four ways to tell the model where a
token sits:

* **sinusoidal** (absolute, fixed), added to the embeddings.
  Vaswani et al., "Attention Is All You Need", 2017, section 3.5.
* **learned** (absolute, trained): one ``nn.Embedding`` row per position, added
  to the embeddings (BERT, GPT-2). Same paper, Table 3 row (E).
* **rotary** (RoPE): rotate each query and key inside every head by an angle
  proportional to its position, so that ``q_m . k_n`` depends on ``m - n`` only.
  Su et al., "RoFormer", 2021.
* **ALiBi**: add ``-slope_h * |i - j|`` to the attention scores of head ``h``;
  no position vectors at all. Press et al., "Train Short, Test Long", 2022.

With a padded batch, absolute positions must count from each row's first real token, or a
left-padded sequence puts its tokens at other positions than the unpadded one:
:func:`positions_from_mask` reads them from the attention mask (the absolute encodings and
:func:`apply_rotary` also take explicit ``positions``). The relative encodings (RoPE, ALiBi)
do not care: a shift of every position changes nothing.

Dimension names: B batch, T queries, S keys, D model width, H heads, Dh head
width. Queries are aligned to the lower right of the keys, like
:func:`course_lib.masks.causal_mask`: query ``i`` of ``T`` sits at position
``S - T + i`` (so a single query over a cache of ``S`` keys is the last position).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from course_lib.attention import MultiHeadAttention

__all__ = [
    "sinusoidal_encoding",
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEmbedding",
    "rotary_angles",
    "apply_rotary",
    "interleaved_to_half",
    "half_to_interleaved",
    "alibi_slopes",
    "alibi_bias",
    "positions_from_mask",
    "PositionalMultiHeadAttention",
]


def _check_even(D: int, what: str, name: str = "D") -> None:
    if D <= 0 or D % 2:
        raise ValueError(
            f"{what}: expected an even, positive width {name} (sin and cos, or the two coordinates of a "
            f"rotation, come in pairs), received {name}={D}"
        )


# ---------------------------------------------------------------------------
# 1. Sinusoidal (absolute, fixed)
# ---------------------------------------------------------------------------
def sinusoidal_encoding(
    T: int,
    D: int,
    start: int = 0,
    base: float = 10000.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""The sinusoidal table of the Transformer paper, interleaved sin/cos.

    ``PE[pos, 2i] = sin(pos / base^(2i/D))`` and ``PE[pos, 2i+1] = cos(pos / base^(2i/D))``
    for ``pos = start, ..., start + T - 1``. Pair ``i`` turns at frequency
    ``base^(-2i/D)``: the first pair once every ``2 pi`` positions, the last one
    (``i = D/2 - 1``) ``base^((D-2)/D)`` times slower: 5623 times for ``D = 32``, close
    to ``base`` only for a large ``D``.

    Some libraries (Marian in transformers, GPT-J's rotary table) store the same
    numbers with all sines first and all cosines second (``[sin | cos]``); that is a
    permutation of the columns, not a different encoding. fairseq and tensor2tensor
    also store ``[sin | cos]``, but with slightly different frequencies,
    ``exp(-i ln(base) / (D/2 - 1))`` (the last pair exactly ``base`` times slower): up to
    44 % lower than these for ``D = 32``, so their table is not a permutation of this one.

    Args:
        T: number of positions.
        D: model width; must be even.
        start: first position (a decoder with a cache of ``start`` tokens continues from there).
        base: the wavelength scale, 10000 in the paper.
        dtype, device: of the result (computed in float64, then cast).

    Shape:
        returns ``(T, D)``.

    Equivalent to::

        pos = torch.arange(start, start + T)[:, None]            # (T, 1)
        freq = base ** (-torch.arange(0, D, 2) / D)               # (D/2,)
        pe = torch.zeros(T, D)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    """
    _check_even(D, "sinusoidal_encoding")
    if T < 0 or start < 0:
        raise ValueError(f"sinusoidal_encoding: expected T >= 0 and start >= 0, received T={T}, start={start}")
    pos = torch.arange(start, start + T, dtype=torch.float64, device=device)[:, None]  # (T, 1)
    freq = base ** (-torch.arange(0, D, 2, dtype=torch.float64, device=device) / D)  # (D/2,)
    angles = pos * freq  # (T, D/2)
    pe = torch.stack((torch.sin(angles), torch.cos(angles)), dim=-1)  # (T, D/2, 2): sin, cos side by side
    return pe.reshape(T, D).to(dtype)  # (T, D): sin, cos, sin, cos, ...


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the sinusoidal table to token embeddings. No parameters.

    The paper also multiplies the embeddings by ``sqrt(D)`` before adding; that
    belongs to the embedding layer, not here.

    Args:
        d_model: model width ``D`` (even).
        base: the wavelength scale, 10000 in the paper.

    Shape:
        x ``(B, T, D)``; returns ``(B, T, D)``.
    """

    def __init__(self, d_model: int, base: float = 10000.0):
        super().__init__()
        _check_even(d_model, "SinusoidalPositionalEncoding", "d_model")
        self.d_model, self.base = d_model, base

    def forward(self, x: torch.Tensor, start: int = 0, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``x + PE[start : start + T]``, or ``x + PE[positions]``; works for any length.

        ``positions``: integer ``(T,)`` or ``(B, T)`` (left padding: see :func:`positions_from_mask`).
        """
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"SinusoidalPositionalEncoding: expected x of shape (B, T, {self.d_model}), received {tuple(x.shape)}"
            )
        if positions is None:
            pe = sinusoidal_encoding(x.shape[1], self.d_model, start, self.base, x.dtype, x.device)  # (T, D)
            return x + pe  # (B, T, D), pe broadcast over the batch
        positions = _check_positions("SinusoidalPositionalEncoding", positions, x.shape[0], x.shape[1], x.device)
        n = int(positions.max()) + 1 if positions.numel() else 0
        table = sinusoidal_encoding(n, self.d_model, 0, self.base, x.dtype, x.device)  # (n, D)
        return x + table[positions]  # (B, T, D)


# ---------------------------------------------------------------------------
# 2. Learned (absolute, trained)
# ---------------------------------------------------------------------------
class LearnedPositionalEmbedding(nn.Module):
    """Adds a trained vector per position: ``x + table[start : start + T]``.

    The table has ``max_len`` rows and nothing else: a position ``>= max_len``
    has no vector at all (GPT-2 stops at 1024), and rows that training never
    reached stay at their random initial values (chapter 04 measures what that
    does to longer inputs).

    Args:
        max_len: number of positions with a vector.
        d_model: model width ``D``.

    Shape:
        x ``(B, T, D)``; returns ``(B, T, D)``; ``table.weight`` is ``(max_len, D)``.
    """

    def __init__(self, max_len: int, d_model: int):
        super().__init__()
        self.max_len, self.d_model = max_len, d_model
        # nn.Embedding's default N(0, 1) start: the same scale as the course's token embeddings
        # (also nn.Embedding) and the sinusoids. What matters is the ratio: GPT-2 starts both at std 0.02.
        self.table = nn.Embedding(max_len, d_model)

    def forward(self, x: torch.Tensor, start: int = 0, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``x + table[start : start + T]``, or ``x + table[positions]`` (integer ``(T,)`` or ``(B, T)``)."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"LearnedPositionalEmbedding: expected x of shape (B, T, {self.d_model}), received {tuple(x.shape)}"
            )
        T = x.shape[1]
        if positions is not None:
            positions = _check_positions("LearnedPositionalEmbedding", positions, x.shape[0], T, x.device)
            if positions.numel() and int(positions.max()) >= self.max_len:
                raise ValueError(f"LearnedPositionalEmbedding: position {int(positions.max())} does not fit the "
                                 f"table of max_len={self.max_len} rows")
            return x + self.table(positions)  # (B, T, D)
        if start < 0 or start + T > self.max_len:
            raise ValueError(
                f"LearnedPositionalEmbedding: positions {start}..{start + T - 1} do not fit the table of "
                f"max_len={self.max_len} rows (x of shape {tuple(x.shape)}, start={start})"
            )
        pos = torch.arange(start, start + T, device=x.device)  # (T,)
        return x + self.table(pos)  # (B, T, D)


# ---------------------------------------------------------------------------
# Positions that follow the padding
# ---------------------------------------------------------------------------
def _check_positions(who: str, positions: torch.Tensor, B: int, T: int, device) -> torch.Tensor:
    """Positions ``(T,)`` or ``(B, T)`` (or ``(1, T)``), integer, non-negative; returned on ``device``."""
    ok = positions.dim() in (1, 2) and positions.shape[-1] == T
    ok = ok and (positions.dim() == 1 or positions.shape[0] in (1, B))
    if not ok or positions.is_floating_point() or positions.dtype == torch.bool:
        raise ValueError(f"{who}: expected integer positions of shape ({T},) or ({B}, {T}) (B, T), received "
                         f"{tuple(positions.shape)} ({positions.dtype})")
    if positions.numel() and int(positions.min()) < 0:
        raise ValueError(f"{who}: expected positions >= 0, received {int(positions.min())}")
    return positions.to(device=device, dtype=torch.long)


def positions_from_mask(
    mask: torch.Tensor | None,
    S: int,
    T: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Positions of the last ``T`` of ``S`` tokens, counted from each row's first real token.

    A left-padded sequence ``[pad, pad, a, b, c]`` must put ``a`` at position 0, as the unpadded
    ``[a, b, c]`` does; otherwise an absolute position table gives its real tokens other vectors
    and other outputs. Which keys are real is read from the attention mask: key ``j`` is real when the
    mask's *last query row* allows it (``mask[..., -1, j]``, any head), which for the course's masks is
    the padding mask (``padding_mask``: ``(B, 1, 1, S)``; ``seq2seq_masks``' ``padding AND causal``,
    whose last row is the padding row). Token ``i`` then sits at ``i - (number of pads before the
    first real token)``; the leading pads get position 0. Right padding and no padding give
    ``0 .. S-1`` unchanged. (transformers' generation code, ``GenerationMixin`` in
    ``generation/utils.py``, makes ``position_ids`` from ``attention_mask`` in another way:
    ``attention_mask.cumsum(-1) - 1``, every pad set to 0 (transformers 5.24). The two agree on the
    real tokens of left-padded, right-padded and unpadded rows; they differ on pads after the real
    tokens, which keep counting here, and on rows with pads between real tokens, which transformers
    counts over real tokens only.)

    Args:
        mask: the attention mask (boolean, True = may attend), broadcastable to ``(B, H, T, S)``; None =
            no padding.
        S: number of tokens (keys), cached ones included.
        T: how many of the last tokens to return positions for (the queries; default ``S``).
        device: where to build the result (default: the mask's).

    Shape:
        returns ``(B, T)`` integer positions (``(1, T)`` when the mask has no batch dim or is None).

    Raises:
        ValueError: if the mask's last dim is neither ``S`` nor 1, or it has more than 4 dims.

    Equivalent to::

        real = mask[..., -1, :]                                   # (B, S) for a (B, 1, 1, S) mask
        n_left_pads = (real.cumsum(-1) == 0).sum(-1)              # (B,)
        positions = (torch.arange(S) - n_left_pads[:, None]).clamp(min=0)[:, S - T:]
    """
    T = S if T is None else T
    if not 0 <= T <= S:
        raise ValueError(f"positions_from_mask: expected 0 <= T <= S, received T={T}, S={S}")
    if device is None and mask is not None:
        device = mask.device
    pos = torch.arange(S - T, S, device=device)[None, :]  # (1, T)
    if mask is None:
        return pos
    if mask.dim() == 0 or mask.dim() > 4 or mask.shape[-1] not in (1, S):
        raise ValueError(f"positions_from_mask: expected a mask broadcastable to (B, H, T, {S}), received "
                         f"{tuple(mask.shape)}")
    row = mask[..., -1, :] if mask.dim() >= 2 else mask  # (..., S): what the last query may see
    while row.dim() < 3:
        row = row.unsqueeze(0)  # (B, H, S)
    real = row.any(dim=1).expand(-1, S).to(device)  # (B, S): True at real tokens
    n_left_pads = (real.long().cumsum(dim=-1) == 0).sum(dim=-1)  # (B,)
    return (pos - n_left_pads[:, None]).clamp(min=0)  # (B, T)


# ---------------------------------------------------------------------------
# 3. Rotary (RoPE)
# ---------------------------------------------------------------------------
def rotary_angles(
    T: int,
    Dh: int,
    start: int = 0,
    base: float = 10000.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """The rotation angles ``angle[pos, i] = pos * base^(-2i/Dh)`` of RoPE.

    The same frequencies as :func:`sinusoidal_encoding` (with ``D = Dh``): RoPE's
    ``cos`` and ``sin`` of these angles are exactly the sinusoidal table's columns.
    Computed in float64, then cast to ``dtype``. Keep ``dtype`` float32 or wider: an angle of
    ``1000`` rounded to bfloat16 is off by up to 2 radians (:func:`apply_rotary` never asks for less
    than float32).

    Args:
        T: number of positions (``start .. start + T - 1``), ignored when ``positions`` is given.
        Dh: head width, even.
        positions: integer positions of any shape ``(...)`` instead of ``start .. start + T - 1``.

    Shape:
        returns ``(T, Dh/2)``, one angle per position and per pair, or ``(..., Dh/2)`` for ``positions``.
    """
    _check_even(Dh, "rotary_angles", "Dh")
    if positions is None:
        pos = torch.arange(start, start + T, dtype=torch.float64, device=device)  # (T,)
    else:
        pos = positions.to(dtype=torch.float64, device=device)  # (...)
    freq = base ** (-torch.arange(0, Dh, 2, dtype=torch.float64, device=pos.device) / Dh)  # (Dh/2,)
    return (pos[..., None] * freq).to(dtype)  # (..., Dh/2)


def apply_rotary(x: torch.Tensor, start: int = 0, base: float = 10000.0,
                 positions: torch.Tensor | None = None) -> torch.Tensor:
    r"""Rotate queries or keys by their position (RoPE), pairs interleaved as in RoFormer.

    Coordinates ``(x[2i], x[2i+1])`` form pair ``i``; at position ``pos`` the pair
    is rotated by the angle ``pos * base^(-2i/Dh)``:

    ``x'[2i] = x[2i] cos - x[2i+1] sin``, ``x'[2i+1] = x[2i] sin + x[2i+1] cos``.

    Because a rotation by ``a`` followed by the transpose of a rotation by ``b`` is a
    rotation by ``a - b``, ``apply_rotary(q)[m] . apply_rotary(k)[n]`` depends on
    ``q``, ``k`` and ``m - n`` only: attention sees relative positions.

    **Layout.** This is the *interleaved* layout of the RoFormer paper, GPT-J and Meta's
    reference LLaMA code (whose ``apply_rotary_emb`` reshapes each head into neighbouring
    pairs ``(2i, 2i+1)`` and calls ``torch.view_as_complex``). GPT-NeoX's code and
    transformers' port of LLaMA (``rotate_half``) pair coordinate ``i`` with ``i + Dh/2``
    instead. The two are the same operation up to a fixed permutation of the head's
    coordinates (:func:`interleaved_to_half`); since ``W_q`` and ``W_k`` are learned, either
    layout gives an equally good model, but weights trained with one layout must be permuted
    before use with the other. transformers' ``convert_llama_weights_to_hf.py`` does exactly
    that to Meta's checkpoints: it permutes the rows of ``W_q`` and ``W_k`` inside each head
    (``interleaved_to_half`` on each head's rows), so LLaMA weights from the Hugging Face hub
    are in the rotate-half layout and Meta's original files in this one.

    **Precision.** Angles, cosines, sines and the rotation are computed in float32 at least
    (float64 for float64 input); only the result is cast back to ``x``'s dtype, so bfloat16 and
    float16 inputs are off by their own rounding only. transformers' LLaMA rotary embedding (5.24)
    also computes the angles, cosines and sines in float32, but then casts ``cos`` and ``sin`` to
    ``x``'s dtype and does the rotation in that dtype.

    Apply it to queries and keys (never to values), per head, after
    :func:`course_lib.attention.split_heads`.

    Args:
        x: queries or keys ``(..., T, Dh)``, usually ``(B, H, T, Dh)``.
        start: position of the first row (``S - T`` for queries over a cache of ``S`` keys).
        base: wavelength scale (10000 in RoFormer and LLaMA).
        positions: integer positions instead of ``start .. start + T - 1``: ``(T,)``, or ``(B, T)``
            for ``x`` of shape ``(B, H, T, Dh)`` or ``(B, T, Dh)`` (one row of positions per sequence,
            transformers' ``position_ids``).

    Shape:
        returns the same shape (and dtype) as ``x``.

    Raises:
        ValueError: for an odd ``Dh`` or positions whose shape does not fit ``x``.

    Equivalent to::

        a = rotary_angles(T, Dh, start)                          # (T, Dh/2)
        x1, x2 = x[..., 0::2], x[..., 1::2]                      # the two coordinates of each pair
        out = torch.stack((x1 * a.cos() - x2 * a.sin(),
                           x1 * a.sin() + x2 * a.cos()), -1).flatten(-2)
    """
    if x.dim() < 2:
        raise ValueError(f"apply_rotary: expected x of shape (..., T, Dh), received {tuple(x.shape)}")
    T, Dh = x.shape[-2], x.shape[-1]
    _check_even(Dh, f"apply_rotary (x of shape {tuple(x.shape)})", "Dh")
    work = torch.float64 if x.dtype == torch.float64 else torch.float32  # never less than float32
    if positions is not None:
        per_row = positions.dim() == 2 and x.dim() in (3, 4) and positions.shape[0] in (1, x.shape[0])
        ok = positions.dim() == 1 or per_row
        if not ok or positions.shape[-1] != T or positions.is_floating_point():
            raise ValueError(f"apply_rotary: expected integer positions of shape (T,) or (B, T) = ({T},) or "
                             f"({x.shape[0]}, {T}) for x of shape {tuple(x.shape)}, received "
                             f"{tuple(positions.shape)} ({positions.dtype})")
    angles = rotary_angles(T, Dh, start, base, dtype=work, device=x.device, positions=positions)  # (T|B,T, Dh/2)
    if positions is not None and positions.dim() == 2 and x.dim() == 4:
        angles = angles[:, None]  # (B, 1, T, Dh/2): the same positions for every head
    cos, sin = angles.cos(), angles.sin()  # (..., T, Dh/2) each
    xw = x.to(work)
    x1, x2 = xw[..., 0::2], xw[..., 1::2]  # (..., T, Dh/2) each: first and second coordinate of every pair
    rotated = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (..., T, Dh/2, 2)
    return rotated.flatten(-2).to(x.dtype)  # (..., T, Dh), pairs interleaved again


def interleaved_to_half(x: torch.Tensor) -> torch.Tensor:
    """Reorder the last dim from interleaved pairs ``(0,1), (2,3), ...`` to rotate-half pairs ``(i, i + Dh/2)``.

    ``[x0, x1, x2, x3, ...] -> [x0, x2, ..., x1, x3, ...]``. Then
    ``rotate_half_rope(interleaved_to_half(x)) == interleaved_to_half(apply_rotary(x))``, where
    ``rotate_half_rope`` is GPT-NeoX's or transformers' LLaMA rotation. Applied to the rows of each
    head of ``W_q`` and ``W_k``, it is the permutation transformers' LLaMA conversion script applies to
    Meta's (interleaved) checkpoints.
    """
    _check_even(x.shape[-1], f"interleaved_to_half (x of shape {tuple(x.shape)})", "Dh")
    return torch.cat((x[..., 0::2], x[..., 1::2]), dim=-1)  # (..., Dh)


def half_to_interleaved(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`interleaved_to_half`."""
    Dh = x.shape[-1]
    _check_even(Dh, f"half_to_interleaved (x of shape {tuple(x.shape)})", "Dh")
    first, second = x[..., : Dh // 2], x[..., Dh // 2:]  # (..., Dh/2) each
    return torch.stack((first, second), dim=-1).flatten(-2)  # (..., Dh)


# ---------------------------------------------------------------------------
# 4. ALiBi
# ---------------------------------------------------------------------------
def alibi_slopes(H: int) -> torch.Tensor:
    """The per-head slopes of ALiBi, as in the paper's code.

    For ``H`` a power of two: the geometric sequence ``2^(-8h/H)``, ``h = 1..H``
    (``H = 8``: 1/2, 1/4, ..., 1/256). Otherwise the slopes of the closest smaller
    power of two ``P``, followed by every other slope of ``2P`` heads.

    Shape:
        returns ``(H,)``, float32.
    """
    if H <= 0:
        raise ValueError(f"alibi_slopes: expected a positive number of heads, received H={H}")

    def power_of_two(n: int) -> list[float]:
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

    P = 2 ** math.floor(math.log2(H))
    slopes = power_of_two(P)
    if P != H:
        slopes += power_of_two(2 * P)[0::2][: H - P]
    return torch.tensor(slopes, dtype=torch.float32)  # (H,)


def alibi_bias(
    H: int,
    T: int,
    S: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """ALiBi's additive bias ``-slope_h * |i - j|`` for ``H`` heads, ``T`` queries, ``S`` keys.

    Query ``i`` sits at position ``S - T + i`` (lower-right, like
    :func:`course_lib.masks.causal_mask`). The paper uses ALiBi in causal models,
    where keys after the query are masked anyway, so ``-slope * (i - j)`` and
    ``-slope * |i - j|`` agree on every visible key; the absolute value is the
    usual choice for bidirectional (encoder) attention.

    Shape:
        returns ``(H, T, S)``, broadcastable to the scores ``(B, H, T, S)``.

    Equivalent to::

        i = torch.arange(S - T, S)[:, None]; j = torch.arange(S)[None, :]
        bias = -alibi_slopes(H)[:, None, None] * (i - j).abs()
    """
    S = T if S is None else S
    if T < 0 or S < T:
        raise ValueError(f"alibi_bias: expected 0 <= T <= S, received T={T}, S={S}")
    i = torch.arange(S - T, S, device=device)[:, None]  # (T, 1) absolute query positions
    j = torch.arange(S, device=device)[None, :]  # (1, S) key positions
    distance = (i - j).abs().to(dtype)  # (T, S)
    slopes = alibi_slopes(H).to(dtype=dtype, device=device)  # (H,)
    return -slopes[:, None, None] * distance  # (H, T, S)


class PositionalMultiHeadAttention(MultiHeadAttention):
    """:class:`course_lib.attention.MultiHeadAttention` with rotary or ALiBi positions inside.

    Same parameters and projections as ``MultiHeadAttention`` (weights load the same
    way); only :meth:`attend`, the step where the heads attend, changes:

    * ``position="rope"``: queries and keys are rotated per head by :func:`apply_rotary`;
    * ``position="alibi"``: :func:`alibi_bias` is added to the scores;
    * ``position="none"``: plain ``MultiHeadAttention`` (no positions at all).

    Keys sit at positions ``0 .. S-1`` and queries at ``S-T .. S-1`` (lower right,
    like the causal mask), which is what self-attention with a cache needs (the cache holds
    unrotated keys; they are rotated at their positions at every step). Both encodings are relative,
    so a shift of every position (left padding, masked) changes nothing. Relative positions between
    two different sequences mean nothing, so use it for self-attention.

    Args:
        d_model: model width ``D``; n_heads: ``H`` (``Dh = D / H`` must be even for RoPE).
        position: ``"rope"``, ``"alibi"`` or ``"none"``.
        bias: whether the projections have biases.
        rope_base: RoPE's wavelength scale.
        n_kv_heads, dropout, fast: as in :class:`course_lib.attention.MultiHeadAttention`.

    Shape:
        query ``(B, T, D)``, key and value ``(B, S, D)``, mask broadcastable to
        ``(B, H, T, S)``; output ``(B, T, D)``; weights ``(B, H, T, S)``.
    """

    POSITIONS = ("rope", "alibi", "none")

    def __init__(self, d_model: int, n_heads: int, position: str = "rope", bias: bool = True,
                 rope_base: float = 10000.0, n_kv_heads: int | None = None, dropout: float = 0.0,
                 fast: bool = True):
        super().__init__(d_model, n_heads, bias=bias, n_kv_heads=n_kv_heads, dropout=dropout, fast=fast)
        if position not in self.POSITIONS:
            raise ValueError(f"PositionalMultiHeadAttention: position must be one of {self.POSITIONS}, "
                             f"received {position!r}")
        if position == "rope":
            _check_even(d_model // n_heads, "PositionalMultiHeadAttention (rope)", "Dh")
        self.position, self.rope_base = position, rope_base

    def attend(self, q, k, v, mask=None, bias=None, return_weights=False):
        """Rotate ``q`` and ``k`` (RoPE) or add the ALiBi bias, then attend as ``MultiHeadAttention`` does.

        Shape:
            q ``(B, H, T, Dh)``, k and v ``(B, H_kv, S, Dh)`` with ``S >= T``.
        """
        T, S = q.shape[-2], k.shape[-2]
        if S < T:
            raise ValueError(f"PositionalMultiHeadAttention: expected S >= T (queries are the last positions), "
                             f"received q {tuple(q.shape)} and k {tuple(k.shape)}")
        if self.position == "rope":
            q = apply_rotary(q, start=S - T, base=self.rope_base)  # (B, H, T, Dh)
            k = apply_rotary(k, start=0, base=self.rope_base)  # (B, H_kv, S, Dh)
        elif self.position == "alibi":
            alibi = alibi_bias(self.n_heads, T, S, dtype=q.dtype, device=q.device)  # (H, T, S)
            bias = alibi if bias is None else bias + alibi
        return super().attend(q, k, v, mask=mask, bias=bias, return_weights=return_weights)
