"""Trusted grading spec for ex09 (batched beam search): probes compute an answer's outputs on fixed inputs.

Each probe mirrors the visible and hidden tests of the graded cell it is named after: for the length penalty ints
and tensors, alpha 0 and below 0; for the beam step the first step (one real beam), K = 1, another EOS id, EOS the
most probable token, fewer real candidates than beams, a source with beams missing; for the pool an empty pool,
nothing new, K = 1, more new hypotheses than slots; for the search a beam as wide as all outputs (exhaustive search,
three length penalties, both padding sides), beam size 1 (greedy decoding, outputs that end and outputs that do not),
padded batches against each source alone (an explicit source mask, a batch of one), and random tiny models with
several beam sizes and length penalties. The models are course_lib Transformers built here from fixed seeds (they are
inputs, not answers); the inputs are built here too, not with the notebook's helpers; nothing here computes the
expected answer.
"""
from typing import NamedTuple

import torch

from course_lib.transformer import Transformer, TransformerConfig

ANSWERS = ["gnmt_length_penalty", "beam_step", "keep_best", "beam_search"]
# The answers are called like course_lib.decoding's (gnmt_length_penalty, beam_search): the notebook's own functions
# may be called by their bare names. course_lib (the KVCache is imported for the students by a read-only cell) and
# the generation code of transformers are refused.
FORBIDDEN = ["course_lib", "transformers", "generate", "GenerationMixin", "BeamSearchScorer", "BeamScorer",
             "BeamHypotheses", "ConstrainedBeamSearchScorer", "greedy_decode", "sequence_log_probs", "_Steps",
             "_generate"]
TOLERANCE = {"atol": 1e-5, "rtol": 1e-4}

PAD, BOS, EOS = 0, 1, 2
NEG_INF = float("-inf")


class _Hypotheses(NamedTuple):
    """The fields of the notebook's Hypotheses (keep_best reads them by name)."""

    scores: torch.Tensor
    log_probs: torch.Tensor
    lengths: torch.Tensor
    sequences: torch.Tensor


def _model(seed=1, V=5, scale=2.5, max_len=32):
    torch.manual_seed(seed)
    cfg = TransformerConfig.tiny(src_vocab_size=V, tgt_vocab_size=V, d_model=16, n_heads=2, d_ff=32,
                                 n_encoder_layers=1, n_decoder_layers=2, max_len=max_len)
    model = Transformer(cfg).double().eval()
    with torch.no_grad():
        model.out_proj.weight.mul_(scale)
    return model


def _pad(rows, side="right"):
    S = max(len(r) for r in rows)
    return torch.tensor([r + [PAD] * (S - len(r)) if side == "right" else [PAD] * (S - len(r)) + r for r in rows])


# --- Part 1: the length penalty ----------------------------------------------------------------------------------
def probe_test_length_penalty(ns):
    f = ns["gnmt_length_penalty"]
    return {
        "1_0.6": f(1, 0.6), "10_1": f(10, 1.0), "7_0.5": f(7, 0.5), "4_-0.5": f(4, -0.5),
        "1_0": f(1, 0.0), "30_0": f(30, 0.0),
        "tensor_0.5": f(torch.tensor([[1, 2, 3], [7, 10, 30]]), 0.5),
        "tensor_0.6": f(torch.tensor([[1, 2, 3], [7, 10, 30]]), 0.6),
        "tensor_0": f(torch.tensor([3, 8]), 0.0),
        "tensor_2": f(torch.tensor([0, 1, 5]), 2.0),
    }


# --- Part 2: one beam step ---------------------------------------------------------------------------------------
def _step_inputs(B, K, V, seed, first=False, eos_id=EOS, eos_boost=0.0, missing=False):
    g = torch.Generator().manual_seed(seed)
    alive_lp = -5 * torch.rand(B, K, generator=g, dtype=torch.float64)
    if first:
        alive_lp[:, 1:] = NEG_INF
    if missing:
        alive_lp[-1, 1:] = NEG_INF
    logits = 2 * torch.randn(B * K, V, generator=g, dtype=torch.float64)
    logits[:, eos_id] += eos_boost
    logp = torch.log_softmax(logits, dim=-1)
    logp[:, PAD] = NEG_INF
    return alive_lp, logp


_STEPS = {  # name: (B, K, V, seed, first, eos_id, eos_boost, missing)
    "visible": (2, 3, 6, 0, False, EOS, 0.0, False),
    "visible_eos": (2, 3, 6, 4, False, EOS, 2.0, False),
    "first_step": (3, 4, 7, 1, True, EOS, 1.0, False),
    "k_1": (2, 1, 6, 2, False, EOS, 1.5, False),
    "eos_id_5": (2, 3, 8, 3, False, 5, 2.0, False),
    "eos_everywhere": (2, 3, 6, 4, False, EOS, 6.0, False),
    "eos_improbable": (2, 3, 6, 8, False, EOS, -6.0, False),
    "few_candidates": (2, 4, 3, 5, True, EOS, 0.0, False),
    "beams_missing": (2, 3, 6, 6, False, EOS, 0.0, True),
    "b3_k5_v9": (3, 5, 9, 7, False, EOS, 0.0, False),
}


def _steps(ns):
    f = ns["beam_step"]
    for name, (B, K, V, seed, first, eos_id, boost, missing) in _STEPS.items():
        alive_lp, logp = _step_inputs(B, K, V, seed, first, eos_id, boost, missing)
        yield name, f(alive_lp, logp, eos_id)


def _real(x, lp):
    """The origin and token of a -inf candidate do not matter: -1 there."""
    return torch.where(torch.isfinite(lp), x, torch.full_like(x, -1))


def probe_test_beam_step_beams(ns):
    out = {}
    for name, (new_lp, origin, token, _) in _steps(ns):
        out[name] = {"new_lp": new_lp, "origin": _real(origin, new_lp), "token": _real(token, new_lp)}
    return out


def probe_test_beam_step_finished(ns):
    return {name: res[3] for name, res in _steps(ns)}


# --- Part 3: the pool --------------------------------------------------------------------------------------------
def _hypotheses(B, n, max_len, seed, n_empty=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (B, n), generator=g)
    log_probs = -10 * torch.rand(B, n, generator=g, dtype=torch.float64)
    scores = log_probs / ((5 + lengths) / 6) ** 0.6
    seqs = torch.randint(3, 9, (B, n, max_len), generator=g)
    seqs = seqs.masked_fill(torch.arange(max_len) >= lengths[..., None], PAD)
    if n_empty:
        scores[:, n - n_empty:] = NEG_INF
    return _Hypotheses(scores, log_probs, lengths, seqs)


def _empty(B, K, max_len):
    return _Hypotheses(torch.full((B, K), NEG_INF, dtype=torch.float64),
                       torch.full((B, K), NEG_INF, dtype=torch.float64),
                       torch.zeros(B, K, dtype=torch.long), torch.full((B, K, max_len), PAD, dtype=torch.long))


def _fields(h):
    return {"scores": h.scores, "log_probs": h.log_probs, "lengths": h.lengths, "sequences": h.sequences}


def probe_test_keep_best(ns):
    f = ns["keep_best"]
    h = _hypotheses(2, 4, 6, seed=3)
    order = h.scores.argsort(dim=1, descending=True)  # a full pool as the search holds it: best first
    full_pool = _Hypotheses(h.scores.gather(1, order), h.log_probs.gather(1, order), h.lengths.gather(1, order),
                            h.sequences.gather(1, order[..., None].expand(-1, -1, 6)))
    cases = {
        "visible": (_hypotheses(2, 3, 5, seed=0), _hypotheses(2, 3, 5, seed=1, n_empty=1), 3),
        "empty_pool": (_empty(2, 4, 6), _hypotheses(2, 4, 6, seed=2, n_empty=2), 4),
        "nothing_new": (full_pool, _hypotheses(2, 4, 6, seed=4, n_empty=4), 4),
        "k_1": (_empty(1, 1, 4), _hypotheses(1, 7, 4, seed=5, n_empty=2), 1),
        "more_new_than_slots": (_hypotheses(3, 2, 3, seed=6, n_empty=1), _hypotheses(3, 5, 3, seed=7, n_empty=3), 2),
    }
    return {name: _fields(f(pool, new, K)) for name, (pool, new, K) in cases.items()}


# --- Part 4: the search ------------------------------------------------------------------------------------------
def _output(res):
    return {"sequences": res.sequences, "scores": res.scores, "log_probs": res.log_probs, "lengths": res.lengths}


_SOURCES = [[3, 4, 4, 3], [4, 3], [4, 4, 3]]
_N_OUTPUTS = 121  # every output of at most 4 tokens from {BOS, UNK, 4}, ending at EOS or not: 40 + 81


def probe_test_beam_search_exhaustive(ns):
    f, model = ns["beam_search"], _model(seed=1, V=5)
    out = {}
    for alpha, side in ((0.0, "right"), (0.6, "right"), (-0.5, "left")):
        out[f"alpha_{alpha}"] = _output(f(model, _pad(_SOURCES, side), _N_OUTPUTS, 4, length_penalty=alpha))
    return out


_ROWS9 = [[4, 5, 6, 7, 8], [8, 4], [5, 5, 6]]


def probe_test_beam_search_greedy(ns):
    f, model = ns["beam_search"], _model(seed=30, V=9, scale=1.5)
    out = {}
    for side, n in (("right", 10), ("left", 10), ("right", 2), ("left", 1)):
        out[f"{side}_{n}"] = _output(f(model, _pad(_ROWS9, side), 1, n))
    return out


def probe_test_beam_search_batch(ns):
    f = ns["beam_search"]
    model9, model6 = _model(seed=30, V=9, scale=1.5), _model(seed=5, V=6, scale=3.0)
    cases = {  # name: (model, rows, K, max_len, alpha, side, explicit mask)
        "right": (model9, _ROWS9, 3, 8, 0.6, "right", False),
        "left": (model9, _ROWS9, 3, 8, 0.6, "left", False),
        "left_mask_k4": (model9, _ROWS9, 4, 6, 0.0, "left", True),
        "batch_of_one": (model9, [[6, 7]], 2, 5, 1.0, "right", False),
        "k5_v6": (model6, [[3, 4, 5, 5], [5]], 5, 6, 0.6, "left", False),
    }
    out = {}
    for name, (model, rows, K, n, alpha, side, explicit) in cases.items():
        src = _pad(rows, side)
        mask = (src != PAD)[:, None, None, :] if explicit else None
        out[name] = _output(f(model, src, K, n, src_mask=mask, length_penalty=alpha))
        for b, row in enumerate(rows):
            out[f"{name}_alone_{b}"] = _output(f(model, torch.tensor([row]), K, n, length_penalty=alpha))
    return out


_LIBRARY = [  # (seed, V, scale, rows, side, K, max_len, alpha)
    (11, 7, 2.0, [[3, 4, 5], [6, 6, 5, 4, 3], [4]], "left", 3, 6, 0.0),
    (12, 6, 2.5, [[5, 4], [3, 3, 3, 5]], "right", 2, 7, 0.6),
    (13, 9, 1.5, [[8, 7, 6], [4], [5, 6, 7, 8, 4]], "left", 4, 5, 1.0),
    (14, 5, 3.0, [[4, 4], [3]], "right", 5, 6, -0.5),
    (15, 8, 2.0, [[7, 3, 5]], "right", 6, 4, 0.3),
]


def probe_test_beam_search_library(ns):
    f = ns["beam_search"]
    out = {}
    for seed, V, scale, rows, side, K, n, alpha in _LIBRARY:
        out[f"seed_{seed}"] = _output(f(_model(seed=seed, V=V, scale=scale), _pad(rows, side), K, n,
                                        length_penalty=alpha))
    return out


PROBES = {
    "test_length_penalty": probe_test_length_penalty,
    "test_beam_step_beams": probe_test_beam_step_beams,
    "test_beam_step_finished": probe_test_beam_step_finished,
    "test_keep_best": probe_test_keep_best,
    "test_beam_search_exhaustive": probe_test_beam_search_exhaustive,
    "test_beam_search_greedy": probe_test_beam_search_greedy,
    "test_beam_search_batch": probe_test_beam_search_batch,
    "test_beam_search_library": probe_test_beam_search_library,
}
