"""Scaled dot-product attention and multi-head attention, written out step by step.

Explained in chapter 02 (self-attention) and chapter 03 (multi-head attention).
Paper: Vaswani et al., "Attention Is All You Need", 2017, section 3.2.

Masks follow :mod:`course_lib.masks`: boolean, True means "may attend",
broadcastable to ``(B, H, T, S)``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "scaled_dot_product_attention",
    "split_heads",
    "merge_heads",
    "MultiHeadAttention",
]


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() < 2:
            raise ValueError(
                f"scaled_dot_product_attention: expected {name} of shape (..., L, D) with at least 2 dims, "
                f"received shape {_shape(t)}"
            )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"scaled_dot_product_attention: q and k must have the same last dim Dh; "
            f"received q {_shape(q)} (Dh={q.shape[-1]}) and k {_shape(k)} (Dh={k.shape[-1]})"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"scaled_dot_product_attention: k and v must have the same number of keys S; "
            f"received k {_shape(k)} (S={k.shape[-2]}) and v {_shape(v)} (S={v.shape[-2]})"
        )
    try:
        batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"scaled_dot_product_attention: batch dimensions do not broadcast: "
            f"q {_shape(q)}, k {_shape(k)}, v {_shape(v)}"
        ) from None
    scores_shape = (*batch, q.shape[-2], k.shape[-2])
    if mask is not None:
        if mask.dtype != torch.bool:
            raise ValueError(
                f"scaled_dot_product_attention: expected a boolean mask (True = may attend), "
                f"received dtype {mask.dtype}; see course_lib.masks.from_additive_mask"
            )
        try:
            ok = torch.broadcast_shapes(mask.shape, scores_shape) == torch.Size(scores_shape)
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"scaled_dot_product_attention: mask of shape {_shape(mask)} does not broadcast to the "
                f"scores' shape {scores_shape} (..., T, S)"
            )


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    return_weights: bool = False,
):
    r"""Attention(Q, K, V) = softmax(Q K^T / sqrt(Dh)) V, one step at a time.

    Args:
        q: queries ``(..., T, Dh)``.
        k: keys ``(..., S, Dh)``.
        v: values ``(..., S, Dv)``.
        mask: optional boolean mask, True = may attend, broadcastable to ``(..., T, S)``.
        return_weights: also return the attention weights.

    Shape:
        output ``(..., T, Dv)``; weights ``(..., T, S)``. Leading dims broadcast
        (usually ``(B, H)``).

    Returns:
        ``output``, or ``(output, weights)`` if ``return_weights``.

    Masked scores are filled with the dtype's most negative *finite* value, not
    ``-inf``: a query whose keys are all masked then gets a finite softmax
    instead of ``0/0 = NaN``. The weights are then multiplied by the mask, so
    such a row has all-zero weights and outputs zeros (the same result as
    PyTorch's own function), and no NaN reaches the output or the gradients.

    Equivalent to::

        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        scores = scores.masked_fill(~mask, float("-inf"))
        out = scores.softmax(-1) @ v
    """
    _check_qkv(q, k, v, mask)
    Dh = q.shape[-1]
    # 1. scores: how well each query matches each key
    scores = q @ k.transpose(-2, -1)  # (..., T, S)
    # 2. scale by sqrt(Dh): keeps the scores' variance near 1 whatever Dh is (chapter 02, Q17)
    scores = scores / math.sqrt(Dh)
    # 3. mask: forbidden keys get the most negative finite value
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    # 4. softmax over the keys: each row sums to 1
    weights = torch.softmax(scores, dim=-1)  # (..., T, S)
    if mask is not None:
        weights = weights * mask  # fully masked rows become all zeros, not uniform
    # 5. weighted sum of the values
    out = weights @ v  # (..., T, Dv)
    return (out, weights) if return_weights else out


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``(B, T, D)`` -> ``(B, H, T, Dh)`` with ``Dh = D // H``.

    The transpose matters: ``x.view(B, H, T, Dh)`` has the right shape but mixes
    positions and features (chapter 03 shows the wrong result it gives).
    """
    if x.dim() != 3:
        raise ValueError(f"split_heads: expected (B, T, D), received shape {_shape(x)}")
    B, T, D = x.shape
    if D % n_heads:
        raise ValueError(f"split_heads: D={D} is not divisible by n_heads={n_heads}")
    return x.view(B, T, n_heads, D // n_heads).transpose(1, 2)  # (B, H, T, Dh)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(B, H, T, Dh)`` -> ``(B, T, H * Dh)``, the inverse of :func:`split_heads`."""
    if x.dim() != 4:
        raise ValueError(f"merge_heads: expected (B, H, T, Dh), received shape {_shape(x)}")
    B, H, T, Dh = x.shape
    return x.transpose(1, 2).reshape(B, T, H * Dh)  # (B, T, D)


class MultiHeadAttention(nn.Module):
    """Multi-head attention, batch first.

    ``H`` heads of width ``Dh = D // H`` attend in parallel; their outputs are
    concatenated and projected back to ``D``. Same parameters and FLOPs as one
    head of width ``D`` (chapter 03).

    Args:
        d_model: model width ``D``.
        n_heads: number of heads ``H``; must divide ``D``.
        bias: whether the four projections have biases.

    Shape:
        query ``(B, T, D)``, key and value ``(B, S, D)``; mask broadcastable to
        ``(B, H, T, S)``; output ``(B, T, D)``; weights ``(B, H, T, S)``.
    """

    def __init__(self, d_model: int, n_heads: int, bias: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"MultiHeadAttention: d_model={d_model} is not divisible by n_heads={n_heads}")
        self.d_model, self.n_heads = d_model, n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        return_weights: bool = False,
    ):
        """Self-attention when ``key``/``value`` are None, cross-attention otherwise."""
        key = query if key is None else key
        value = key if value is None else value
        for name, t in (("query", query), ("key", key), ("value", value)):
            if t.dim() != 3 or t.shape[-1] != self.d_model:
                raise ValueError(
                    f"MultiHeadAttention: expected {name} of shape (B, L, {self.d_model}), "
                    f"received {_shape(t)}"
                )
        if mask is not None and mask.dim() > 4:
            raise ValueError(
                f"MultiHeadAttention: expected a mask broadcastable to (B, H, T, S), received {_shape(mask)}"
            )
        q = split_heads(self.q_proj(query), self.n_heads)  # (B, H, T, Dh)
        k = split_heads(self.k_proj(key), self.n_heads)  # (B, H, S, Dh)
        v = split_heads(self.v_proj(value), self.n_heads)  # (B, H, S, Dh)
        out, weights = scaled_dot_product_attention(q, k, v, mask=mask, return_weights=True)
        out = self.out_proj(merge_heads(out))  # (B, T, D)
        return (out, weights) if return_weights else out

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> "MultiHeadAttention":
        """Build one with the same weights as a ``torch.nn.MultiheadAttention``.

        PyTorch keeps the three input projections stacked in ``in_proj_weight``
        ``(3D, D)``; we split it into ``W_q``, ``W_k``, ``W_v``.
        """
        if not mha._qkv_same_embed_dim:
            raise ValueError("MultiHeadAttention.from_torch: kdim/vdim different from embed_dim are not supported")
        bias = mha.in_proj_bias is not None
        ours = cls(mha.embed_dim, mha.num_heads, bias=bias)
        ours.to(dtype=mha.in_proj_weight.dtype, device=mha.in_proj_weight.device)  # no silent rounding
        ours.load_torch_weights(mha)
        return ours

    @torch.no_grad()
    def load_torch_weights(self, mha: nn.MultiheadAttention) -> None:
        """Copy the weights of a ``torch.nn.MultiheadAttention`` into this module."""
        if mha.embed_dim != self.d_model or mha.num_heads != self.n_heads:
            raise ValueError(
                f"load_torch_weights: expected embed_dim={self.d_model}, num_heads={self.n_heads}; "
                f"received embed_dim={mha.embed_dim}, num_heads={mha.num_heads}"
            )
        w_q, w_k, w_v = mha.in_proj_weight.chunk(3, dim=0)  # each (D, D)
        self.q_proj.weight.copy_(w_q)
        self.k_proj.weight.copy_(w_k)
        self.v_proj.weight.copy_(w_v)
        self.out_proj.weight.copy_(mha.out_proj.weight)
        if mha.in_proj_bias is not None:
            b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
            self.q_proj.bias.copy_(b_q)
            self.k_proj.bias.copy_(b_k)
            self.v_proj.bias.copy_(b_v)
            self.out_proj.bias.copy_(mha.out_proj.bias)
