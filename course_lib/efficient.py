"""Faster attention: sliding-window (local) attention and linear attention.

Explained in chapter 05 (attention against CNNs and RNNs; faster variants), section Q23.

Full attention compares every query with every key: ``T * S`` scores, so its time and
memory grow with the square of the length. Two classic ways out, both in this module:

* **Sliding-window (local) attention**: each query only sees the keys at most ``window``
  positions away (Longformer, Beltagy et al. 2020; Sparse Transformer, Child et al. 2019).
  :func:`sliding_window_mask` builds the band mask in the course convention (boolean,
  True = may attend); :func:`sliding_window_attention` applies it to dense attention
  (still ``T * S`` work: a mask hides scores, it does not skip them);
  :func:`blocked_sliding_window_attention` computes only the band, ``O(T * window)``.
  What it gives up: one layer cannot see further than ``window``.
* **Linear attention** (Katharopoulos et al. 2020, "Transformers are RNNs"): replace
  ``exp(q . k)`` by ``phi(q) . phi(k)`` with a positive feature map
  ``phi(x) = elu(x) + 1``. The sums over keys can then be computed once,
  ``phi(K)^T V`` of shape ``(Dh, Dv)``, and shared by every query: ``O(T * Dh * Dv)``.
  The causal version keeps running sums, an RNN whose state is a ``(Dh, Dv)`` matrix.
  What it gives up: its weights are not the softmax's and cannot be as sharp.

Masks follow :mod:`course_lib.masks`: boolean, True means "may attend", aligned to the
lower right when there are more keys than queries (``S > T``, a cache).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from course_lib.attention import check_qkv, masked_softmax, scaled_dot_product_attention
from course_lib.masks import causal_mask

__all__ = [
    "sliding_window_mask",
    "sliding_window_attention",
    "blocked_sliding_window_attention",
    "elu_feature_map",
    "linear_attention",
    "linear_attention_weights",
]


def _check_window(fn: str, window: int) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        raise ValueError(f"{fn}: expected an integer window >= 0, received {window!r}")


def _check_qkv(fn: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
               same_length: bool = False) -> None:
    """The core's checks (:func:`course_lib.attention.check_qkv`), plus the lengths these variants need."""
    check_qkv(q, k, v, fn=fn)
    if causal and k.shape[-2] < q.shape[-2]:
        raise ValueError(
            f"{fn}: expected S >= T (the keys include the queries' own positions); "
            f"received q {tuple(q.shape)} (T={q.shape[-2]}) and k {tuple(k.shape)} (S={k.shape[-2]})"
        )
    if same_length and k.shape[-2] != q.shape[-2]:
        raise ValueError(
            f"{fn}: expected as many keys as queries (S == T); received q {tuple(q.shape)} and k {tuple(k.shape)}"
        )


# --- Sliding-window (local) attention --------------------------------------------------------------


def sliding_window_mask(T: int, window: int, causal: bool = True, S: int | None = None,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """Band mask: a query may attend to the keys at most ``window`` positions away.

    Query ``i`` (of ``T``) sits at absolute position ``p = S - T + i`` (lower-right
    alignment, as :func:`course_lib.masks.causal_mask`). It may attend to key ``j`` when

    * ``causal=True``: ``0 <= p - j <= window`` (itself and the ``window`` keys before it);
    * ``causal=False`` (symmetric): ``|p - j| <= window`` (``window`` keys on each side).

    ``window=0`` lets each query see only itself; ``window >= S`` gives back the causal
    mask (``causal=True``) or the full mask (``causal=False``).

    Args:
        T: number of queries.
        window: how far a query may look, in positions, ``>= 0``.
        causal: only look back (True) or both ways (False).
        S: number of keys (default ``T``), ``>= T``.
        device: where to build the mask.

    Shape:
        returns ``(T, S)``, boolean, True = may attend.

    Equivalent to::

        p = torch.arange(S - T, S)[:, None]          # query positions (T, 1)
        j = torch.arange(S)[None, :]                 # key positions (1, S)
        mask = (p - j <= window) & (p - j >= 0 if causal else j - p <= window)
    """
    S = T if S is None else S
    _check_window("sliding_window_mask", window)
    if T < 0 or S < 0:
        raise ValueError(f"sliding_window_mask: expected non-negative sizes, received T={T}, S={S}")
    if S < T:
        raise ValueError(f"sliding_window_mask: expected S >= T, received T={T}, S={S}")
    p = torch.arange(S - T, S, device=device)[:, None]  # (T, 1) absolute query positions
    j = torch.arange(S, device=device)[None, :]  # (1, S) key positions
    dist = p - j  # (T, S): how far back key j is from query i
    if causal:
        return (dist >= 0) & (dist <= window)  # (T, S)
    return dist.abs() <= window  # (T, S)


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                             causal: bool = True, return_weights: bool = False):
    """Dense attention with a sliding-window mask (the reference; ``O(T * S)`` work).

    All ``T * S`` scores are computed, then the band mask hides the far ones: the result is
    local attention, but it is no faster than full attention. See
    :func:`blocked_sliding_window_attention` for the version that skips the work.

    Args:
        q: queries ``(..., T, Dh)``; k: keys ``(..., S, Dh)``; v: values ``(..., S, Dv)``, ``S >= T``.
        window: how far a query may look (see :func:`sliding_window_mask`).
        causal: only look back (True) or both ways (False).
        return_weights: also return the ``(..., T, S)`` weights.

    Shape:
        output ``(..., T, Dv)``.

    Equivalent to::

        scaled_dot_product_attention(q, k, v, mask=sliding_window_mask(T, window, causal, S))
    """
    _check_qkv("sliding_window_attention", q, k, v)
    mask = sliding_window_mask(q.shape[-2], window, causal=causal, S=k.shape[-2], device=q.device)  # (T, S)
    return scaled_dot_product_attention(q, k, v, mask=mask, return_weights=return_weights)


def blocked_sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                                     causal: bool = True, block_size: int | None = None) -> torch.Tensor:
    """Sliding-window self-attention that only computes the band: ``O(T * (window + block_size))``.

    The queries are cut into blocks of ``b = block_size`` consecutive positions. Block ``n``
    (queries ``n*b .. n*b + b - 1``) can only reach the keys ``n*b - window .. n*b + b - 1``
    (``+ window`` more on the right when symmetric): a chunk of ``c = b + window`` keys
    (``b + 2 * window``). Each block is a small dense attention, ``(b, c)`` scores, with a
    band mask inside the chunk. With ``b`` about ``window`` the work is ``T * (b + window)``, about
    ``2 * T * window`` scores (``3 * T * window`` symmetric), instead of ``T * T``.

    Args:
        q, k, v: ``(..., T, Dh)``, ``(..., T, Dh)``, ``(..., T, Dv)``: self-attention, ``S == T``.
        window: how far a query may look, ``>= 0``.
        causal: only look back (True) or both ways (False).
        block_size: queries per block (default ``max(window, 16)``).

    Shape:
        output ``(..., T, Dv)``.

    Equals :func:`sliding_window_attention` up to rounding (tested in ``tests/lib/test_efficient.py``).
    """
    fn = "blocked_sliding_window_attention"
    _check_qkv(fn, q, k, v, same_length=True)
    _check_window(fn, window)
    b = max(window, 16) if block_size is None else block_size
    if isinstance(b, bool) or not isinstance(b, int) or b < 1:
        raise ValueError(f"{fn}: expected an integer block_size >= 1, received {block_size!r}")
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    q, k, v = (t.expand(*batch, *t.shape[-2:]) for t in (q, k, v))
    T, Dh = q.shape[-2], q.shape[-1]
    if T == 0:
        return q.new_zeros(*batch, 0, v.shape[-1])
    w = window
    nb = math.ceil(T / b)  # number of query blocks
    right = w if not causal else 0  # keys needed after a block's last query
    c = b + w + right  # keys per chunk
    # pad the sequence so that every block is full and every chunk exists
    q_p = F.pad(q, (0, 0, 0, nb * b - T))  # (..., nb*b, Dh)
    k_p = F.pad(k, (0, 0, w, nb * b - T + right))  # (..., w + nb*b + right, Dh)
    v_p = F.pad(v, (0, 0, w, nb * b - T + right))  # (..., w + nb*b + right, Dv)
    q_blk = q_p.unflatten(-2, (nb, b))  # (..., nb, b, Dh)
    k_chunks = k_p.unfold(-2, c, b)  # (..., nb, Dh, c): chunk n = padded keys n*b .. n*b + c - 1
    v_chunks = v_p.unfold(-2, c, b).transpose(-1, -2)  # (..., nb, c, Dv)
    # which (query, key) pairs of a block may attend: the band, and no padding key
    r = torch.arange(b, device=q.device)[:, None]  # (b, 1) query offset in the block
    s = torch.arange(c, device=q.device)[None, :]  # (1, c) key offset in the chunk
    dist = r - s + w  # (b, c): query position minus key position
    band = (dist >= 0) & (dist <= w) if causal else dist.abs() <= w  # (b, c)
    key_pos = torch.arange(nb, device=q.device)[:, None] * b + s - w  # (nb, c) absolute key positions
    real = (key_pos >= 0) & (key_pos < T)  # (nb, c)
    mask = band[None, :, :] & real[:, None, :]  # (nb, b, c)
    scores = (q_blk @ k_chunks) / math.sqrt(Dh)  # (..., nb, b, c)
    weights = masked_softmax(scores, mask)  # (..., nb, b, c); the course's one masked softmax
    out = weights @ v_chunks  # (..., nb, b, Dv)
    return out.flatten(-3, -2)[..., :T, :]  # (..., T, Dv)


# --- Linear attention ------------------------------------------------------------------------------


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """``phi(x) = elu(x) + 1``: positive everywhere, so ``phi(q) . phi(k) > 0`` acts as a similarity
    (Katharopoulos et al. 2020)."""
    return F.elu(x) + 1


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                     feature_map: Callable[[torch.Tensor], torch.Tensor] = elu_feature_map,
                     eps: float = 1e-6, chunk_size: int = 64) -> torch.Tensor:
    r"""Linear attention: softmax's ``exp(q . k)`` replaced by ``phi(q) . phi(k)``.

    Query ``i`` gets ``sum_j phi(q_i).phi(k_j) v_j / (sum_j phi(q_i).phi(k_j) + eps)``. Because
    ``phi(q_i)`` does not depend on ``j`` it comes out of the sums, which are computed once:

    * non-causal: ``KV = phi(K)^T V`` ``(..., Dh, Dv)`` and ``z = sum_j phi(k_j)`` ``(..., Dh)``;
      ``O(S * Dh * Dv)``, no ``T x S`` matrix.
    * causal: query ``i`` reads the running sums up to its own position (lower-right aligned
      when ``S > T``): an RNN whose state is ``(Dh, Dv)``. Computed in chunks of
      ``chunk_size`` keys: the running sums between chunks, a masked ``(C, C)`` product inside
      one; ``O(S * (C + Dv) * Dh)``.

    Args:
        q: queries ``(..., T, Dh)``; k: keys ``(..., S, Dh)``; v: values ``(..., S, Dv)``.
        causal: query ``i`` sees only keys ``<= S - T + i``; needs ``S >= T``.
        feature_map: ``phi``, applied to the last dim; must give positive features.
        eps: added to the normaliser.
        chunk_size: keys per chunk in the causal case (any value gives the same result).

    Shape:
        output ``(..., T, Dv)``.

    Equivalent to (``O(T * S)``, see :func:`linear_attention_weights`)::

        a = feature_map(q) @ feature_map(k).transpose(-2, -1)     # (..., T, S)
        if causal: a = a * causal_mask(T, S)
        out = (a @ v) / (a.sum(-1, keepdim=True) + eps)
    """
    fn = "linear_attention"
    _check_qkv(fn, q, k, v, causal=causal)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{fn}: expected an integer chunk_size >= 1, received {chunk_size!r}")
    fq, fk = feature_map(q), feature_map(k)  # (..., T, Dh), (..., S, Dh)
    if not causal:
        kv = fk.transpose(-2, -1) @ v  # (..., Dh, Dv): sum_j phi(k_j) v_j^T
        z = fk.sum(dim=-2)  # (..., Dh): sum_j phi(k_j)
        num = fq @ kv  # (..., T, Dv)
        den = (fq * z.unsqueeze(-2)).sum(dim=-1, keepdim=True)  # (..., T, 1)
        return num / (den + eps)
    # causal, in chunks of C keys: exact running sums between chunks, a small masked product inside
    T, S = q.shape[-2], k.shape[-2]
    C = max(1, min(chunk_size, S))  # a chunk longer than the sequence would only add padding
    n = math.ceil(S / C)  # number of chunks
    # queries are placed at positions S - T .. S - 1 (lower right); pad both sides to n * C positions
    fq = F.pad(fq, (0, 0, S - T, n * C - S))  # (..., n*C, Dh)
    fk = F.pad(fk, (0, 0, 0, n * C - S))  # (..., n*C, Dh); padded keys have phi = 0: they add nothing
    v = F.pad(v, (0, 0, 0, n * C - S))  # (..., n*C, Dv)
    fq, fk, v = fq.unflatten(-2, (n, C)), fk.unflatten(-2, (n, C)), v.unflatten(-2, (n, C))  # (..., n, C, .)
    # state before each chunk: sums over all earlier chunks (an exclusive running sum)
    kv = fk.transpose(-2, -1) @ v  # (..., n, Dh, Dv): each chunk's sum of phi(k_j) v_j^T
    kv = torch.cumsum(kv, dim=-3) - kv  # (..., n, Dh, Dv): chunks before this one
    z = fk.sum(dim=-2)  # (..., n, Dh)
    z = torch.cumsum(z, dim=-2) - z  # (..., n, Dh)
    # inside a chunk: the O(C^2) form with a causal mask
    a = (fq @ fk.transpose(-2, -1)) * causal_mask(C, device=q.device)  # (..., n, C, C)
    num = fq @ kv + a @ v  # (..., n, C, Dv)
    den = (fq * z.unsqueeze(-2)).sum(dim=-1, keepdim=True) + a.sum(dim=-1, keepdim=True)  # (..., n, C, 1)
    out = (num / (den + eps)).flatten(-3, -2)  # (..., n*C, Dv)
    return out[..., S - T:S, :]  # (..., T, Dv)


def linear_attention_weights(q: torch.Tensor, k: torch.Tensor, causal: bool = False,
                             feature_map: Callable[[torch.Tensor], torch.Tensor] = elu_feature_map,
                             eps: float = 1e-6) -> torch.Tensor:
    """The ``(..., T, S)`` weights that :func:`linear_attention` applies without ever forming them.

    ``weights @ v`` equals ``linear_attention(q, k, v, causal)``. Useful to compare with the
    softmax's weights; costs ``O(T * S)`` like full attention.

    Shape:
        q ``(..., T, Dh)``, k ``(..., S, Dh)``; returns ``(..., T, S)``, rows summing to about 1.
    """
    _check_qkv("linear_attention_weights", q, k, k, causal=causal)
    a = feature_map(q) @ feature_map(k).transpose(-2, -1)  # (..., T, S)
    if causal:
        a = a * causal_mask(q.shape[-2], k.shape[-2], device=q.device)  # (T, S), lower-right aligned
    return a / (a.sum(dim=-1, keepdim=True) + eps)
