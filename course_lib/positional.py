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

Dimension names: B batch, T queries, S keys, D model width, H heads, Dh head
width. Queries are aligned to the lower right of the keys, like
:func:`course_lib.masks.causal_mask`: query ``i`` of ``T`` sits at position
``S - T + i`` (so a single query over a cache of ``S`` keys is the last position).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from course_lib.attention import MultiHeadAttention, merge_heads, split_heads

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
    "attention_with_bias",
    "PositionalMultiHeadAttention",
]


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


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
    about ``base`` times slower.

    Some libraries (fairseq, Marian, GPT-J's rotary table) store the same numbers
    with all sines first and all cosines second (``[sin | cos]``); that is a
    permutation of the columns, not a different encoding.

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

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Return ``x + PE[start : start + T]``; works for any length (nothing is stored)."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"SinusoidalPositionalEncoding: expected x of shape (B, T, {self.d_model}), received {_shape(x)}"
            )
        pe = sinusoidal_encoding(x.shape[1], self.d_model, start, self.base, x.dtype, x.device)  # (T, D)
        return x + pe  # (B, T, D), pe broadcast over the batch


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

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"LearnedPositionalEmbedding: expected x of shape (B, T, {self.d_model}), received {_shape(x)}"
            )
        T = x.shape[1]
        if start < 0 or start + T > self.max_len:
            raise ValueError(
                f"LearnedPositionalEmbedding: positions {start}..{start + T - 1} do not fit the table of "
                f"max_len={self.max_len} rows (x of shape {_shape(x)}, start={start})"
            )
        pos = torch.arange(start, start + T, device=x.device)  # (T,)
        return x + self.table(pos)  # (B, T, D)


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
) -> torch.Tensor:
    """The rotation angles ``angle[pos, i] = pos * base^(-2i/Dh)`` of RoPE.

    The same frequencies as :func:`sinusoidal_encoding` (with ``D = Dh``): RoPE's
    ``cos`` and ``sin`` of these angles are exactly the sinusoidal table's columns.

    Shape:
        returns ``(T, Dh/2)``, one angle per position and per pair.
    """
    _check_even(Dh, "rotary_angles", "Dh")
    pos = torch.arange(start, start + T, dtype=torch.float64, device=device)[:, None]  # (T, 1)
    freq = base ** (-torch.arange(0, Dh, 2, dtype=torch.float64, device=device) / Dh)  # (Dh/2,)
    return (pos * freq).to(dtype)  # (T, Dh/2)


def apply_rotary(x: torch.Tensor, start: int = 0, base: float = 10000.0) -> torch.Tensor:
    r"""Rotate queries or keys by their position (RoPE), pairs interleaved as in RoFormer.

    Coordinates ``(x[2i], x[2i+1])`` form pair ``i``; at position ``pos`` the pair
    is rotated by the angle ``pos * base^(-2i/Dh)``:

    ``x'[2i] = x[2i] cos - x[2i+1] sin``, ``x'[2i+1] = x[2i] sin + x[2i+1] cos``.

    Because a rotation by ``a`` followed by the transpose of a rotation by ``b`` is a
    rotation by ``a - b``, ``apply_rotary(q)[m] . apply_rotary(k)[n]`` depends on
    ``q``, ``k`` and ``m - n`` only: attention sees relative positions.

    **Layout.** This is the RoFormer paper's (and GPT-J's) *interleaved* layout.
    GPT-NeoX and LLaMA code (``rotate_half`` in transformers) pairs coordinate ``i``
    with ``i + Dh/2`` instead. The two are the same operation up to a fixed
    permutation of the head's coordinates (:func:`interleaved_to_half`); since
    ``W_q`` and ``W_k`` are learned, either layout gives an equally good model, but
    weights trained with one layout must be permuted before use with the other.

    Apply it to queries and keys (never to values), per head, after
    :func:`course_lib.attention.split_heads`.

    Args:
        x: queries or keys ``(..., T, Dh)``, usually ``(B, H, T, Dh)``.
        start: position of the first row (``S - T`` for queries over a cache of ``S`` keys).
        base: wavelength scale (10000 in RoFormer and LLaMA).

    Shape:
        returns the same shape as ``x``.

    Equivalent to::

        a = rotary_angles(T, Dh, start)                          # (T, Dh/2)
        x1, x2 = x[..., 0::2], x[..., 1::2]                      # the two coordinates of each pair
        out = torch.stack((x1 * a.cos() - x2 * a.sin(),
                           x1 * a.sin() + x2 * a.cos()), -1).flatten(-2)
    """
    if x.dim() < 2:
        raise ValueError(f"apply_rotary: expected x of shape (..., T, Dh), received {_shape(x)}")
    T, Dh = x.shape[-2], x.shape[-1]
    _check_even(Dh, f"apply_rotary (x of shape {_shape(x)})", "Dh")
    angles = rotary_angles(T, Dh, start, base, dtype=x.dtype if x.is_floating_point() else torch.float32,
                           device=x.device)  # (T, Dh/2)
    cos, sin = angles.cos(), angles.sin()  # (T, Dh/2) each
    x1, x2 = x[..., 0::2], x[..., 1::2]  # (..., T, Dh/2) each: first and second coordinate of every pair
    rotated = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (..., T, Dh/2, 2)
    return rotated.flatten(-2)  # (..., T, Dh), pairs interleaved again


def interleaved_to_half(x: torch.Tensor) -> torch.Tensor:
    """Reorder the last dim from RoFormer pairs ``(0,1), (2,3), ...`` to rotate-half pairs ``(i, i + Dh/2)``.

    ``[x0, x1, x2, x3, ...] -> [x0, x2, ..., x1, x3, ...]``. Then
    ``llama_rope(interleaved_to_half(x)) == interleaved_to_half(apply_rotary(x))``.
    """
    _check_even(x.shape[-1], f"interleaved_to_half (x of shape {_shape(x)})", "Dh")
    return torch.cat((x[..., 0::2], x[..., 1::2]), dim=-1)  # (..., Dh)


def half_to_interleaved(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`interleaved_to_half`."""
    Dh = x.shape[-1]
    _check_even(Dh, f"half_to_interleaved (x of shape {_shape(x)})", "Dh")
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


def attention_with_bias(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    return_weights: bool = False,
):
    r"""``softmax(Q K^T / sqrt(Dh) + bias) V``, with the course's boolean mask on top.

    :func:`course_lib.attention.scaled_dot_product_attention` takes boolean masks
    only; a soft bias such as ALiBi's is not a mask, so it gets this function.
    With ``bias=None`` it equals ``scaled_dot_product_attention(q, k, v, mask)``.

    Args:
        q: queries ``(..., T, Dh)``; k: keys ``(..., S, Dh)``; v: values ``(..., S, Dv)``.
        bias: float, broadcastable to ``(..., T, S)``, added to the scaled scores.
        mask: boolean, True = may attend, broadcastable to ``(..., T, S)``.
        return_weights: also return the weights.

    Shape:
        output ``(..., T, Dv)``; weights ``(..., T, S)``.

    Returns:
        ``output``, or ``(output, weights)`` if ``return_weights``.

    Equivalent to::

        scores = q @ k.transpose(-2, -1) / math.sqrt(Dh) + bias
        out = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
    """
    if q.dim() < 2 or k.dim() < 2 or v.dim() < 2 or q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"attention_with_bias: expected q (..., T, Dh), k (..., S, Dh), v (..., S, Dv); "
            f"received q {_shape(q)}, k {_shape(k)}, v {_shape(v)}"
        )
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., T, S)
    if bias is not None:
        if not bias.is_floating_point():
            raise ValueError(f"attention_with_bias: expected a float bias, received dtype {bias.dtype}")
        try:
            ok = torch.broadcast_shapes(bias.shape, scores.shape) == scores.shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"attention_with_bias: bias of shape {_shape(bias)} does not broadcast to the scores' "
                f"shape {_shape(scores)} (..., T, S)"
            )
        scores = scores + bias
    if mask is not None:
        if mask.dtype != torch.bool:
            raise ValueError(
                f"attention_with_bias: expected a boolean mask (True = may attend), received dtype {mask.dtype}"
            )
        try:
            ok = torch.broadcast_shapes(mask.shape, scores.shape) == scores.shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"attention_with_bias: mask of shape {_shape(mask)} does not broadcast to the scores' "
                f"shape {_shape(scores)} (..., T, S)"
            )
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)  # same fill as attention.py
    weights = torch.softmax(scores, dim=-1)  # (..., T, S)
    if mask is not None:
        weights = weights * mask  # a fully masked row outputs zeros, not an average
    out = weights @ v  # (..., T, Dv)
    return (out, weights) if return_weights else out


class PositionalMultiHeadAttention(MultiHeadAttention):
    """:class:`course_lib.attention.MultiHeadAttention` with rotary or ALiBi positions inside.

    Same parameters and projections as ``MultiHeadAttention`` (weights load the same
    way); only the attention step changes:

    * ``position="rope"``: queries and keys are rotated per head by
      :func:`apply_rotary` after the split into heads;
    * ``position="alibi"``: :func:`alibi_bias` is added to the scores;
    * ``position="none"``: plain ``MultiHeadAttention`` (no positions at all).

    Keys sit at positions ``0 .. S-1`` and queries at ``S-T .. S-1`` (lower right,
    like the causal mask), which is what self-attention with a cache needs. Relative
    positions between two different sequences mean nothing, so use it for
    self-attention.

    Args:
        d_model: model width ``D``; n_heads: ``H`` (``Dh = D / H`` must be even for RoPE).
        position: ``"rope"``, ``"alibi"`` or ``"none"``.
        bias: whether the projections have biases.
        rope_base: RoPE's wavelength scale.

    Shape:
        query ``(B, T, D)``, key and value ``(B, S, D)``, mask broadcastable to
        ``(B, H, T, S)``; output ``(B, T, D)``; weights ``(B, H, T, S)``.
    """

    POSITIONS = ("rope", "alibi", "none")

    def __init__(self, d_model: int, n_heads: int, position: str = "rope", bias: bool = True,
                 rope_base: float = 10000.0):
        super().__init__(d_model, n_heads, bias=bias)
        if position not in self.POSITIONS:
            raise ValueError(f"PositionalMultiHeadAttention: position must be one of {self.POSITIONS}, "
                             f"received {position!r}")
        if position == "rope":
            _check_even(d_model // n_heads, "PositionalMultiHeadAttention (rope)", "Dh")
        self.position, self.rope_base = position, rope_base

    def forward(self, query, key=None, value=None, mask=None, return_weights=False):
        key = query if key is None else key
        value = key if value is None else value
        for name, t in (("query", query), ("key", key), ("value", value)):
            if t.dim() != 3 or t.shape[-1] != self.d_model:
                raise ValueError(
                    f"PositionalMultiHeadAttention: expected {name} of shape (B, L, {self.d_model}), "
                    f"received {_shape(t)}"
                )
        T, S = query.shape[1], key.shape[1]
        if S < T:
            raise ValueError(f"PositionalMultiHeadAttention: expected S >= T (queries are the last positions), "
                             f"received query {_shape(query)} and key {_shape(key)}")
        q = split_heads(self.q_proj(query), self.n_heads)  # (B, H, T, Dh)
        k = split_heads(self.k_proj(key), self.n_heads)  # (B, H, S, Dh)
        v = split_heads(self.v_proj(value), self.n_heads)  # (B, H, S, Dh)
        bias = None
        if self.position == "rope":
            q = apply_rotary(q, start=S - T, base=self.rope_base)  # (B, H, T, Dh)
            k = apply_rotary(k, start=0, base=self.rope_base)  # (B, H, S, Dh)
        elif self.position == "alibi":
            bias = alibi_bias(self.n_heads, T, S, dtype=q.dtype, device=q.device)  # (H, T, S)
        out, weights = attention_with_bias(q, k, v, bias=bias, mask=mask, return_weights=True)
        out = self.out_proj(merge_heads(out))  # (B, T, D)
        return (out, weights) if return_weights else out
