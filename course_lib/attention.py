"""Scaled dot-product attention and multi-head attention, written out step by step.

Explained in chapter 02 (self-attention) and chapter 03 (multi-head attention).
Paper: Vaswani et al., "Attention Is All You Need", 2017, section 3.2.

This module is the one attention core of the course; every other module calls it:

* :func:`masked_softmax`: softmax over the keys with a boolean mask; a query that may see no key at
  all gets all-zero weights (not NaN, not a uniform average).
* :func:`scaled_dot_product_attention`: ``softmax(Q K^T / sqrt(Dh) + bias) V``, explicit, step by step,
  with an optional additive ``bias`` (ALiBi, relative positions) on top of the mask.
* :func:`fused_attention`: the same contract computed by PyTorch's fused kernel
  (``torch.nn.functional.scaled_dot_product_attention``), with fully masked rows zeroed by us (PyTorch's
  own answer for them depends on the kernel).
* :class:`MultiHeadAttention`: projections, heads, and one overridable :meth:`MultiHeadAttention.attend`
  step where the heads attend (subclasses such as
  :class:`course_lib.positional.PositionalMultiHeadAttention` override only that), an optional
  :class:`course_lib.kv_cache.KVCache`, and grouped-query attention (``n_kv_heads``).

Masks follow :mod:`course_lib.masks`: boolean, True means "may attend",
broadcastable to ``(B, H, T, S)``. Dimension names: B batch, H heads, T queries,
S keys, D model width, Dh head width.

Fully masked rows (a query that may see no key, e.g. a left pad under a causal mask) have no meaningful
answer, and PyTorch gives several:

* ``torch.nn.functional.scaled_dot_product_attention`` returns zeros on the CPU (since torch 2.5; NaN before),
  with its math and flash CPU kernels, in float64, float32, bfloat16 and float16. On a CUDA GPU it depends
  on the kernel and the dtype: measured on an H200 with torch 2.11, zeros in float32 (default, math and
  memory-efficient kernels), but the *mean of the values* in float16 with the default (cuDNN) kernel.
* ``torch.nn.MultiheadAttention`` returns NaN with its default ``need_weights=True`` (on the CPU, and on the
  GPU in float32 and float16, measured as above) and on its CPU fast path (eval mode, no grad,
  self-attention); it returns zeros only with ``need_weights=False`` off the fast path, which routes it to
  the function above.

Every function here returns zeros for such a row, whatever the kernel: :func:`masked_softmax` by its fill and
mask, :func:`fused_attention` by zeroing the row after PyTorch's kernel. Chapter 02 runs the CPU cases
(four dtypes, default, math and flash kernels) and quotes the GPU measurement.
"""
from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from course_lib.kv_cache import KVCache

__all__ = [
    "check_qkv",
    "masked_softmax",
    "scaled_dot_product_attention",
    "fused_attention",
    "split_heads",
    "merge_heads",
    "repeat_kv",
    "MultiHeadAttention",
    "set_fast_attention",
]


def _broadcasts_to(shape: torch.Size, target: tuple[int, ...]) -> bool:
    try:
        return torch.broadcast_shapes(shape, target) == torch.Size(target)
    except RuntimeError:
        return False


def check_qkv(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    fn: str = "scaled_dot_product_attention",
) -> tuple[int, ...]:
    """Check the shapes of an attention call; return the scores' shape ``(..., T, S)``.

    Args:
        q: queries ``(..., T, Dh)``; k: keys ``(..., S, Dh)``; v: values ``(..., S, Dv)``.
        mask: boolean, True = may attend, broadcastable to ``(..., T, S)``.
        bias: float, broadcastable to ``(..., T, S)``.
        fn: the name used in the error messages.

    Raises:
        ValueError: naming the expected and the received shapes (or dtype) when a tensor has fewer than
        2 dims, ``q`` and ``k`` differ in ``Dh``, ``k`` and ``v`` differ in ``S``, the batch dims do not
        broadcast, the mask is not boolean or the mask or bias does not broadcast to the scores.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() < 2:
            raise ValueError(
                f"{fn}: expected {name} of shape (..., {'T' if name == 'q' else 'S'}, Dh) with at least 2 dims, "
                f"received shape {tuple(t.shape)}"
            )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"{fn}: q and k must have the same last dim Dh; "
            f"received q {tuple(q.shape)} (Dh={q.shape[-1]}) and k {tuple(k.shape)} (Dh={k.shape[-1]})"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"{fn}: k and v must have the same number of keys S; "
            f"received k {tuple(k.shape)} (S={k.shape[-2]}) and v {tuple(v.shape)} (S={v.shape[-2]})"
        )
    try:
        batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"{fn}: batch dimensions do not broadcast: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        ) from None
    scores_shape = (*batch, q.shape[-2], k.shape[-2])
    if mask is not None:
        if mask.dtype != torch.bool:
            raise ValueError(
                f"{fn}: expected a boolean mask (True = may attend), received dtype {mask.dtype}; "
                f"see course_lib.masks.from_additive_mask (or pass a float score bias as bias=)"
            )
        if not _broadcasts_to(mask.shape, scores_shape):
            raise ValueError(
                f"{fn}: mask of shape {tuple(mask.shape)} does not broadcast to the scores' shape "
                f"{scores_shape} (..., T, S)"
            )
    if bias is not None:
        if not bias.is_floating_point():
            raise ValueError(f"{fn}: expected a float bias (added to the scores), received dtype {bias.dtype}; "
                             f"a boolean mask goes in mask=")
        if not _broadcasts_to(bias.shape, scores_shape):
            raise ValueError(
                f"{fn}: bias of shape {tuple(bias.shape)} does not broadcast to the scores' shape "
                f"{scores_shape} (..., T, S)"
            )
    return scores_shape


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""Softmax over the last dim (the keys), with a boolean mask, True = may attend.

    Forbidden scores are filled with the dtype's most negative *finite* value (not ``-inf``), so a
    row whose keys are all forbidden gets a finite softmax instead of ``0/0 = NaN``; the weights are
    then multiplied by the mask, so forbidden keys weigh exactly 0 and a fully masked row has all-zero
    weights. Gradients are finite everywhere (zero for a fully masked row).

    Args:
        scores: ``(..., T, S)``, float.
        mask: boolean, broadcastable to ``scores``; None = every key allowed.

    Shape:
        returns ``(..., T, S)`` (the scores' shape); each row sums to 1, or to 0 when fully masked.

    Raises:
        ValueError: if the mask is not boolean or does not broadcast to the scores.

    Equivalent to::

        w = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        w = torch.nan_to_num(w)          # a fully masked row: NaN -> 0
    """
    if mask is None:
        return torch.softmax(scores, dim=-1)
    if mask.dtype != torch.bool:
        raise ValueError(f"masked_softmax: expected a boolean mask (True = may attend), received dtype {mask.dtype}")
    if not _broadcasts_to(mask.shape, tuple(scores.shape)):
        raise ValueError(f"masked_softmax: mask of shape {tuple(mask.shape)} does not broadcast to the scores' "
                         f"shape {tuple(scores.shape)} (..., T, S)")
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)  # finite: no 0/0 in a fully masked row
    return torch.softmax(scores, dim=-1) * mask  # forbidden keys weigh 0; fully masked rows become zeros


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    return_weights: bool = False,
    dropout_p: float = 0.0,
):
    r"""Attention(Q, K, V) = softmax(Q K^T / sqrt(Dh) + bias) V, one step at a time.

    Args:
        q: queries ``(..., T, Dh)``.
        k: keys ``(..., S, Dh)``.
        v: values ``(..., S, Dv)``.
        mask: optional boolean mask, True = may attend, broadcastable to ``(..., T, S)``.
        bias: optional float score bias, broadcastable to ``(..., T, S)``, added to the scaled scores
            before the mask and the softmax (ALiBi, relative positions; Press et al. 2022, Shaw et al. 2018).
        return_weights: also return the attention weights.
        dropout_p: dropout on the weights (as PyTorch's function and ``nn.MultiheadAttention``); 0 = none.

    Shape:
        output ``(..., T, Dv)``; weights ``(..., T, S)``. Leading dims broadcast
        (usually ``(B, H)``).

    Returns:
        ``output``, or ``(output, weights)`` if ``return_weights``.

    Raises:
        ValueError: see :func:`check_qkv`.

    A query whose keys are all masked gets all-zero weights and outputs zeros
    (:func:`masked_softmax`): no NaN reaches the output or the gradients.

    Equivalent to (``torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=...)`` up to
    the fully masked rows)::

        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)) + bias
        scores = scores.masked_fill(~mask, float("-inf"))
        out = scores.softmax(-1) @ v
    """
    check_qkv(q, k, v, mask, bias)
    Dh = q.shape[-1]
    # 1. scores: how well each query matches each key
    scores = q @ k.transpose(-2, -1)  # (..., T, S)
    # 2. scale by sqrt(Dh): keeps the scores' variance near 1 whatever Dh is (chapter 02, Q17)
    scores = scores / math.sqrt(Dh)
    # 3. an additive bias, if any (chapter 04: ALiBi)
    if bias is not None:
        scores = scores + bias.to(scores.dtype)
    # 4. masked softmax over the keys: each row sums to 1 (0 when no key may be seen)
    weights = masked_softmax(scores, mask)  # (..., T, S)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    # 5. weighted sum of the values
    out = weights @ v  # (..., T, Dv)
    return (out, weights) if return_weights else out


_CAUSAL_CHECK_MAX = 4096  # compare masks with the causal one up to (4096, 4096): 16 MiB of booleans kept at most


@functools.lru_cache(maxsize=4)
def _lower_triangle(T: int, device: torch.device) -> torch.Tensor:
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()  # (T, T)


def _is_plain_causal(mask: torch.Tensor, T: int, S: int) -> bool:
    """True when every ``(T, T)`` slice of ``mask`` is exactly ``causal_mask(T)``: no padding in it.

    Then PyTorch's kernel can be told ``is_causal=True`` instead of reading a boolean mask, which is faster
    (transformers does the same for its SDPA attention). Only for ``T == S``: PyTorch's ``is_causal`` aligns
    to the upper left, the course's :func:`course_lib.masks.causal_mask` to the lower right, and the two agree
    only on a square.
    """
    if mask.dtype != torch.bool or T != S or T < 2 or T > _CAUSAL_CHECK_MAX:
        return False
    if mask.dim() < 2 or mask.shape[-2:] != (T, T):
        return False
    return torch.equal(mask, _lower_triangle(T, mask.device).expand(mask.shape))


def fused_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """:func:`scaled_dot_product_attention` computed by PyTorch's fused kernel (no weights returned).

    Same arguments, shapes and result as the explicit function (tested equal), but the ``(T, S)``
    weights are never stored: ``torch.nn.functional.scaled_dot_product_attention`` picks a fused kernel
    (flash, memory-efficient, cuDNN or math), as nanoGPT does. PyTorch's answer for a query whose keys are
    all masked depends on that kernel (zeros, the mean of the values, or NaN), so such rows are handled
    here: they are let to attend everywhere inside the kernel (finite values and gradients whatever the
    kernel) and their output is then set to zero, the course's contract. A mask that is exactly the causal
    mask of a square (every ``(T, T)`` slice equal to ``causal_mask(T)``, checked) is passed to the kernel as
    ``is_causal=True``, its fastest form.

    Shape:
        q ``(..., T, Dh)``, k ``(..., S, Dh)``, v ``(..., S, Dv)``; mask (boolean) and bias (float)
        broadcastable to ``(..., T, S)``; returns ``(..., T, Dv)``.

    Raises:
        ValueError: see :func:`check_qkv`.
    """
    check_qkv(q, k, v, mask, bias, fn="fused_attention")
    if bias is None and mask is not None and _is_plain_causal(mask, q.shape[-2], k.shape[-2]):
        # exactly the (T, T) causal mask: PyTorch's kernel skips the masked half itself (no empty rows here)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)  # (..., T, Dv)
    empty = None
    attn_mask = None
    if mask is not None:
        empty = ~mask.any(dim=-1, keepdim=True)  # (..., T, 1): queries that may see no key at all
        mask = mask | empty  # those rows attend everywhere inside the kernel; zeroed below
        attn_mask = mask
    if bias is not None:
        bias = bias.to(q.dtype)
        attn_mask = bias if mask is None else torch.where(mask, bias, float("-inf"))  # (..., T, S)
    while attn_mask is not None and attn_mask.dim() < 2:
        attn_mask = attn_mask.unsqueeze(0)  # PyTorch's kernel wants at least (T, S)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)  # (..., T, Dv)
    if empty is not None:
        out = out.masked_fill(empty, 0.0)  # a query with no key outputs zeros, whatever the kernel
    return out


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``(B, T, D)`` -> ``(B, H, T, Dh)`` with ``Dh = D // H``.

    The transpose matters: ``x.view(B, H, T, Dh)`` has the right shape but mixes
    positions and features (chapter 03 shows the wrong result it gives).
    """
    if x.dim() != 3:
        raise ValueError(f"split_heads: expected (B, T, D), received shape {tuple(x.shape)}")
    B, T, D = x.shape
    if D % n_heads:
        raise ValueError(f"split_heads: D={D} is not divisible by n_heads={n_heads}")
    return x.view(B, T, n_heads, D // n_heads).transpose(1, 2)  # (B, H, T, Dh)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(B, H, T, Dh)`` -> ``(B, T, H * Dh)``, the inverse of :func:`split_heads`."""
    if x.dim() != 4:
        raise ValueError(f"merge_heads: expected (B, H, T, Dh), received shape {tuple(x.shape)}")
    B, H, T, Dh = x.shape
    return x.transpose(1, 2).reshape(B, T, H * Dh)  # (B, T, D)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Grouped-query attention: each of the ``H_kv`` key/value heads serves ``n_rep`` query heads.

    ``(B, H_kv, S, Dh)`` -> ``(B, H_kv * n_rep, S, Dh)``; query head ``h`` reads key/value head
    ``h // n_rep`` (the layout of transformers' ``repeat_kv`` in LLaMA; Ainslie et al. 2023, "GQA").
    """
    if n_rep == 1:
        return x
    return x.repeat_interleave(n_rep, dim=-3)  # (B, H, S, Dh)


class MultiHeadAttention(nn.Module):
    """Multi-head attention, batch first.

    ``H`` heads of width ``Dh = D // H`` attend in parallel; their outputs are
    concatenated and projected back to ``D``. Same parameters and FLOPs as one
    head of width ``D`` (chapter 03).

    Args:
        d_model: model width ``D``.
        n_heads: number of query heads ``H``; must divide ``D``.
        bias: whether the four projections have biases.
        n_kv_heads: number of key/value heads ``H_kv`` (default ``H``); must divide ``H``.
            ``H_kv < H`` is grouped-query attention, ``H_kv = 1`` multi-query attention (Shazeer 2019;
            Ainslie et al. 2023): ``k_proj`` and ``v_proj`` are ``D -> H_kv * Dh`` and a cache stores only
            ``H_kv`` heads.
        dropout: dropout on the attention weights in training (as ``nn.MultiheadAttention``); 0 = none.
        fast: when no weights are asked for, attend with :func:`fused_attention` (PyTorch's fused kernel)
            instead of the explicit :func:`scaled_dot_product_attention`; both give the same result
            (tested). Set ``module.fast = False`` (or :func:`set_fast_attention`) to see every step.

    Shape:
        query ``(B, T, D)``, key and value ``(B, S, D)``; mask broadcastable to
        ``(B, H, T, S)``; output ``(B, T, D)``; weights ``(B, H, T, S)``.

    Subclasses change how heads attend by overriding :meth:`attend` alone (chapter 04's RoPE and ALiBi).
    """

    def __init__(self, d_model: int, n_heads: int, bias: bool = True, n_kv_heads: int | None = None,
                 dropout: float = 0.0, fast: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"MultiHeadAttention: d_model={d_model} is not divisible by n_heads={n_heads}")
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if n_kv_heads < 1 or n_heads % n_kv_heads:
            raise ValueError(f"MultiHeadAttention: n_kv_heads={n_kv_heads} must divide n_heads={n_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MultiHeadAttention: expected 0 <= dropout < 1, received {dropout}")
        self.d_model, self.n_heads, self.n_kv_heads = d_model, n_heads, n_kv_heads
        self.d_head = d_model // n_heads
        self.dropout, self.fast = dropout, fast
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.d_head, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.d_head, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def extra_repr(self) -> str:
        kv = "" if self.n_kv_heads == self.n_heads else f", n_kv_heads={self.n_kv_heads}"
        return f"d_model={self.d_model}, n_heads={self.n_heads}{kv}, dropout={self.dropout}, fast={self.fast}"

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        return_weights: bool = False,
        cache: "KVCache | None" = None,
        layer: int = 0,
    ):
        """Self-attention when ``key`` is None (or is ``query``), cross-attention otherwise.

        Args:
            query: ``(B, T, D)``.
            key, value: ``(B, S, D)``; default ``query`` (self-attention) and ``key``.
            mask: boolean, True = may attend, broadcastable to ``(B, H, T, S)``; with a cache, ``S``
                counts every cached key plus the new ones (use ``causal_mask(T, S)``).
            return_weights: also return the ``(B, H, T, S)`` weights (uses the explicit path).
            cache: a :class:`course_lib.kv_cache.KVCache`, updated in place. Self-attention: the new
                tokens' keys and values are appended to layer ``layer``'s and attention runs over all of
                them. Cross-attention: keys and values are computed from ``key``/``value`` (the encoder
                output) the first time only, then read back.
            layer: this layer's index in the cache.

        Returns:
            ``output`` ``(B, T, D)``, or ``(output, weights)``.

        Raises:
            ValueError: naming the expected and the received shapes.
        """
        self_attention = key is None or key is query
        key = query if key is None else key
        value = key if value is None else value
        for name, t, length in (("query", query, "T"), ("key", key, "S"), ("value", value, "S")):
            if t.dim() != 3 or t.shape[-1] != self.d_model:
                raise ValueError(
                    f"{type(self).__name__}: expected {name} of shape (B, {length}, {self.d_model}), "
                    f"received {tuple(t.shape)}"
                )
        if key.shape[0] != query.shape[0] or value.shape[:2] != key.shape[:2]:
            raise ValueError(f"{type(self).__name__}: expected key and value (B, S, D) with the query's B; received "
                             f"query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}")
        if mask is not None and mask.dim() > 4:
            raise ValueError(
                f"{type(self).__name__}: expected a mask broadcastable to (B, H, T, S), received {tuple(mask.shape)}"
            )
        q = split_heads(self.q_proj(query), self.n_heads)  # (B, H, T, Dh)
        cached = None if cache is None or self_attention else cache.get_cross(layer)
        if cached is not None:
            k, v = cached  # cross-attention: computed once from the encoder output
        else:
            k = split_heads(self.k_proj(key), self.n_kv_heads)  # (B, H_kv, S, Dh)
            v = split_heads(self.v_proj(value), self.n_kv_heads)  # (B, H_kv, S, Dh)
            if cache is not None and self_attention:
                k, v = cache.update(layer, k, v)  # (B, H_kv, S_cached + T, Dh): every key so far
            elif cache is not None:
                cache.set_cross(layer, k, v)
        out, weights = self.attend(q, k, v, mask=mask, return_weights=return_weights)  # (B, H, T, Dh)
        out = self.out_proj(merge_heads(out))  # (B, T, D)
        return (out, weights) if return_weights else out

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        return_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Where the heads attend: the one step subclasses override.

        Args:
            q: ``(B, H, T, Dh)``; k, v: ``(B, H_kv, S, Dh)`` (all the keys, cached ones included).
            mask: boolean, broadcastable to ``(B, H, T, S)``.
            bias: float score bias, broadcastable to ``(B, H, T, S)``.
            return_weights: compute and return the weights.

        Returns:
            ``(out, weights)``: ``out`` ``(B, H, T, Dh)``; ``weights`` ``(B, H, T, S)``, or None when
            not asked for.

        The explicit :func:`scaled_dot_product_attention` runs when weights are asked for or
        ``self.fast`` is False; otherwise :func:`fused_attention` (same result).
        """
        k = repeat_kv(k, self.n_heads // self.n_kv_heads)  # (B, H, S, Dh)
        v = repeat_kv(v, self.n_heads // self.n_kv_heads)  # (B, H, S, Dh)
        dropout_p = self.dropout if self.training else 0.0
        if self.fast and not return_weights:
            return fused_attention(q, k, v, mask=mask, bias=bias, dropout_p=dropout_p), None
        return scaled_dot_product_attention(q, k, v, mask=mask, bias=bias, return_weights=True, dropout_p=dropout_p)

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> "MultiHeadAttention":
        """Build one with the same weights as a ``torch.nn.MultiheadAttention``.

        See :func:`course_lib.interop.from_torch` (what is supported, what raises ``ValueError``).
        """
        from course_lib import interop

        return interop.mha_from_torch(mha, cls=cls)

    def load_torch_weights(self, mha: nn.MultiheadAttention) -> None:
        """Copy the weights of a ``torch.nn.MultiheadAttention`` into this module
        (:func:`course_lib.interop.load_torch_weights`)."""
        from course_lib import interop

        interop.load_torch_weights(self, mha)

    def to_torch(self) -> nn.MultiheadAttention:
        """An ``nn.MultiheadAttention`` (``batch_first=True``) with these weights
        (:func:`course_lib.interop.to_torch`)."""
        from course_lib import interop

        return interop.to_torch(self)


def set_fast_attention(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Turn the fused path on or off in every :class:`MultiHeadAttention` inside ``module``; returns it.

    ``set_fast_attention(model, False)`` makes every layer attend with the explicit
    :func:`scaled_dot_product_attention` (for teaching, and to compare the two paths).
    """
    for m in module.modules():
        if isinstance(m, MultiHeadAttention):
            m.fast = enabled
    return module
