"""A key/value cache for incremental decoding, used by every decoder of the course.

Explained in chapter 07 (masks: one query over a cache) and the decoding chapters that follow.

When a decoder generates token ``t``, the keys and values of tokens ``0 .. t-1`` have not changed
(causal attention: a token never looks at later ones), so recomputing them at every step is wasted
work. A cache keeps, for every decoder layer, the keys and values computed so far; each step computes
them only for the new tokens and appends them (``update``). Cross-attention keys and values depend only
on the encoder output, so they are computed once and stored (``set_cross`` / ``get_cross``).

Dimension names: B batch, H_kv key/value heads (H without grouped-query attention), S keys cached so
far, Dh head width, L layers.

Source: the same design as transformers' ``DynamicCache`` (``update(key_states, value_states,
layer_idx)``, ``get_seq_length()``, ``reorder_cache(beam_idx)``) and ``EncoderDecoderCache`` (a
self-attention cache next to a cross-attention one), and the older ``past_key_values`` format of
GPT-2 in transformers: a tuple with one ``(key, value)`` pair per layer, each ``(B, H, S, Dh)``
(:meth:`KVCache.to_legacy`, :meth:`KVCache.from_legacy`). A ``KVCache`` is itself indexable and
iterable as that tuple of pairs, so a decoder-only model can take it as its ``past_key_values``.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import torch

__all__ = ["KVCache"]

Pair = tuple[torch.Tensor, torch.Tensor]


def _check_kv(fn: str, k: torch.Tensor, v: torch.Tensor) -> None:
    if k.dim() != 4 or v.dim() != 4 or k.shape[:3] != v.shape[:3]:
        raise ValueError(f"KVCache.{fn}: expected k (B, H, S_new, Dh) and v (B, H, S_new, Dv) with the same B, H "
                         f"and S_new; received k {tuple(k.shape)} and v {tuple(v.shape)}")


class KVCache:
    """Keys and values of every decoder layer seen so far, for one batch of sequences.

    Self-attention entries grow by the new tokens at each step; cross-attention entries are written
    once. The cache is updated in place by the attention layers that receive it
    (:class:`course_lib.attention.MultiHeadAttention` with ``cache=``, ``layer=``).

    Shape:
        every stored tensor is ``(B, H_kv, S, Dh)``; self-attention ``S`` is :attr:`length` (the keys
        cached so far), cross-attention ``S`` is the source length.

    Example (encoder-decoder, greedy; ``course_lib.transformer.Transformer``)::

        cache = KVCache()
        memory = model.encode(src, src_mask)
        logits = model.decode(bos, memory, cross_mask=src_mask, cache=cache)    # (B, 1, V)
        for _ in range(n):
            token = logits[:, -1].argmax(-1, keepdim=True)                      # (B, 1)
            logits = model.decode(token, memory, cross_mask=src_mask, cache=cache)

    As ``past_key_values``: ``len(cache)`` is the number of layers stored, ``cache[i]`` is layer
    ``i``'s ``(k, v)``, ``for k, v in cache`` walks the layers.
    """

    def __init__(self, past_key_values: Iterable[Pair] | None = None):
        """An empty cache, or one holding ``past_key_values`` (one ``(k, v)`` per layer, GPT-2 format)."""
        self._self: list[Pair | None] = []  # per layer: keys and values so far, (B, H_kv, S, Dh) each
        self._cross: list[Pair | None] = []  # per layer: keys and values of the encoder output
        for layer, (k, v) in enumerate(past_key_values or ()):
            self.update(layer, k, v)

    # --- self-attention -------------------------------------------------------------------------
    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> Pair:
        """Append the new tokens' keys and values of layer ``layer``; return all of that layer's.

        Args:
            layer: the layer index, ``0 .. L-1``.
            k: new keys ``(B, H_kv, S_new, Dh)``; v: new values ``(B, H_kv, S_new, Dv)``.

        Returns:
            ``(k_all, v_all)``: ``(B, H_kv, S + S_new, Dh)`` and ``(B, H_kv, S + S_new, Dv)``, the cached
            keys followed by the new ones.

        Raises:
            ValueError: if the shapes are not 4-D or do not match what the layer already holds.

        Equivalent to ``k_all = torch.cat([k_cached, k], dim=2)`` (transformers' ``DynamicCache.update``).
        """
        if layer < 0:
            raise ValueError(f"KVCache.update: expected a layer index >= 0, received {layer}")
        _check_kv("update", k, v)
        while len(self._self) <= layer:
            self._self.append(None)
        old = self._self[layer]
        if old is not None:
            k_old, v_old = old
            if k_old.shape[:2] != k.shape[:2] or k_old.shape[-1] != k.shape[-1] or v_old.shape[-1] != v.shape[-1]:
                raise ValueError(
                    f"KVCache.update: layer {layer} holds keys {tuple(k_old.shape)} and values {tuple(v_old.shape)} "
                    f"(B, H, S, Dh); received k {tuple(k.shape)} and v {tuple(v.shape)} with another B, H or Dh"
                )
            k = torch.cat([k_old, k], dim=-2)  # (B, H_kv, S + S_new, Dh)
            v = torch.cat([v_old, v], dim=-2)  # (B, H_kv, S + S_new, Dv)
        self._self[layer] = (k, v)
        return k, v

    def get_length(self, layer: int = 0) -> int:
        """Number of keys cached in layer ``layer``'s self-attention (0 if nothing yet)."""
        if layer >= len(self._self) or self._self[layer] is None:
            return 0
        return self._self[layer][0].shape[-2]

    @property
    def length(self) -> int:
        """Number of tokens cached so far (layer 0's self-attention keys): where new positions start."""
        return self.get_length(0)

    # --- cross-attention ------------------------------------------------------------------------
    def get_cross(self, layer: int) -> Pair | None:
        """Layer ``layer``'s cross-attention ``(k, v)``, each ``(B, H_kv, S_src, Dh)``, or None if not yet stored."""
        return self._cross[layer] if layer < len(self._cross) else None

    def set_cross(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store layer ``layer``'s cross-attention keys and values, computed once from the encoder output.

        Raises:
            ValueError: if the shapes are not ``(B, H_kv, S_src, Dh)``.
        """
        _check_kv("set_cross", k, v)
        while len(self._cross) <= layer:
            self._cross.append(None)
        self._cross[layer] = (k, v)

    # --- beam search ----------------------------------------------------------------------------
    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows ``index`` of every stored tensor, in that order (beam search).

        ``index`` is a 1-D tensor of row numbers; rows may repeat (one source expanded into several
        beams: ``torch.arange(B).repeat_interleave(n_beams)``). Self- and cross-attention entries are
        reordered alike. Equivalent to transformers' ``Cache.reorder_cache(beam_idx)``.

        Raises:
            ValueError: if ``index`` is not a 1-D integer tensor.
        """
        if not isinstance(index, torch.Tensor) or index.dim() != 1 or index.is_floating_point():
            got = tuple(index.shape) if isinstance(index, torch.Tensor) else type(index).__name__
            raise ValueError(f"KVCache.reorder: expected a 1-D tensor of batch rows, received {got}")
        for store in (self._self, self._cross):
            for i, pair in enumerate(store):
                if pair is not None:
                    k, v = pair
                    idx = index.to(device=k.device, dtype=torch.long)
                    store[i] = (k.index_select(0, idx), v.index_select(0, idx))

    # --- past_key_values (GPT-2 format) ---------------------------------------------------------
    def __len__(self) -> int:
        """Number of layers with cached self-attention keys."""
        return len(self._self)

    def __getitem__(self, layer: int) -> Pair:
        """Layer ``layer``'s self-attention ``(k, v)``, each ``(B, H_kv, S, Dh)``."""
        pair = self._self[layer]
        if pair is None:
            raise IndexError(f"KVCache: layer {layer} holds nothing yet")
        return pair

    def __iter__(self) -> Iterator[Pair]:
        return (self[i] for i in range(len(self)))

    def to_legacy(self) -> tuple[Pair, ...]:
        """``past_key_values`` as GPT-2 returns it: one ``(k, v)`` pair per layer."""
        return tuple(self)

    @classmethod
    def from_legacy(cls, past_key_values: Iterable[Pair] | None) -> "KVCache":
        """A cache holding ``past_key_values`` (one ``(k, v)`` pair per layer), or an empty one for None."""
        return cls(past_key_values)

    def __repr__(self) -> str:
        cross = sum(p is not None for p in self._cross)
        return f"KVCache(layers={len(self)}, length={self.length}, cross_layers={cross})"
