"""Inference for the encoder-decoder Transformer: greedy decoding, beam search, sampling, and a copy head.

Explained in chapter 09 (inference); the copy head and the decoder record are used in chapters 08 and 09.

Every decoder here starts the target with BOS itself, so callers pass only the source: the shift that
the data pipeline makes in training (decoder input = BOS + target, :func:`course_lib.tasks.make_batch`)
is made here in inference. All of them run one batch at once, with a :class:`course_lib.kv_cache.KVCache`
(each step feeds only the newest token to :meth:`Transformer.decode`) or without one (``use_cache=False``:
each step feeds the whole prefix; same tokens, tested). Sources of different lengths, padded on the left
or on the right, give the same result in one batch as each alone (tested), because the source mask
hides the pads and positions follow the padding.

Read top to bottom:

* :func:`greedy_decode`: the most probable next token, step after step.
* :func:`beam_search`: the ``beam_size`` best prefixes at every step, finished hypotheses kept, scores
  normalised with GNMT's length penalty (Wu et al. 2016, "Google's Neural Machine Translation System",
  section 7, with its coverage penalty left out).
* :func:`sample`, :func:`filter_logits`: ancestral sampling with temperature, top-k (Fan et al. 2018)
  and nucleus / top-p (Holtzman et al. 2020) filtering, in the order of transformers'
  ``TemperatureLogitsWarper``, ``TopKLogitsWarper``, ``TopPLogitsWarper``.
* :func:`sequence_log_probs`: the log-probability of given outputs (beam scores, REINFORCE).
* :func:`record_decoder`: a context in which the decoder's cross-attention weights and output states
  are recorded (plots, guided attention, the copy head).
* :class:`PointerGenerator`: See, Liu and Manning, "Get To The Point: Summarization with
  Pointer-Generator Networks", 2017, section 2.2, on top of a :class:`Transformer`: it copies source
  tokens, including ones outside the vocabulary (:func:`copy_batch` builds the extended ids).

Outputs never contain BOS; after EOS a row holds PAD. PAD itself is never generated (its
log-probability is set to ``-inf`` at every step, as fairseq's ``SequenceGenerator`` does), so a PAD in
an output always means "after the end"; every other token, BOS and UNK included, can be predicted, and
scores are the model's own log-probabilities of the chosen tokens (not renormalised without PAD).

Dimension names: B batch, S source length, L output length, K beams, V vocabulary (``V + n_oov`` for
the copy head), D model width, H heads.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.kv_cache import KVCache
from course_lib.masks import causal_mask, padding_mask
from course_lib.tokenization import BOS_ID, EOS_ID, PAD_ID, UNK_ID

__all__ = [
    "greedy_decode",
    "beam_search",
    "BeamSearchOutput",
    "gnmt_length_penalty",
    "sample",
    "filter_logits",
    "sequence_log_probs",
    "generate_text",
    "record_decoder",
    "DecoderRecord",
    "PointerGenerator",
    "CopyMemory",
    "CopyBatch",
    "copy_batch",
    "decode_extended",
]


# --------------------------------------------------------------------------------------------------
# Shared pieces: the source mask, rows of the memory, one decoding step
# --------------------------------------------------------------------------------------------------
def _source_mask(model: nn.Module, src_ids: torch.Tensor, src_mask: torch.Tensor | None,
                 pad_id: int | None, who: str) -> torch.Tensor:
    """The source padding mask ``(B, 1, 1, S)``: the one given, or ``padding_mask(src_ids, pad_id)``."""
    if not isinstance(src_ids, torch.Tensor) or src_ids.dim() != 2 or src_ids.is_floating_point():
        got = tuple(src_ids.shape) if isinstance(src_ids, torch.Tensor) else type(src_ids).__name__
        raise ValueError(f"{who}: expected integer source ids of shape (B, S), received {got}")
    if src_mask is None:
        pad = getattr(getattr(model, "cfg", None), "pad_id", PAD_ID) if pad_id is None else pad_id
        return padding_mask(src_ids, pad)  # (B, 1, 1, S)
    if src_mask.dtype != torch.bool:
        raise ValueError(f"{who}: expected a boolean src_mask (True = real token), received {src_mask.dtype}")
    if src_mask.dim() == 2:
        src_mask = src_mask[:, None, None, :]  # (B, 1, 1, S)
    B, S = src_ids.shape
    if src_mask.dim() != 4 or src_mask.shape[0] != B or src_mask.shape[-1] != S or src_mask.shape[1:3] != (1, 1):
        raise ValueError(f"{who}: expected src_mask of shape (B, S) or (B, 1, 1, S) = ({B}, 1, 1, {S}), "
                         f"received {tuple(src_mask.shape)}")
    return src_mask


def _check_lengths(who: str, max_len: int, beam_size: int | None = None) -> None:
    if not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"{who}: expected max_len >= 1 (tokens to generate, EOS included), received {max_len!r}")
    if beam_size is not None and (not isinstance(beam_size, int) or beam_size < 1):
        raise ValueError(f"{who}: expected beam_size >= 1, received {beam_size!r}")


def _rows(memory, index: torch.Tensor):
    """Rows ``index`` (dim 0) of the memory: a tensor, or every tensor of a tuple such as :class:`CopyMemory`."""
    if isinstance(memory, torch.Tensor):
        return memory.index_select(0, index.to(memory.device))
    if isinstance(memory, tuple):
        return type(memory)(*(_rows(m, index) for m in memory))
    raise TypeError(f"decoding: memory must be a tensor or a tuple of tensors, received {type(memory).__name__}")


def _float_logits(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits are promoted to float32 before softmax; float32 and float64 are kept."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


class _Steps:
    """Feeds tokens to ``model.decode`` one step at a time and returns the newest logits.

    With a cache only the new tokens go in; without one the whole prefix (BOS included) goes in under a
    causal mask and the last row is kept. Both call the model's own ``decode``: there is one decode step.
    """

    def __init__(self, model: nn.Module, memory, cross_mask: torch.Tensor, use_cache: bool):
        self.model, self.memory, self.cross_mask = model, memory, cross_mask
        self.cache = KVCache() if use_cache else None
        self.prefix: torch.Tensor | None = None  # (N, t): every token fed so far (uncached mode)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """New tokens ``(N, 1)`` -> logits of the next token ``(N, V)``."""
        if self.cache is not None:
            return self.model.decode(tokens, self.memory, cross_mask=self.cross_mask, cache=self.cache)[:, -1]
        self.prefix = tokens if self.prefix is None else torch.cat([self.prefix, tokens], dim=1)  # (N, t)
        t = self.prefix.shape[1]
        mask = causal_mask(t, device=tokens.device)  # (t, t)
        return self.model.decode(self.prefix, self.memory, self_mask=mask, cross_mask=self.cross_mask)[:, -1]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` of the state (beam search: each new beam continues an old one)."""
        if self.cache is not None:
            self.cache.reorder(index)
        else:
            self.prefix = self.prefix.index_select(0, index)


def _start(model: nn.Module, src_ids: torch.Tensor, src_mask: torch.Tensor | None, pad_id: int | None,
           who: str):
    src_mask = _source_mask(model, src_ids, src_mask, pad_id, who)
    memory = model.encode(src_ids, src_mask)  # (B, S, D), or a CopyMemory
    pad = getattr(getattr(model, "cfg", None), "pad_id", PAD_ID) if pad_id is None else pad_id
    return src_mask, memory, pad


def _generate(model, src_ids, max_len, bos_id, eos_id, src_mask, pad_id, use_cache, choose, who) -> torch.Tensor:
    """The loop greedy decoding and sampling share: ``choose(logits (B, V)) -> (B,)`` picks each token."""
    _check_lengths(who, max_len)
    src_mask, memory, pad = _start(model, src_ids, src_mask, pad_id, who)
    B, device = src_ids.shape[0], src_ids.device
    steps = _Steps(model, memory, src_mask, use_cache)
    out = torch.full((B, max_len), pad, dtype=torch.long, device=device)  # (B, max_len)
    finished = torch.zeros(B, dtype=torch.bool, device=device)  # (B,)
    tokens = torch.full((B, 1), bos_id, dtype=torch.long, device=device)  # (B, 1): BOS, the first input
    n = 0
    for t in range(max_len):
        logits = _float_logits(steps(tokens)).clone()  # (B, V)
        logits[:, pad] = float("-inf")  # PAD is never generated
        nxt = choose(logits)  # (B,)
        nxt = torch.where(finished, torch.full_like(nxt, pad), nxt)  # PAD after EOS
        out[:, t] = nxt
        n = t + 1
        finished |= nxt == eos_id
        if bool(finished.all()):
            break
        tokens = nxt[:, None]  # (B, 1)
    return out[:, :n]  # (B, L): L = the longest output, EOS included


# --------------------------------------------------------------------------------------------------
# Greedy decoding
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def greedy_decode(model: nn.Module, src_ids: torch.Tensor, max_len: int, bos_id: int = BOS_ID,
                  eos_id: int = EOS_ID, src_mask: torch.Tensor | None = None, *, pad_id: int | None = None,
                  use_cache: bool = True) -> torch.Tensor:
    """Greedy decoding: at each step the most probable next token, for a whole batch at once.

    The decoder starts from BOS; step ``t`` feeds the token chosen at step ``t - 1`` (only it with the
    cache, the whole prefix without) and takes the argmax of the next-token logits (PAD excluded). A row
    stops at EOS;
    the loop stops when every row has stopped or after ``max_len`` tokens.

    Args:
        model: a :class:`course_lib.transformer.Transformer` (or anything with its ``encode`` / ``decode``,
            such as :class:`PointerGenerator`). Put it in ``eval()`` mode: dropout is the caller's choice.
        src_ids: source ids ``(B, S)``, padded on either side.
        max_len: most tokens generated per row, EOS included (``max_len <= model.cfg.max_len``).
        bos_id, eos_id: the special ids (``course_lib.tokenization.BOS_ID``, ``EOS_ID``).
        src_mask: boolean ``(B, S)`` or ``(B, 1, 1, S)``, True at real tokens; default
            ``padding_mask(src_ids, pad_id)``.
        pad_id: the padding id (default ``model.cfg.pad_id``), of the source and of the output.
        use_cache: decode with a :class:`KVCache` (default) or recompute the prefix at every step.

    Returns:
        token ids ``(B, L)``, ``torch.long``, without BOS, PAD after EOS; ``L <= max_len`` is the longest
        row (EOS included). A row without EOS has ``max_len`` tokens.

    Raises:
        ValueError: source ids not ``(B, S)``, a mask of another shape, ``max_len < 1``; positions past
            ``model.cfg.max_len`` (from :meth:`Transformer.decode`).

    Equivalent to (one row, no cache)::

        ys = [bos_id]
        while len(ys) <= max_len and ys[-1] != eos_id:
            logits = model(src, torch.tensor([ys]), src_mask, causal_mask(len(ys)), src_mask)[0, -1]
            logits[pad_id] = -inf
            ys.append(int(logits.argmax()))
        ys[1:]
    """
    return _generate(model, src_ids, max_len, bos_id, eos_id, src_mask, pad_id, use_cache,
                     lambda logits: logits.argmax(dim=-1), "greedy_decode")


# --------------------------------------------------------------------------------------------------
# Beam search
# --------------------------------------------------------------------------------------------------
def gnmt_length_penalty(length: int | torch.Tensor, alpha: float):
    """GNMT's length penalty ``lp(Y) = ((5 + |Y|) / 6) ** alpha`` (Wu et al. 2016, section 7, equation 14).

    A hypothesis' score is its log-probability divided by ``lp``; ``alpha = 0`` gives ``lp = 1`` (plain
    log-probability, which prefers short outputs), larger ``alpha`` favours longer ones. ``|Y|`` counts
    the generated tokens, EOS included.
    """
    return ((5.0 + length) / 6.0) ** alpha


@dataclass(frozen=True)
class BeamSearchOutput:
    """What :func:`beam_search` returns, best hypothesis first for every source.

    Fields:
        sequences: ``(B, K, L)`` token ids, without BOS, PAD after EOS.
        scores: ``(B, K)``: ``log_probs / gnmt_length_penalty(lengths, length_penalty)``, descending.
        log_probs: ``(B, K)``: the sum of the tokens' log-probabilities, EOS included.
        lengths: ``(B, K)``: tokens per hypothesis, EOS included.

    A slot that never received a hypothesis (only when ``K`` exceeds the number of possible outputs) has
    score ``-inf``, length 0 and PAD only.
    """

    sequences: torch.Tensor
    scores: torch.Tensor
    log_probs: torch.Tensor
    lengths: torch.Tensor


@torch.no_grad()
def beam_search(model: nn.Module, src_ids: torch.Tensor, beam_size: int, max_len: int, bos_id: int = BOS_ID,
                eos_id: int = EOS_ID, src_mask: torch.Tensor | None = None, length_penalty: float = 0.0, *,
                pad_id: int | None = None, use_cache: bool = True) -> BeamSearchOutput:
    """Beam search for a batch of sources, with finished hypotheses kept and GNMT's length penalty.

    For each source ``K = beam_size`` prefixes ("beams") are alive. At each step every beam is extended
    by every token; of the ``K * V`` candidates (scored by the sum of log-probabilities) the best
    ``2K`` are read in order: a candidate ending in EOS among the first ``K`` becomes a finished
    hypothesis, and the first ``K`` others become the new beams. (At most ``K`` candidates end in EOS,
    one per beam, so ``2K`` always hold ``K`` others; this is the rule of fairseq's and transformers'
    beam search.) The ``K`` best finished hypotheses are kept, by score ``log_prob / lp(length)``
    (:func:`gnmt_length_penalty`). A source is done when it holds ``K`` finished hypotheses and no beam
    can beat the worst of them any more: a beam's log-probability only falls as it grows, so its best
    possible score is ``log_prob / max lp`` over the lengths still reachable. After ``max_len`` steps
    the beams still alive count as hypotheses of length ``max_len`` (without EOS).

    The cache is kept for ``B * K`` rows and reordered with :meth:`KVCache.reorder` after each step,
    so that row ``b * K + k`` holds the keys and values of beam ``k``'s prefix.

    Exact when nothing is pruned: with ``K`` at least the number of possible outputs (all sequences
    of up to ``max_len`` tokens that end at their first EOS), the ``K`` hypotheses are all of them, in
    the order of their scores (tested against an exhaustive enumeration). ``beam_size=1`` with
    ``length_penalty=0`` is greedy decoding (tested).

    Args:
        model, src_ids, max_len, bos_id, eos_id, src_mask, pad_id, use_cache: as :func:`greedy_decode`.
        beam_size: ``K``, the beams kept per source.
        length_penalty: GNMT's ``alpha`` (0 = none; Wu et al. used 0.2 to 0.6 with their coverage penalty).

    Returns:
        a :class:`BeamSearchOutput` with ``sequences (B, K, L)`` and ``scores (B, K)`` (best first),
        ``log_probs (B, K)``, ``lengths (B, K)``.

    Raises:
        ValueError: as :func:`greedy_decode`, or ``beam_size < 1``.
    """
    who = "beam_search"
    _check_lengths(who, max_len, beam_size)
    src_mask, memory, pad = _start(model, src_ids, src_mask, pad_id, who)
    B, K, device = src_ids.shape[0], beam_size, src_ids.device
    expand = torch.arange(B, device=device).repeat_interleave(K)  # (B*K,): row b*K + k reads source b
    steps = _Steps(model, _rows(memory, expand), src_mask.index_select(0, expand), use_cache)
    base = (torch.arange(B, device=device) * K)[:, None]  # (B, 1): first row of each source

    neg_inf = float("-inf")
    alive_lp = torch.full((B, K), neg_inf, device=device, dtype=torch.float64)  # (B, K): sums of log-probs
    alive_lp[:, 0] = 0.0  # one real beam at the start, so the first step does not pick K copies of a token
    alive_seq = torch.full((B, K, 0), pad, dtype=torch.long, device=device)  # (B, K, t)
    fin_seq = torch.full((B, K, max_len), pad, dtype=torch.long, device=device)  # (B, K, max_len)
    fin_score = torch.full((B, K), neg_inf, device=device, dtype=torch.float64)  # (B, K), descending
    fin_lp = torch.full((B, K), neg_inf, device=device, dtype=torch.float64)
    fin_len = torch.zeros((B, K), dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)  # (B,)
    tokens = torch.full((B * K, 1), bos_id, dtype=torch.long, device=device)  # (B*K, 1)

    def keep_best(score, lp, length, seq):
        """Merge candidates into the finished pool and keep the ``K`` best of each source."""
        nonlocal fin_seq, fin_score, fin_lp, fin_len
        all_score = torch.cat([fin_score, score], dim=1)  # (B, K + n)
        best = all_score.topk(K, dim=1).indices  # (B, K), sorted by score
        fin_score = all_score.gather(1, best)
        fin_lp = torch.cat([fin_lp, lp], dim=1).gather(1, best)
        fin_len = torch.cat([fin_len, length], dim=1).gather(1, best)
        seq_all = torch.cat([fin_seq, seq], dim=1)  # (B, K + n, max_len)
        fin_seq = seq_all.gather(1, best[..., None].expand(-1, -1, max_len))

    def padded(seq):  # (B, n, t) -> (B, n, max_len)
        return F.pad(seq, (0, max_len - seq.shape[-1]), value=pad)

    for t in range(max_len):
        logits = steps(tokens)  # (B*K, V)
        logp = torch.log_softmax(_float_logits(logits).double(), dim=-1)  # (B*K, V), float64 sums
        logp[:, pad] = neg_inf  # PAD is never generated
        V = logp.shape[-1]
        cand = (alive_lp[..., None] + logp.view(B, K, V)).view(B, K * V)  # (B, K*V)
        n_top = min(2 * K, K * V)
        top_lp, top_idx = cand.topk(n_top, dim=1)  # (B, 2K), best first
        origin, token = top_idx // V, top_idx % V  # (B, 2K): which beam, which token
        is_eos = token == eos_id
        rank = torch.arange(n_top, device=device)[None, :]  # (1, 2K)
        length = t + 1

        # candidates ending in EOS among the first K: finished hypotheses
        new = is_eos & (rank < K) & torch.isfinite(top_lp) & ~done[:, None]  # (B, 2K)
        score = torch.where(new, top_lp / gnmt_length_penalty(length, length_penalty), neg_inf)
        prev = alive_seq.gather(1, origin[..., None].expand(-1, -1, t))  # (B, 2K, t)
        seq = padded(torch.cat([prev, token[..., None]], dim=-1))  # (B, 2K, max_len)
        keep_best(score, torch.where(new, top_lp, neg_inf), torch.full_like(token, length), seq)

        # the first K candidates not ending in EOS: the new beams
        order = torch.where(is_eos, rank + n_top, rank.expand(B, -1)).argsort(dim=1)[:, :K]  # (B, K)
        alive_lp = top_lp.gather(1, order)  # (B, K)
        origin_k, token_k = origin.gather(1, order), token.gather(1, order)  # (B, K)
        alive_seq = torch.cat([alive_seq.gather(1, origin_k[..., None].expand(-1, -1, t)),
                               token_k[..., None]], dim=-1)  # (B, K, t + 1)
        if length == max_len:
            break
        # done: K finished hypotheses that no beam can beat, or no live beam left
        best_lp = max(gnmt_length_penalty(length + 1, length_penalty), gnmt_length_penalty(max_len, length_penalty))
        bound = (alive_lp / best_lp).max(dim=1).values  # (B,): the best score a beam can still reach
        done |= torch.isfinite(fin_score[:, -1]) & (bound <= fin_score[:, -1])
        done |= ~torch.isfinite(alive_lp).any(dim=1)
        if bool(done.all()):
            break
        steps.reorder((base + origin_k).flatten())  # row b*K + k now continues beam origin_k[b, k]
        tokens = token_k.reshape(B * K, 1)

    if length == max_len:  # the beams still alive end here, without EOS
        live = torch.isfinite(alive_lp) & ~done[:, None]  # (B, K)
        score = torch.where(live, alive_lp / gnmt_length_penalty(max_len, length_penalty), neg_inf)
        keep_best(score, torch.where(live, alive_lp, neg_inf), torch.full_like(fin_len[:, :K], max_len),
                  padded(alive_seq))
    empty = ~torch.isfinite(fin_score)  # (B, K): slots that never got a hypothesis
    fin_len = fin_len.masked_fill(empty, 0)
    fin_seq = fin_seq.masked_fill(empty[..., None], pad)
    L = max(int(fin_len.max()), 1)
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    return BeamSearchOutput(sequences=fin_seq[:, :, :L], scores=fin_score.to(dtype), log_probs=fin_lp.to(dtype),
                            lengths=fin_len)


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------
def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus) filtering of next-token logits.

    * temperature ``tau``: ``logits / tau`` (``tau < 1`` sharpens the distribution, ``tau > 1`` flattens it).
    * ``top_k``: keep the ``k`` largest logits (Fan et al. 2018), set the others to ``-inf``.
    * ``top_p``: sort the probabilities in decreasing order and keep the smallest set whose total
      reaches ``p`` (Holtzman et al. 2020, section 3.1): token ``i`` is kept when the mass of the tokens
      ranked before it is below ``p``, so the most probable token is always kept.

    Args:
        logits: ``(..., V)``.
        temperature: ``> 0``.
        top_k: ``>= 1`` or None.
        top_p: in ``(0, 1]`` or None.

    Returns:
        filtered logits ``(..., V)`` (``softmax`` of them is the sampling distribution).

    Raises:
        ValueError: for a temperature ``<= 0`` (use :func:`greedy_decode`), ``top_k < 1`` or ``top_p``
            outside ``(0, 1]``.

    Same as transformers' ``TemperatureLogitsWarper``, ``TopKLogitsWarper`` and ``TopPLogitsWarper``
    applied in that order (up to ties at the boundary).
    """
    if not temperature > 0:
        raise ValueError(f"filter_logits: expected temperature > 0, received {temperature} "
                         "(for the argmax use greedy_decode)")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"filter_logits: expected top_k >= 1 or None, received {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"filter_logits: expected 0 < top_p <= 1 or None, received {top_p!r}")
    logits = _float_logits(logits) / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (..., 1): the k-th largest
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        probs, order = logits.softmax(dim=-1).sort(dim=-1, descending=True)  # (..., V)
        before = probs.cumsum(dim=-1) - probs  # (..., V): mass ranked before each token
        drop_sorted = before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def sample(model: nn.Module, src_ids: torch.Tensor, max_len: int, bos_id: int = BOS_ID, eos_id: int = EOS_ID,
           temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           generator: torch.Generator | Sequence[torch.Generator] | None = None, *,
           src_mask: torch.Tensor | None = None, pad_id: int | None = None, use_cache: bool = True) -> torch.Tensor:
    """Ancestral sampling: each next token drawn from the model's distribution, filtered by
    :func:`filter_logits` (temperature, top-k, top-p).

    Args:
        model, src_ids, max_len, bos_id, eos_id, src_mask, pad_id, use_cache: as :func:`greedy_decode`.
        temperature, top_k, top_p: as :func:`filter_logits`. ``top_k=1`` is greedy decoding (tested).
        generator: a ``torch.Generator`` on the model's device (the same seed gives the same samples),
            or one generator per source row, so that each row's draws do not depend on the rest of the
            batch (then a row sampled in a batch equals the row sampled alone with the same generator
            seed; tested). None: torch's global generator.

    Returns:
        token ids ``(B, L)`` as :func:`greedy_decode`.

    Raises:
        ValueError: as :func:`greedy_decode` and :func:`filter_logits`; a list of generators whose length
            is not ``B``.
    """
    filter_logits(torch.zeros(1, 2), temperature, top_k, top_p)  # check the arguments before any work
    per_row = isinstance(generator, (list, tuple))
    if per_row and len(generator) != src_ids.shape[0]:
        raise ValueError(f"sample: expected one generator per source row ({src_ids.shape[0]}), "
                         f"received {len(generator)}")

    def choose(logits: torch.Tensor) -> torch.Tensor:
        probs = filter_logits(logits, temperature, top_k, top_p).softmax(dim=-1)  # (B, V)
        if per_row:
            return torch.cat([torch.multinomial(probs[b], 1, generator=g) for b, g in enumerate(generator)])
        return torch.multinomial(probs, 1, generator=generator)[:, 0]  # (B,)

    return _generate(model, src_ids, max_len, bos_id, eos_id, src_mask, pad_id, use_cache, choose, "sample")


# --------------------------------------------------------------------------------------------------
# Log-probability of given outputs; text in, text out
# --------------------------------------------------------------------------------------------------
def sequence_log_probs(model: nn.Module, src_ids: torch.Tensor, sequences: torch.Tensor, bos_id: int = BOS_ID,
                       eos_id: int = EOS_ID, src_mask: torch.Tensor | None = None, *,
                       pad_id: int | None = None) -> torch.Tensor:
    """The log-probability the model gives to each output sequence, in one teacher-forced pass.

    A sequence's tokens count up to and including its first EOS (all of them if it has none), the
    convention of every decoder here; tokens after EOS are ignored. Gradients flow (REINFORCE).

    Args:
        model, src_ids, bos_id, eos_id, src_mask, pad_id: as :func:`greedy_decode`.
        sequences: ``(B, L)`` outputs without BOS (what the decoders return).

    Returns:
        ``(B,)``: ``sum_t log p(y_t | y_<t, x)``.

    Raises:
        ValueError: source or sequences not 2-D integer tensors with the same ``B``.

    Equivalent to::

        logits = model(src, cat([BOS], y[:-1]), src_mask, causal_mask(L), src_mask)
        log_softmax(logits).gather(-1, y).sum()   # over t up to the first EOS
    """
    src_mask = _source_mask(model, src_ids, src_mask, pad_id, "sequence_log_probs")
    if sequences.dim() != 2 or sequences.shape[0] != src_ids.shape[0] or sequences.is_floating_point():
        raise ValueError(f"sequence_log_probs: expected integer sequences of shape (B, L) with B = "
                         f"{src_ids.shape[0]}, received {tuple(sequences.shape)}")
    B, L = sequences.shape
    tgt_in = torch.cat([torch.full((B, 1), bos_id, dtype=torch.long, device=sequences.device),
                        sequences[:, :-1]], dim=1)  # (B, L): BOS + y[:-1]
    logits = model(src_ids, tgt_in, src_mask=src_mask, tgt_mask=causal_mask(L, device=sequences.device),
                   cross_mask=src_mask)  # (B, L, V)
    logp = torch.log_softmax(_float_logits(logits), dim=-1).gather(-1, sequences[..., None])[..., 0]  # (B, L)
    eos_before = (sequences == eos_id).long().cumsum(dim=1) - (sequences == eos_id).long()  # EOS strictly before t
    return (logp * (eos_before == 0)).sum(dim=1)  # (B,)


def generate_text(model: nn.Module, tokenizer, sources: Sequence[str], max_len: int, method: str = "greedy",
                  side: str = "right", device: torch.device | str | None = None, **kwargs) -> list[str]:
    """Strings in, strings out: encode ``sources``, decode with ``method``, and turn the ids back into text.

    Args:
        model: in eval mode.
        tokenizer: a ``course_lib.tokenization`` tokenizer of source and target.
        sources: the input strings.
        max_len: as :func:`greedy_decode`.
        method: ``"greedy"``, ``"beam"`` (the best hypothesis; pass ``beam_size=``) or ``"sample"``.
        side: padding side of the source batch.
        device: where to put the ids (default: the model's).
        kwargs: passed on to the decoder (``beam_size``, ``length_penalty``, ``temperature``...).

    Raises:
        ValueError: for an unknown ``method``.
    """
    from course_lib.tokenization import pad_batch

    if device is None:
        device = next(model.parameters()).device
    src = pad_batch([tokenizer.encode(s) for s in sources], side=side).to(device)  # (B, S)
    if method == "greedy":
        out = greedy_decode(model, src, max_len, BOS_ID, EOS_ID, **kwargs)
    elif method == "beam":
        out = beam_search(model, src, kwargs.pop("beam_size", 4), max_len, BOS_ID, EOS_ID, **kwargs).sequences[:, 0]
    elif method == "sample":
        out = sample(model, src, max_len, BOS_ID, EOS_ID, **kwargs)
    else:
        raise ValueError(f"generate_text: expected method 'greedy', 'beam' or 'sample', received {method!r}")
    return [tokenizer.decode(row.tolist(), stop_at_eos=True) for row in out.cpu()]


# --------------------------------------------------------------------------------------------------
# Recording the decoder: cross-attention weights and output states
# --------------------------------------------------------------------------------------------------
@dataclass
class DecoderRecord:
    """What :func:`record_decoder` collected, one entry per ``decode`` call, in call order.

    Fields:
        cross_weights: ``{layer: [weights, ...]}``, each ``(B, H, T, S)``: decoder layer ``layer``'s
            cross-attention weights (with a cache, ``T`` is the number of new tokens, usually 1).
            They keep their autograd graph, so a loss on them trains the model (guided attention).
        states: ``[(B, T, D), ...]``: the decoder stack's output (the input of the output projection).
    """

    cross_weights: dict[int, list[torch.Tensor]]
    states: list[torch.Tensor]


def _find_decoder(model: nn.Module):
    from course_lib.transformer import Decoder

    for m in model.modules():
        if isinstance(m, Decoder):
            return m
    raise ValueError(f"record_decoder: {type(model).__name__} contains no course_lib.transformer.Decoder")


@contextlib.contextmanager
def record_decoder(model: nn.Module, layers: Sequence[int] | None = None) -> Iterator[DecoderRecord]:
    """Record the cross-attention weights and the output states of the model's decoder while inside.

    ``with record_decoder(model) as rec: greedy_decode(model, ...)`` leaves in ``rec.cross_weights[l]``
    one ``(B, H, 1, S)`` tensor per step of layer ``l`` (the weights drawn in chapter 09), and in
    ``rec.states`` the matching ``(B, 1, D)`` decoder outputs.

    How: each recorded layer's :meth:`MultiHeadAttention.attend` (the class's override point) is wrapped
    for this instance only, to compute with ``return_weights=True`` (the explicit attention, equal to the
    fused path; tested in ``tests/lib/test_attention.py``) and keep the weights; a forward hook on the
    decoder stack keeps its output. Both are removed on leaving, and records nest (the copy head
    records inside a record of the trainer's).

    Args:
        model: a module that contains one :class:`course_lib.transformer.Decoder` (a :class:`Transformer`,
            a :class:`PointerGenerator`).
        layers: decoder layer indices to record (negative ones count from the end); default all.

    Yields:
        a :class:`DecoderRecord`.

    Raises:
        ValueError: a model without a decoder, a layer index out of range.
    """
    decoder = _find_decoder(model)
    n = len(decoder.layers)
    chosen = list(range(n)) if layers is None else [int(i) for i in layers]
    for i in chosen:
        if not -n <= i < n:
            raise ValueError(f"record_decoder: expected decoder layers in -{n}..{n - 1}, received {i}")
    chosen = sorted({i % n for i in chosen})
    record = DecoderRecord(cross_weights={i: [] for i in chosen}, states=[])
    patched = []
    for i in chosen:
        attn = decoder.layers[i].cross_attn
        previous = attn.__dict__.get("attend")  # an outer record's wrapper, or None
        inner = attn.attend  # bound method (or the outer wrapper)
        store = record.cross_weights[i]

        def attend(q, k, v, mask=None, bias=None, return_weights=False, _inner=inner, _store=store):
            out, w = _inner(q, k, v, mask=mask, bias=bias, return_weights=True)
            _store.append(w)  # (B, H, T, S)
            return out, (w if return_weights else None)

        attn.attend = attend
        patched.append((attn, previous))
    hook = decoder.register_forward_hook(lambda module, args, output: record.states.append(output))
    try:
        yield record
    finally:
        hook.remove()
        for attn, previous in reversed(patched):
            if previous is None:
                del attn.attend
            else:
                attn.attend = previous


# --------------------------------------------------------------------------------------------------
# The pointer-generator copy head (See et al. 2017, section 2.2)
# --------------------------------------------------------------------------------------------------
class CopyMemory(NamedTuple):
    """What :meth:`PointerGenerator.encode` returns: the encoder states and the source's extended ids.

    Fields:
        states: ``(B, S, D)``, the Transformer's memory.
        src_ids: ``(B, S)`` source ids in the extended vocabulary (ids ``>= V`` are the source's own
            out-of-vocabulary tokens), where the copy distribution puts its mass.
    """

    states: torch.Tensor
    src_ids: torch.Tensor


class PointerGenerator(nn.Module):
    """A Transformer whose output distribution can copy source tokens (a pointer-generator).

    At each target position ``t``, with ``a_t`` the cross-attention weights of one decoder layer averaged
    over its heads ``(S,)``, ``h*_t = sum_i a_ti h_i`` the context vector (``h_i`` the memory), ``s_t`` the
    decoder's output state and ``x_t`` the decoder input's embedding (See et al. 2017, equations 8-9)::

        p_gen = sigmoid(w_h . h*_t + w_s . s_t + w_x . x_t + b)
        P(w)  = p_gen * P_vocab(w) + (1 - p_gen) * sum_{i: src_i = w} a_ti

    ``P_vocab`` is the Transformer's softmax over its ``V`` tokens. The distribution is over an *extended*
    vocabulary of ``V + n_oov`` ids: id ``V + j`` is the ``j``-th distinct out-of-vocabulary token of
    that example's source (:func:`copy_batch`), so a word the vocabulary lacks can still be produced by
    copying it. Out-of-vocabulary ids fed back to the decoder are read as UNK (See et al., section 2.2).

    The model has the Transformer's ``encode`` / ``decode`` / ``forward`` interface, so every decoder of
    this module and the training loop of :mod:`course_lib.training` use it unchanged; ``decode`` returns
    *log-probabilities* (``log_softmax`` of them is themselves, so cross-entropy and the decoders treat
    them as logits). Probabilities are clamped at ``1e-30`` before the log, so ids no source holds get
    about ``-69`` instead of ``-inf`` (label smoothing then spreads its mass over the extended vocabulary).
    Batches come from :func:`copy_batch` (``train(..., collate=lambda ex: copy_batch(ex, tok, n_oov))``).

    Args:
        base: a :class:`course_lib.transformer.Transformer` whose source and target share one vocabulary
            (``src_vocab_size == tgt_vocab_size``, one tokenizer).
        n_oov: extra ids for the source's out-of-vocabulary tokens (per example).
        layer: the decoder layer whose cross-attention is the copy distribution (default the last).

    Shape:
        ``forward(src (B, S), tgt_in (B, T), ...)`` -> ``(B, T, V + n_oov)`` log-probabilities.

    Raises:
        ValueError: different source and target vocabulary sizes, ``n_oov < 0``.

    Matched library: OpenNMT-py's ``CopyGenerator`` computes the same mixture from the top decoder
    layer's attention (its ``p_copy`` from the decoder output alone); here ``p_gen`` reads all three
    vectors as the paper does.
    """

    def __init__(self, base: nn.Module, n_oov: int = 8, layer: int = -1):
        super().__init__()
        cfg = base.cfg
        if cfg.src_vocab_size != cfg.tgt_vocab_size:
            raise ValueError(f"PointerGenerator: copying needs one vocabulary for source and target, received "
                             f"src_vocab_size={cfg.src_vocab_size}, tgt_vocab_size={cfg.tgt_vocab_size}")
        if n_oov < 0:
            raise ValueError(f"PointerGenerator: expected n_oov >= 0, received {n_oov}")
        n_layers = len(base.decoder.layers)
        if not -n_layers <= layer < n_layers:
            raise ValueError(f"PointerGenerator: expected a decoder layer in -{n_layers}..{n_layers - 1}, "
                             f"received {layer}")
        self.base, self.cfg, self.n_oov, self.layer = base, cfg, n_oov, layer % n_layers
        self.vocab_size = cfg.tgt_vocab_size  # V: ids >= V are out-of-vocabulary source tokens
        self.p_gen = nn.Linear(3 * cfg.d_model, 1)  # [h*_t, s_t, x_t] -> logit of p_gen

    def _in_vocab(self, ids: torch.Tensor) -> torch.Tensor:
        return ids.masked_fill(ids >= self.vocab_size, UNK_ID)

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None,
               positions: torch.Tensor | None = None) -> CopyMemory:
        """Extended source ids ``(B, S)`` -> :class:`CopyMemory` (the encoder reads ids ``>= V`` as UNK)."""
        return CopyMemory(self.base.encode(self._in_vocab(src_ids), src_mask, positions), src_ids)

    def decode(self, tgt_ids: torch.Tensor, memory: CopyMemory, self_mask: torch.Tensor | None = None,
               cross_mask: torch.Tensor | None = None, cache: KVCache | None = None,
               positions: torch.Tensor | None = None) -> torch.Tensor:
        """As :meth:`Transformer.decode`, returning log-probabilities ``(B, T, V + n_oov)``."""
        if not isinstance(memory, CopyMemory):
            raise ValueError("PointerGenerator.decode: expected the CopyMemory that PointerGenerator.encode "
                             f"returns, received {type(memory).__name__}")
        ids = self._in_vocab(tgt_ids)  # (B, T)
        with record_decoder(self.base, layers=[self.layer]) as rec:
            logits = self.base.decode(ids, memory.states, self_mask, cross_mask, cache, positions)  # (B, T, V)
        attn = rec.cross_weights[self.layer][-1].mean(dim=1)  # (B, T, S): heads averaged
        state = rec.states[-1]  # (B, T, D)
        context = attn @ memory.states  # (B, T, D): h*_t
        x = self.base.tgt_embed(ids) * math.sqrt(self.cfg.d_model)  # (B, T, D)
        p_gen = torch.sigmoid(self.p_gen(torch.cat([context, state, x], dim=-1)))  # (B, T, 1)
        p_vocab = F.pad(torch.softmax(_float_logits(logits), dim=-1), (0, self.n_oov))  # (B, T, V + n_oov)
        index = memory.src_ids[:, None, :].expand(-1, attn.shape[1], -1)  # (B, T, S)
        if int(index.max()) >= self.vocab_size + self.n_oov:
            raise ValueError(f"PointerGenerator: source ids go up to {int(index.max())}, beyond the extended "
                             f"vocabulary of {self.vocab_size} + {self.n_oov} ids")
        p_copy = torch.zeros_like(p_vocab).scatter_add(-1, index, attn.to(p_vocab.dtype))  # (B, T, V + n_oov)
        probs = p_gen * p_vocab + (1 - p_gen) * p_copy
        return probs.clamp_min(1e-30).log()

    def forward(self, src_ids: torch.Tensor, tgt_ids: torch.Tensor, src_mask: torch.Tensor | None = None,
                tgt_mask: torch.Tensor | None = None, cross_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced pass: ``(B, T, V + n_oov)`` log-probabilities."""
        return self.decode(tgt_ids, self.encode(src_ids, src_mask), self_mask=tgt_mask, cross_mask=cross_mask)


@dataclass(frozen=True)
class CopyBatch:
    """A padded batch in the extended vocabulary of :class:`PointerGenerator`.

    Fields: as :class:`course_lib.tasks.Seq2SeqBatch` (``src``, ``tgt_in``, ``tgt_out``, ``src_text``,
    ``tgt_text``), plus ``oovs``: for each example, its source's out-of-vocabulary pieces in the order of
    their ids ``V, V + 1, ...``.
    """

    src: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    src_text: tuple[str, ...]
    tgt_text: tuple[str, ...]
    oovs: tuple[tuple[str, ...], ...]


def copy_batch(examples, tokenizer, n_oov: int, src_side: str = "right", tgt_side: str = "right") -> CopyBatch:
    """Encode examples in the extended vocabulary: a source piece outside the vocabulary gets id
    ``V + j`` (``j``-th distinct one of its source, ``j < n_oov``; later ones UNK); a target piece outside
    the vocabulary gets the id of the same piece in the source, or UNK if the source lacks it
    (See et al. 2017, section 2.2).

    Args:
        examples: ``{"src", "tgt"}`` dicts, or a column dict ``{"src": [...], "tgt": [...]}``.
        tokenizer: a ``course_lib.tokenization`` tokenizer (``split``, ``stoi``, ``len``), ``V = len(tokenizer)``.
        n_oov: as :class:`PointerGenerator`.
        src_side, tgt_side: padding sides.

    Returns:
        a :class:`CopyBatch`: ``tgt_in`` = BOS + target, ``tgt_out`` = target + EOS, padded with PAD.
    """
    from course_lib.tokenization import pad_batch

    if isinstance(examples, dict):
        pairs = list(zip(examples["src"], examples["tgt"]))
    else:
        pairs = [(e["src"], e["tgt"]) for e in examples]
    if not pairs:
        raise ValueError("copy_batch: expected at least one example")
    V = len(tokenizer)
    srcs, tgts, oovs = [], [], []
    for src, tgt in pairs:
        own: dict[str, int] = {}
        ids = []
        for piece in tokenizer.split(src):
            if piece in tokenizer.stoi:
                ids.append(tokenizer.stoi[piece])
            elif piece in own or len(own) < n_oov:
                ids.append(own.setdefault(piece, V + len(own)))
            else:
                ids.append(UNK_ID)
        srcs.append(ids)
        tgts.append([tokenizer.stoi.get(p, own.get(p, UNK_ID)) for p in tokenizer.split(tgt)])
        oovs.append(tuple(own))
    return CopyBatch(
        src=pad_batch(srcs, side=src_side),
        tgt_in=pad_batch([[BOS_ID] + t for t in tgts], side=tgt_side),
        tgt_out=pad_batch([t + [EOS_ID] for t in tgts], side=tgt_side),
        src_text=tuple(p[0] for p in pairs), tgt_text=tuple(p[1] for p in pairs), oovs=tuple(oovs),
    )


def decode_extended(tokenizer, ids: Sequence[int] | torch.Tensor, oovs: Sequence[str]) -> str:
    """Ids of the extended vocabulary -> text: ids ``>= V`` become the example's ``oovs``; stops at EOS."""
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    V = len(tokenizer)
    pieces = []
    for i in ids:
        if i == EOS_ID:
            break
        if i >= V:
            pieces.append(oovs[i - V] if i - V < len(oovs) else tokenizer.vocab[UNK_ID])
        elif i not in (PAD_ID, BOS_ID):
            pieces.append(tokenizer.vocab[i])
    return tokenizer.join(pieces)
