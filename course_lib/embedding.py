"""Token embeddings: a token id becomes a vector by looking up a row of a (V, D) table.

Explained in chapter 01 (sequences in, sequences out), questions Q1, Q34 and Q35.
Paper: Vaswani et al., "Attention Is All You Need", 2017, section 3.4 ("we use learned
embeddings to convert the input tokens ... to vectors of dimension d_model").

Three ways to say the same thing, all equal (tested in ``tests/test_embedding.py``):

* lookup: ``weight[ids]``;
* one-hot times a matrix: ``one_hot(ids, V) @ weight`` (row ``i`` of the identity
  picks row ``i`` of ``weight``);
* ``torch.nn.Embedding`` / ``torch.nn.functional.embedding``.

The lookup works element by element, so ``ids`` may have any shape ``(...)`` and the
result has shape ``(..., D)``: nothing in the table depends on the sequence length.

``padding_idx`` (the id of ``<pad>``) changes two things, as in PyTorch: its row starts
as zeros, and it never receives a gradient, so it stays zero during training. It does
*not* force the output to zero: if the row is overwritten, the lookup returns the new
row. It does not hide padding from attention either; that is the padding mask's job
(``course_lib.masks.padding_mask``).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["one_hot", "embedding_one_hot", "embedding_lookup", "Embedding"]


def _check_ids(ids: torch.Tensor, V: int, who: str) -> None:
    if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8,
                                                              torch.uint8):
        got = ids.dtype if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise ValueError(f"{who}: expected an integer tensor of token ids, received {got}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= V):
        raise ValueError(
            f"{who}: expected ids in [0, {V}) (V = {V}), received values from {int(ids.min())} to {int(ids.max())}"
        )


def _check_weight(weight: torch.Tensor, who: str) -> None:
    if weight.dim() != 2:
        raise ValueError(f"{who}: expected weight of shape (V, D), received shape {tuple(weight.shape)}")


def one_hot(ids: torch.Tensor, V: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot vectors: position ``ids[...]`` holds 1, every other entry 0.

    Args:
        ids: integer token ids, any shape ``(...)``, each in ``[0, V)``.
        V: vocabulary size.
        dtype: the result's dtype (float, so that it can be multiplied by a weight matrix).

    Shape:
        ``(...)`` -> ``(..., V)``.

    Equivalent to::

        torch.nn.functional.one_hot(ids, V).to(dtype)
    """
    _check_ids(ids, V, "one_hot")
    return (ids[..., None] == torch.arange(V, device=ids.device)).to(dtype)  # (..., V)


def embedding_one_hot(ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The embedding written as a matrix product: ``one_hot(ids, V) @ weight``.

    Slow (it builds a ``(..., V)`` tensor of zeros and multiplies ``V * D`` numbers per
    token) but it shows that the lookup is a linear layer with one-hot inputs.

    Shape:
        ids ``(...)``, weight ``(V, D)`` -> ``(..., D)``.
    """
    _check_weight(weight, "embedding_one_hot")
    return one_hot(ids, weight.shape[0], weight.dtype) @ weight  # (..., V) @ (V, D) -> (..., D)


def embedding_lookup(ids: torch.Tensor, weight: torch.Tensor, padding_idx: int | None = None) -> torch.Tensor:
    """The embedding as a table lookup: row ``ids[...]`` of ``weight``.

    Args:
        ids: integer token ids, any shape ``(...)``, each in ``[0, V)``.
        weight: the table, ``(V, D)``.
        padding_idx: if given, positions holding this id pass no gradient to ``weight``
            (so row ``padding_idx`` of ``weight.grad`` stays 0). The forward value is unchanged.

    Shape:
        ids ``(...)``, weight ``(V, D)`` -> ``(..., D)``.

    Equivalent to::

        torch.nn.functional.embedding(ids, weight, padding_idx=padding_idx)
    """
    _check_weight(weight, "embedding_lookup")
    V = weight.shape[0]
    _check_ids(ids, V, "embedding_lookup")
    out = weight[ids.long()]  # (..., D)
    if padding_idx is not None:
        is_pad = (ids == _normalise_padding_idx(padding_idx, V))[..., None]  # (..., 1)
        out = torch.where(is_pad, out.detach(), out)  # same values; no gradient flows back through padding
    return out


def _normalise_padding_idx(padding_idx: int | None, V: int) -> int | None:
    if padding_idx is None:
        return None
    if not -V <= padding_idx < V:
        raise ValueError(f"Embedding: expected padding_idx in [-{V}, {V}), received {padding_idx}")
    return padding_idx % V


class Embedding(nn.Module):
    """A learned table of ``V`` vectors of width ``D``; same behaviour as ``torch.nn.Embedding``.

    Args:
        num_embeddings: vocabulary size ``V``.
        embedding_dim: vector width ``D``.
        padding_idx: id whose row starts at zero and never gets a gradient (negative counts
            from the end, as in PyTorch).

    Shape:
        ids ``(...)`` (any shape, any sequence length) -> ``(..., D)``.

    Equivalent to::

        torch.nn.Embedding(num_embeddings, embedding_dim, padding_idx=padding_idx)
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None):
        super().__init__()
        self.num_embeddings = num_embeddings  # V
        self.embedding_dim = embedding_dim  # D
        self.padding_idx = _normalise_padding_idx(padding_idx, num_embeddings)
        self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim))  # (V, D)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Standard normal entries, as ``nn.Embedding``; the padding row is zero."""
        nn.init.normal_(self.weight)
        if self.padding_idx is not None:
            with torch.no_grad():
                self.weight[self.padding_idx].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return embedding_lookup(ids, self.weight, self.padding_idx)  # (..., D)

    def extra_repr(self) -> str:
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"

    @classmethod
    def from_torch(cls, emb: nn.Embedding) -> "Embedding":
        """Copy a ``torch.nn.Embedding`` (its weight and ``padding_idx``)."""
        out = cls(emb.num_embeddings, emb.embedding_dim, emb.padding_idx)
        with torch.no_grad():
            out.weight.copy_(emb.weight)
        return out
