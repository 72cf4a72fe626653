"""Training the encoder-decoder Transformer with teacher forcing.

Explained in chapter 08 (training); chapter 09 reuses it for exposure bias, the copy head and guided
attention. Paper: Vaswani et al., "Attention Is All You Need", 2017, section 5 (Adam with
``beta2 = 0.98``, ``eps = 1e-9``, warm-up then inverse square root learning rate, label smoothing 0.1).

Teacher forcing: the decoder reads the ground-truth target shifted right by one, ``BOS + target``, and
is trained to predict ``target + EOS`` at every position at once, under a causal mask. The shift is made
by the data pipeline (:func:`course_lib.tasks.make_batch`: ``tgt_in``, ``tgt_out``), never by the
model or the loop; in inference the decoders of :mod:`course_lib.decoding` put BOS first themselves::

    target   2 0 2 6 - 1 1 - 2 6
    tgt_in   <bos> 2 0 2 6 - 1 1 - 2 6        (decoder input)
    tgt_out  2 0 2 6 - 1 1 - 2 6 <eos>        (labels; PAD where padded, ignored by the loss)

Read top to bottom:

* :func:`sequence_loss`: cross-entropy over the non-pad positions, with optional label smoothing
  (Szegedy et al. 2016, section 7; PyTorch's ``label_smoothing``), and :func:`token_accuracy`,
  :func:`exact_match`, :func:`accuracy_by_position`.
* :func:`paper_learning_rate`, :func:`lr_multiplier`, :func:`make_scheduler`: warm-up then inverse
  square root (the paper's section 5.3), cosine, linear or constant.
* :func:`teacher_forcing_probability`, :func:`scheduled_sampling_inputs`: scheduled sampling for the
  Transformer, the two-pass method of Mihaylova and Martins 2019 with the decays of Bengio et al. 2015.
* :func:`guided_attention_weights`, :func:`guided_attention_loss`: a diagonal prior on cross-attention
  (Tachibana, Uenoyama and Aihara 2018, section 4.1).
* :func:`train_step`, :func:`evaluate`, :func:`train` and the :class:`History` the chapters plot.

Everything is seeded: the same call on the CPU gives the same numbers (tested). Give ``device=`` to run
the same code on a GPU. Dimension names: B batch, S source length, T target length, V vocabulary,
H heads.
"""
from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.masks import seq2seq_masks
from course_lib.tokenization import BOS_ID, EOS_ID, PAD_ID

__all__ = [
    "sequence_loss",
    "token_accuracy",
    "exact_match",
    "accuracy_by_position",
    "paper_learning_rate",
    "lr_multiplier",
    "make_scheduler",
    "make_optimizer",
    "teacher_forcing_probability",
    "scheduled_sampling_inputs",
    "guided_attention_weights",
    "guided_attention_loss",
    "train_step",
    "evaluate",
    "History",
    "train",
    "grad_norms",
]


# --------------------------------------------------------------------------------------------------
# Loss and accuracy
# --------------------------------------------------------------------------------------------------
def _check_logits_labels(who: str, logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(f"{who}: expected logits (B, T, V) and labels (B, T) with the same B and T, received "
                         f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)}")


def sequence_loss(logits: torch.Tensor, labels: torch.Tensor, pad_id: int = PAD_ID, label_smoothing: float = 0.0,
                  reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the next token, over the positions whose label is not padding.

    For each position ``t`` with label ``y_t != pad``, with ``log p = log_softmax(logits_t)`` and
    ``eps = label_smoothing``::

        loss_t = (1 - eps) * (-log p[y_t]) + eps * mean_v(-log p[v])

    i.e. the cross-entropy against the target distribution ``(1 - eps) * onehot(y_t) + eps / V``
    (Szegedy et al. 2016, section 7; the paper used ``eps = 0.1``, section 5.4). With ``eps = 0`` this
    is the negative log-likelihood of the data, the maximum-likelihood objective.

    Args:
        logits: ``(B, T, V)`` (log-probabilities work too: ``log_softmax`` leaves them unchanged).
        labels: ``(B, T)`` integer ids, ``pad_id`` where padded.
        pad_id: the label to ignore.
        label_smoothing: ``eps`` in ``[0, 1)``.
        reduction: ``"mean"`` (over non-pad positions), ``"sum"``, or ``"none"`` (``(B, T)``, 0 at pads).

    Returns:
        a scalar (or ``(B, T)`` for ``"none"``), in nats per token.

    Raises:
        ValueError: shapes that do not match, ``eps`` outside ``[0, 1)``, an unknown reduction, or (for
            ``"mean"``) no label that is not padding.

    Equals ``F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=pad_id,
    label_smoothing=eps)`` (tested).
    """
    _check_logits_labels("sequence_loss", logits, labels)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"sequence_loss: expected 0 <= label_smoothing < 1, received {label_smoothing}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"sequence_loss: expected reduction 'mean', 'sum' or 'none', received {reduction!r}")
    logp = torch.log_softmax(logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits, -1)
    real = labels != pad_id  # (B, T)
    nll = -logp.gather(-1, labels.clamp_min(0)[..., None])[..., 0]  # (B, T)
    loss = nll if label_smoothing == 0 else (1 - label_smoothing) * nll - label_smoothing * logp.mean(dim=-1)
    loss = loss * real  # (B, T), 0 at pads
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    n = int(real.sum())
    if n == 0:
        raise ValueError("sequence_loss: every label is padding; nothing to average")
    return loss.sum() / n


def token_accuracy(logits: torch.Tensor, labels: torch.Tensor, pad_id: int = PAD_ID) -> float:
    """Fraction of non-pad positions whose argmax is the label (teacher forced: each position sees the truth)."""
    _check_logits_labels("token_accuracy", logits, labels)
    real = labels != pad_id
    return float(((logits.argmax(dim=-1) == labels) & real).sum()) / max(int(real.sum()), 1)


def _tokens(row: Sequence[int], eos_id: int, pad_id: int, until_eos: bool) -> list[int]:
    out = []
    for i in row:
        if until_eos:
            out.append(i)
            if i == eos_id:
                break
        elif i != pad_id:
            out.append(i)
    return out


def exact_match(predictions: torch.Tensor, labels: torch.Tensor, eos_id: int = EOS_ID,
                pad_id: int = PAD_ID) -> torch.Tensor:
    """Whether each output equals its label sequence exactly.

    Args:
        predictions: ``(B, L)`` decoder outputs; read up to and including their first EOS.
        labels: ``(B, T)`` ``target + EOS``, padded with ``pad_id`` on either side (pads are skipped).

    Returns:
        ``(B,)`` boolean.
    """
    if predictions.dim() != 2 or labels.dim() != 2 or predictions.shape[0] != labels.shape[0]:
        raise ValueError(f"exact_match: expected predictions (B, L) and labels (B, T) with the same B, received "
                         f"{tuple(predictions.shape)} and {tuple(labels.shape)}")
    pred, gold = predictions.tolist(), labels.tolist()
    return torch.tensor([_tokens(p, eos_id, pad_id, True) == _tokens(g, eos_id, pad_id, False)
                         for p, g in zip(pred, gold)], dtype=torch.bool)


def accuracy_by_position(predictions: torch.Tensor, labels: torch.Tensor, pad_id: int = PAD_ID) -> torch.Tensor:
    """Fraction of correct tokens at each output position ``t`` (over the rows whose label there is not PAD).

    Args:
        predictions: ``(B, L)``, e.g. :func:`course_lib.decoding.greedy_decode` (the model reads its own
            outputs) or the argmax of teacher-forced logits (it reads the truth).
        labels: ``(B, T)`` right-padded ``target + EOS``.

    Returns:
        ``(T,)`` float; NaN at a position where every label is PAD.
    """
    B, T = labels.shape
    pred = F.pad(predictions, (0, max(T - predictions.shape[1], 0)), value=pad_id)[:, :T]  # (B, T)
    real = labels != pad_id
    correct = ((pred == labels) & real).sum(dim=0).double()
    return correct / real.sum(dim=0).double()  # (T,)


# --------------------------------------------------------------------------------------------------
# Learning rate: warm-up, then inverse square root or cosine
# --------------------------------------------------------------------------------------------------
def paper_learning_rate(step: int, d_model: int, warmup_steps: int = 4000) -> float:
    """The paper's schedule (section 5.3, equation 3), at training step ``step`` (counted from 1)::

        lrate = d_model ** -0.5 * min(step ** -0.5, step * warmup_steps ** -1.5)

    It rises linearly for ``warmup_steps`` steps, peaks at ``(d_model * warmup_steps) ** -0.5``, then
    decays as ``1 / sqrt(step)``. The paper used ``warmup_steps = 4000``.

    Raises:
        ValueError: ``step < 1`` or ``warmup_steps < 1``.
    """
    if step < 1 or warmup_steps < 1:
        raise ValueError(f"paper_learning_rate: expected step >= 1 and warmup_steps >= 1, received "
                         f"step={step}, warmup_steps={warmup_steps}")
    return d_model ** -0.5 * min(step ** -0.5, step * warmup_steps ** -1.5)


SCHEDULES = ("inverse_sqrt", "cosine", "linear", "constant")


def lr_multiplier(step: int, schedule: str = "inverse_sqrt", warmup_steps: int = 100, total_steps: int | None = None,
                  min_ratio: float = 0.0) -> float:
    """The factor multiplying the peak learning rate at training step ``step`` (counted from 1).

    Warm-up: ``step / warmup_steps`` for ``step <= warmup_steps``. Afterwards:

    * ``"inverse_sqrt"``: ``sqrt(warmup_steps / step)``. With peak ``(d_model * warmup_steps) ** -0.5``
      this is exactly :func:`paper_learning_rate` (tested).
    * ``"cosine"``: ``min_ratio + (1 - min_ratio) * (1 + cos(pi * progress)) / 2`` with
      ``progress = (step - warmup_steps) / (total_steps - warmup_steps)`` clipped to ``[0, 1]``
      (Loshchilov and Hutter 2017 without restarts; transformers' ``get_cosine_schedule_with_warmup``
      counts steps from 0 instead, one step earlier).
    * ``"linear"``: from 1 down to ``min_ratio`` at ``total_steps``.
    * ``"constant"``: 1.

    Raises:
        ValueError: an unknown schedule, ``step < 1``, ``warmup_steps < 0`` (``< 1`` for inverse_sqrt),
            or no ``total_steps > warmup_steps`` for cosine and linear.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"lr_multiplier: expected a schedule in {SCHEDULES}, received {schedule!r}")
    if step < 1 or warmup_steps < (1 if schedule == "inverse_sqrt" else 0):
        raise ValueError(f"lr_multiplier: expected step >= 1 and warmup_steps >= "
                         f"{1 if schedule == 'inverse_sqrt' else 0}, received step={step}, warmup_steps={warmup_steps}")
    if schedule in ("cosine", "linear") and (total_steps is None or total_steps <= warmup_steps):
        raise ValueError(f"lr_multiplier: the {schedule} schedule needs total_steps > warmup_steps, received "
                         f"total_steps={total_steps}, warmup_steps={warmup_steps}")
    if step <= warmup_steps:
        return step / warmup_steps
    if schedule == "inverse_sqrt":
        return math.sqrt(warmup_steps / step)
    if schedule == "constant":
        return 1.0
    progress = min((step - warmup_steps) / (total_steps - warmup_steps), 1.0)
    if schedule == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return min_ratio + (1 - min_ratio) * (1 - progress)


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str = "inverse_sqrt", warmup_steps: int = 100,
                   total_steps: int | None = None, min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` whose learning rate at optimizer step ``s`` (from 1) is ``peak * lr_multiplier(s, ...)``,
    ``peak`` being the optimizer's ``lr``. Call ``scheduler.step()`` after each ``optimizer.step()``."""
    lr_multiplier(1, schedule, warmup_steps, total_steps, min_ratio)  # check the arguments now
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: lr_multiplier(i + 1, schedule, warmup_steps, total_steps, min_ratio))


def make_optimizer(model: nn.Module, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-9,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam with the paper's ``beta1 = 0.9, beta2 = 0.98, eps = 1e-9`` (section 5.3), as ``torch.optim.AdamW``:
    with ``weight_decay = 0`` (the default) it is exactly Adam; otherwise decoupled weight decay
    (Loshchilov and Hutter 2019)."""
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


# --------------------------------------------------------------------------------------------------
# Scheduled sampling (two passes, Mihaylova and Martins 2019)
# --------------------------------------------------------------------------------------------------
def teacher_forcing_probability(step: int, schedule: str = "inverse_sigmoid", k: float = 100.0, c: float = 0.0,
                                minimum: float = 0.0) -> float:
    """The probability of feeding the gold token at training step ``step`` (0 at the first step),
    with the decays of Bengio et al. 2015, section 2.4 (used by Mihaylova and Martins 2019, section 3):

    * ``"linear"``: ``max(minimum, k - c * step)`` (``k <= 1``, ``c > 0``).
    * ``"exponential"``: ``k ** step`` (``k < 1``), at least ``minimum``.
    * ``"inverse_sigmoid"``: ``k / (k + exp(step / k))`` (``k >= 1``), at least ``minimum``.

    Raises:
        ValueError: an unknown schedule or ``step < 0``.
    """
    if step < 0:
        raise ValueError(f"teacher_forcing_probability: expected step >= 0, received {step}")
    if schedule == "linear":
        p = k - c * step
    elif schedule == "exponential":
        p = k ** step
    elif schedule == "inverse_sigmoid":
        p = k / (k + math.exp(min(step / k, 700.0)))
    else:
        raise ValueError("teacher_forcing_probability: expected schedule 'linear', 'exponential' or "
                         f"'inverse_sigmoid', received {schedule!r}")
    return float(min(1.0, max(minimum, p)))


@torch.no_grad()
def scheduled_sampling_inputs(model: nn.Module, src: torch.Tensor, tgt_in: torch.Tensor, teacher_forcing: float,
                              pad_id: int = PAD_ID, sampling: str = "argmax",
                              generator: torch.Generator | None = None) -> torch.Tensor:
    """The decoder input of the second pass of scheduled sampling for Transformers.

    First pass: the decoder reads the gold input ``tgt_in`` (teacher forcing) and predicts every next
    token at once. Then each input position ``t`` (but the first, BOS) keeps its gold token with
    probability ``teacher_forcing`` and otherwise receives the first pass's prediction made at ``t - 1``
    (Mihaylova and Martins 2019, section 3, figure 1, with hard tokens: the argmax, or a token sampled
    from the softmax). The second pass, the one trained, reads the result. Predictions are discrete, so
    no gradient could flow through the first pass; it runs under ``no_grad``. Padding stays padding.

    Args:
        model: a :class:`course_lib.transformer.Transformer` (or :class:`PointerGenerator`), in the mode
            the caller chose (dropout on in training).
        src: source ids ``(B, S)``; tgt_in: gold decoder input ``(B, T)`` (BOS + target), either side padded.
        teacher_forcing: probability of the gold token, in ``[0, 1]``.
        pad_id: the padding id.
        sampling: ``"argmax"`` or ``"sample"``.
        generator: for the coin flips and the samples (on the model's device).

    Returns:
        ``(B, T)`` decoder input for the second pass.

    Raises:
        ValueError: a probability outside ``[0, 1]``, an unknown ``sampling``.
    """
    if not 0.0 <= teacher_forcing <= 1.0:
        raise ValueError(f"scheduled_sampling_inputs: expected 0 <= teacher_forcing <= 1, received {teacher_forcing}")
    if sampling not in ("argmax", "sample"):
        raise ValueError(f"scheduled_sampling_inputs: expected sampling 'argmax' or 'sample', received {sampling!r}")
    if teacher_forcing == 1.0:
        return tgt_in
    masks = seq2seq_masks(src, tgt_in, pad_id)
    logits = model(src, tgt_in, masks.src, masks.tgt, masks.cross)  # (B, T, V): first pass
    if sampling == "argmax":
        pred = logits.argmax(dim=-1)  # (B, T)
    else:
        probs = logits.float().softmax(dim=-1)
        pred = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).view(tgt_in.shape)
    model_in = torch.cat([tgt_in[:, :1], pred[:, :-1]], dim=1)  # (B, T): the prediction made one step before
    first = torch.cat([torch.ones_like(tgt_in[:, :1], dtype=torch.bool), tgt_in[:, :-1] == pad_id], dim=1)
    keep = (tgt_in == pad_id) | first  # pads, and the first real token (BOS), stay gold
    gold = torch.rand(tgt_in.shape, generator=generator, device=tgt_in.device) < teacher_forcing
    return torch.where(keep | gold, tgt_in, model_in)


# --------------------------------------------------------------------------------------------------
# Guided attention (Tachibana et al. 2018, section 4.1)
# --------------------------------------------------------------------------------------------------
def guided_attention_weights(S: int, T: int, sigma: float = 0.2, device=None,
                             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The penalty ``W[t, n] = 1 - exp(-(n / S - t / T) ** 2 / (2 sigma ** 2))`` for target position ``t``
    attending to source position ``n`` (0-based): 0 on the diagonal, near 1 far from it.

    Tachibana et al. 2018, section 4.1 (``g = 0.2``); the same matrix as ESPnet's
    ``GuidedAttentionLoss._make_guided_attention_mask`` (whose default ``sigma`` is 0.4).

    Shape:
        returns ``(T, S)``.
    """
    if S < 1 or T < 1 or not sigma > 0:
        raise ValueError(f"guided_attention_weights: expected S, T >= 1 and sigma > 0, received S={S}, T={T}, "
                         f"sigma={sigma}")
    n = torch.arange(S, device=device, dtype=dtype) / S  # (S,)
    t = torch.arange(T, device=device, dtype=dtype) / T  # (T,)
    return 1 - torch.exp(-((n[None, :] - t[:, None]) ** 2) / (2 * sigma ** 2))  # (T, S)


def guided_attention_loss(weights: torch.Tensor, src_mask: torch.Tensor, tgt_mask: torch.Tensor,
                          sigma: float = 0.2) -> torch.Tensor:
    """The guided attention loss: the mean of ``A[t, n] * W[t, n]`` over real target and source positions.

    ``A`` are cross-attention weights and ``W`` is :func:`guided_attention_weights`, computed for each
    example with its own lengths ``S_b`` and ``T_b``; positions count from each row's first real token,
    so left and right padding give the same loss (tested). Attention near the diagonal ``n / S ~ t / T``
    costs little, attention far from it up to 1: a prior for tasks whose output follows the input in
    order (Tachibana et al. 2018, section 4.1; ESPnet's ``GuidedMultiHeadAttentionLoss`` for several heads).

    Args:
        weights: ``(B, H, T, S)`` or ``(B, T, S)`` attention weights (rows summing to 1).
        src_mask: ``(B, S)`` boolean, True at real source tokens.
        tgt_mask: ``(B, T)`` boolean, True at real target positions (queries).
        sigma: the width ``g`` of the diagonal band.

    Returns:
        a scalar: the mean over examples' real ``(t, n)`` pairs and over heads.

    Raises:
        ValueError: shapes that do not match.
    """
    if weights.dim() == 3:
        weights = weights[:, None]  # (B, 1, T, S)
    if weights.dim() != 4 or src_mask.shape != (weights.shape[0], weights.shape[3]) or \
            tgt_mask.shape != (weights.shape[0], weights.shape[2]):
        raise ValueError(f"guided_attention_loss: expected weights (B, H, T, S) with src_mask (B, S) and tgt_mask "
                         f"(B, T), received {tuple(weights.shape)}, {tuple(src_mask.shape)}, {tuple(tgt_mask.shape)}")
    src_mask, tgt_mask = src_mask.to(weights.device).bool(), tgt_mask.to(weights.device).bool()
    dtype = weights.dtype if weights.is_floating_point() else torch.float32
    n = (src_mask.long().cumsum(-1) - 1).to(dtype) / src_mask.sum(-1, keepdim=True).clamp_min(1)  # (B, S)
    t = (tgt_mask.long().cumsum(-1) - 1).to(dtype) / tgt_mask.sum(-1, keepdim=True).clamp_min(1)  # (B, T)
    W = 1 - torch.exp(-((n[:, None, :] - t[:, :, None]) ** 2) / (2 * sigma ** 2))  # (B, T, S)
    valid = (tgt_mask[:, :, None] & src_mask[:, None, :])[:, None]  # (B, 1, T, S)
    H = weights.shape[1]
    return (weights * W[:, None] * valid).sum() / (valid.sum() * H).clamp_min(1)


# --------------------------------------------------------------------------------------------------
# One step, evaluation, the loop
# --------------------------------------------------------------------------------------------------
def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def train_step(model: nn.Module, batch, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, *, pad_id: int = PAD_ID,
               label_smoothing: float = 0.0, max_grad_norm: float | None = 1.0, teacher_forcing: float = 1.0,
               sampling: str = "argmax", generator: torch.Generator | None = None, guided_attention: float = 0.0,
               guided_sigma: float = 0.2, guided_layers: Sequence[int] | None = None) -> dict:
    """One optimisation step with teacher forcing on one padded batch.

    ``logits = model(src, tgt_in, masks)`` (every position at once, causal mask), the loss of
    :func:`sequence_loss` against ``tgt_out``, plus ``guided_attention * guided_attention_loss`` when
    asked, backward, gradient clipping to ``max_grad_norm`` (global L2 norm; Pascanu et al. 2013),
    optimizer and scheduler steps. With ``teacher_forcing < 1`` the decoder input comes from
    :func:`scheduled_sampling_inputs` first.

    Args:
        model: a :class:`Transformer` or :class:`course_lib.decoding.PointerGenerator`; put in train mode.
        batch: anything with ``src (B, S)``, ``tgt_in (B, T)``, ``tgt_out (B, T)`` (a
            :class:`course_lib.tasks.Seq2SeqBatch`); moved to the model's device.
        optimizer, scheduler: from :func:`make_optimizer`, :func:`make_scheduler` (scheduler optional).
        pad_id, label_smoothing: as :func:`sequence_loss`.
        max_grad_norm: clip threshold; None = no clipping (the norm is still measured).
        teacher_forcing, sampling, generator: scheduled sampling (1.0 = plain teacher forcing).
        guided_attention: weight ``lambda`` of the guided attention loss (0 = off), over the cross-attention
            of ``guided_layers`` (default all decoder layers, all heads), width ``guided_sigma``.

    Returns:
        ``{"loss", "guided_loss", "lr", "grad_norm", "token_accuracy"}`` (floats; ``loss`` is the
        cross-entropy term, ``lr`` the rate this step used, ``grad_norm`` before clipping).
    """
    from course_lib.decoding import record_decoder

    device = _model_device(model)
    src, tgt_in, labels = batch.src.to(device), batch.tgt_in.to(device), batch.tgt_out.to(device)
    model.train()
    if teacher_forcing < 1.0:
        tgt_in = scheduled_sampling_inputs(model, src, tgt_in, teacher_forcing, pad_id, sampling, generator)
    masks = seq2seq_masks(src, tgt_in, pad_id)
    guided = guided_attention > 0
    with (record_decoder(model, guided_layers) if guided else contextlib.nullcontext()) as rec:
        logits = model(src, tgt_in, masks.src, masks.tgt, masks.cross)  # (B, T, V)
    loss = sequence_loss(logits, labels, pad_id, label_smoothing)
    total, ga = loss, torch.zeros(())
    if guided:
        layer_losses = [guided_attention_loss(ws[-1], src != pad_id, tgt_in != pad_id, guided_sigma)
                        for ws in rec.cross_weights.values()]
        ga = torch.stack(layer_losses).mean()
        total = loss + guided_attention * ga
    lr = optimizer.param_groups[0]["lr"]
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    norm = torch.nn.utils.clip_grad_norm_(_params(optimizer), max_grad_norm if max_grad_norm else float("inf"))
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return {"loss": float(loss.detach()), "guided_loss": float(ga.detach()), "lr": float(lr), "grad_norm": float(norm),
            "token_accuracy": token_accuracy(logits.detach(), labels, pad_id)}


def _chunks(data, batch_size: int, order: list[int]):
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield [data[i] for i in idx] if isinstance(data, (list, tuple)) else data[idx]


def _collate(tokenizer, collate, src_side: str, tgt_side: str, src_eos: bool) -> Callable:
    if collate is not None:
        return collate
    if tokenizer is None:
        raise ValueError("training: give a tokenizer (or a collate function) to turn examples into batches")
    from course_lib.tasks import make_batch

    return lambda chunk: make_batch(chunk, tokenizer, src_side=src_side, tgt_side=tgt_side, src_eos=src_eos)


@torch.no_grad()
def evaluate(model: nn.Module, data, tokenizer=None, *, batch_size: int = 256, collate: Callable | None = None,
             pad_id: int = PAD_ID, bos_id: int = BOS_ID, eos_id: int = EOS_ID, max_len: int | None = None,
             decode: bool = True, src_side: str = "right", tgt_side: str = "right", src_eos: bool = False) -> dict:
    """Loss and accuracies on held-out examples, in eval mode (restored afterwards).

    * ``loss``, ``token_accuracy``: teacher forced, every token weighted alike (no label smoothing).
    * ``exact_match``: the fraction of examples whose greedy output
      (:func:`course_lib.decoding.greedy_decode`, at most ``max_len`` tokens, default the label length)
      equals ``target + EOS``; only with ``decode=True``.

    Args:
        model: the model, on its device.
        data: a list of ``{"src", "tgt"}`` dicts or a ``datasets.Dataset``.
        tokenizer, collate, src_side, tgt_side, src_eos: how examples become batches (``collate(examples)``,
            default :func:`course_lib.tasks.make_batch` with ``tokenizer``).

    Returns:
        ``{"loss", "token_accuracy", "exact_match", "n"}`` (``exact_match`` is None without decoding).
    """
    from course_lib.decoding import greedy_decode

    make = _collate(tokenizer, collate, src_side, tgt_side, src_eos)
    device = _model_device(model)
    was_training = model.training
    model.eval()
    loss_sum, n_tokens, n_correct, n_exact, n = 0.0, 0, 0, 0, 0
    try:
        for chunk in _chunks(data, batch_size, list(range(len(data)))):
            batch = make(chunk)
            src, tgt_in, labels = batch.src.to(device), batch.tgt_in.to(device), batch.tgt_out.to(device)
            masks = seq2seq_masks(src, tgt_in, pad_id)
            logits = model(src, tgt_in, masks.src, masks.tgt, masks.cross)
            real = labels != pad_id
            loss_sum += float(sequence_loss(logits, labels, pad_id, reduction="sum"))
            n_tokens += int(real.sum())
            n_correct += int(((logits.argmax(-1) == labels) & real).sum())
            n += src.shape[0]
            if decode:
                out = greedy_decode(model, src, max_len or labels.shape[1], bos_id, eos_id, masks.src, pad_id=pad_id)
                n_exact += int(exact_match(out, labels, eos_id, pad_id).sum())
    finally:
        model.train(was_training)
    return {"loss": loss_sum / max(n_tokens, 1), "token_accuracy": n_correct / max(n_tokens, 1),
            "exact_match": n_exact / max(n, 1) if decode else None, "n": n}


@dataclass
class History:
    """What :func:`train` measured, for plots and printed numbers.

    Per step (lists of equal length): ``step`` (1, 2, ...), ``loss`` (cross-entropy of the batch, as
    trained: label smoothing included), ``lr``, ``grad_norm`` (before clipping), ``token_accuracy``
    (teacher forced, on the batch), ``teacher_forcing`` (probability used), ``guided_loss``.
    Per evaluation: ``eval_step``, ``eval_loss``, ``eval_token_accuracy``, ``eval_exact_match``.
    ``train_seconds`` and ``eval_seconds``: wall-clock time (not reproducible; everything else is).
    """

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    token_accuracy: list[float] = field(default_factory=list)
    teacher_forcing: list[float] = field(default_factory=list)
    guided_loss: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    eval_token_accuracy: list[float] = field(default_factory=list)
    eval_exact_match: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0

    def as_dict(self) -> dict:
        """The lists (and times) as a plain dict (``pandas.DataFrame(h.as_dict()["step"...])`` friendly)."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()}

    def measured(self) -> dict:
        """Everything but the wall-clock times: equal for two runs with the same seed on the CPU."""
        d = self.as_dict()
        d.pop("train_seconds")
        d.pop("eval_seconds")
        return d

    def plot(self, axes=None, smooth: int = 1):
        """Loss (train and eval) and accuracy (train tokens, eval exact match) against the step, side by side.

        ``smooth``: running mean over that many steps of the training curves. Returns the two axes.
        """
        import matplotlib.pyplot as plt

        if axes is None:
            _, axes = plt.subplots(1, 2, figsize=(9, 3.2))

        def running(xs):
            if smooth <= 1 or len(xs) < smooth:
                return xs
            c = torch.tensor(xs, dtype=torch.float64).cumsum(0)
            return ((c[smooth - 1:] - torch.cat([torch.zeros(1, dtype=torch.float64), c[:-smooth]]))
                    / smooth).tolist()

        steps = self.step[smooth - 1:] if smooth > 1 and len(self.step) >= smooth else self.step
        axes[0].plot(steps, running(self.loss), label="train (batch)")
        if self.eval_step:
            axes[0].plot(self.eval_step, self.eval_loss, "o-", label="held out")
        axes[0].set(xlabel="step", ylabel="cross-entropy (nats/token)", yscale="log")
        axes[0].legend()
        axes[1].plot(steps, running(self.token_accuracy), label="token accuracy (train, teacher forced)")
        if self.eval_step and self.eval_exact_match[0] is not None:
            axes[1].plot(self.eval_step, self.eval_exact_match, "o-", label="exact match (held out, greedy)")
        axes[1].set(xlabel="step", ylabel="accuracy", ylim=(0, 1.02))
        axes[1].legend()
        return axes


def _batch_stream(data, batch_size: int, make: Callable, rng: random.Random) -> Iterator:
    """Endless batches: each epoch a new shuffle of the examples (or the given batches, in order)."""
    if len(data) == 0:
        raise ValueError("train: expected at least one training example")
    if hasattr(data[0], "tgt_in") and hasattr(data[0], "tgt_out"):  # ready batches
        while True:
            yield from data
    while True:
        order = list(range(len(data)))
        rng.shuffle(order)
        for chunk in _chunks(data, batch_size, order):
            yield make(chunk)


def train(model: nn.Module, train_data, tokenizer=None, *, steps: int, batch_size: int = 64, lr: float = 1e-3,
          warmup_steps: int = 100, schedule: str = "inverse_sqrt", min_lr_ratio: float = 0.0,
          betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-9, weight_decay: float = 0.0,
          label_smoothing: float = 0.0, max_grad_norm: float | None = 1.0,
          teacher_forcing: float | Callable[[int], float] = 1.0, sampling: str = "argmax",
          guided_attention: float = 0.0, guided_sigma: float = 0.2, guided_layers: Sequence[int] | None = None,
          eval_data=None, eval_every: int | None = None, eval_max_len: int | None = None,
          collate: Callable | None = None, src_side: str = "right", tgt_side: str = "right", src_eos: bool = False,
          pad_id: int = PAD_ID, seed: int = 0, device: torch.device | str | None = None, progress: bool = True,
          optimizer: torch.optim.Optimizer | None = None) -> History:
    """Train ``model`` in place with teacher forcing for ``steps`` optimizer steps; return its :class:`History`.

    Batches: ``batch_size`` examples of ``train_data`` at a time, in a new shuffled order each epoch
    (``random.Random(seed)``), turned into padded batches by ``collate`` (default
    :func:`course_lib.tasks.make_batch` with ``tokenizer``: ``tgt_in`` = BOS + target, ``tgt_out`` =
    target + EOS). ``train_data`` may also be a list of ready batches, used in turn.

    Each step is :func:`train_step`: Adam (``betas``, ``eps``; AdamW with ``weight_decay``), peak rate
    ``lr`` with warm-up and ``schedule`` (:func:`lr_multiplier`, ``total_steps = steps``), label smoothing,
    clipping, optional scheduled sampling (``teacher_forcing``: a probability, or a function of the step
    number from 0 such as ``lambda i: teacher_forcing_probability(i, "inverse_sigmoid", k=50)``) and guided
    attention. Every ``eval_every`` steps and after the last one, :func:`evaluate` on ``eval_data``
    (exact match by greedy decoding).

    Determinism: ``torch.manual_seed(seed)`` is called first (dropout draws from torch's global
    generator), the batch order comes from ``seed``, the scheduled-sampling draws from a generator seeded
    with ``seed``: on the CPU two calls with the same arguments and the same initial model give the same
    history (tested). Model initialisation is the caller's (seed before building the model).

    The model is left in eval mode, ready for the decoders.

    Args:
        device: where to train (the model is moved there); default the model's device.
        progress: show a tqdm progress bar with the loss (``False`` in the book's chapters).
        optimizer: use this one instead of making one (``lr``, ``betas``, ``eps``, ``weight_decay``
            are then ignored; its ``lr`` is the peak).

    Returns:
        the :class:`History`.

    Raises:
        ValueError: ``steps < 1``, no examples, no tokenizer and no collate, bad schedule arguments.
    """
    from tqdm import tqdm

    if steps < 1:
        raise ValueError(f"train: expected steps >= 1, received {steps}")
    if device is not None:
        model.to(device)
    device = _model_device(model)
    torch.manual_seed(seed)
    make = _collate(tokenizer, collate, src_side, tgt_side, src_eos)
    if optimizer is None:
        optimizer = make_optimizer(model, lr, betas, eps, weight_decay)
    scheduler = make_scheduler(optimizer, schedule, warmup_steps, steps if schedule in ("cosine", "linear") else None,
                               min_lr_ratio)
    generator = torch.Generator(device=device).manual_seed(seed)
    stream = _batch_stream(train_data, batch_size, make, random.Random(seed))
    history = History()

    def run_eval(step: int) -> None:
        t0 = time.perf_counter()
        r = evaluate(model, eval_data, collate=make, pad_id=pad_id, max_len=eval_max_len)
        history.eval_step.append(step)
        history.eval_loss.append(r["loss"])
        history.eval_token_accuracy.append(r["token_accuracy"])
        history.eval_exact_match.append(r["exact_match"])
        history.eval_seconds += time.perf_counter() - t0

    bar = tqdm(total=steps, desc="training", disable=not progress, leave=True)
    t_start = time.perf_counter()
    try:
        for i in range(steps):
            p = teacher_forcing(i) if callable(teacher_forcing) else float(teacher_forcing)
            stats = train_step(model, next(stream), optimizer, scheduler, pad_id=pad_id,
                               label_smoothing=label_smoothing, max_grad_norm=max_grad_norm, teacher_forcing=p,
                               sampling=sampling, generator=generator, guided_attention=guided_attention,
                               guided_sigma=guided_sigma, guided_layers=guided_layers)
            history.step.append(i + 1)
            history.teacher_forcing.append(p)
            for key in ("loss", "lr", "grad_norm", "token_accuracy", "guided_loss"):
                getattr(history, key).append(stats[key])
            bar.set_postfix(loss=f"{stats['loss']:.4f}", lr=f"{stats['lr']:.2e}", refresh=False)
            bar.update(1)
            if eval_data is not None and eval_every and (i + 1) % eval_every == 0 and i + 1 < steps:
                run_eval(i + 1)
        if eval_data is not None:
            run_eval(steps)
    finally:
        bar.close()
        model.eval()
    history.train_seconds = time.perf_counter() - t_start - history.eval_seconds
    return history


def grad_norms(model: nn.Module, depth: int = 3) -> dict[str, float]:
    """L2 norm of the gradients, grouped by the first ``depth`` parts of the parameter names.

    ``depth=3`` gives groups such as ``"encoder.layers.0"``, ``"decoder.layers.1"``, ``"src_embed.weight"``;
    parameters without a gradient count as 0. Read after ``backward()`` (chapter 08: with the
    cross-attention cut, every encoder group is exactly 0).
    """
    sums: dict[str, float] = {}
    for name, p in model.named_parameters():
        key = ".".join(name.split(".")[:depth])
        g = 0.0 if p.grad is None else float(p.grad.detach().double().pow(2).sum())
        sums[key] = sums.get(key, 0.0) + g
    return {k: math.sqrt(v) for k, v in sums.items()}
