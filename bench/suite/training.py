"""Training: steps and seconds to reach 99 % held-out exact match on the date task, chapter 08's recipe.

Chapter 08 trains a tiny encoder-decoder (D = 32, two encoder blocks, one decoder block) on
:func:`course_lib.tasks.date_examples` (``"Nov 26, 2026"`` -> ``"2026-11-26"``) with
:func:`course_lib.training.train`: 800 steps of 64 examples, peak learning rate 1e-2 after 50 warm-up steps,
cosine decay, clipping at 1. This benchmark runs that recipe for several seeds (the seed draws the initial
weights and the batch order), with the attention's fast path (PyTorch's fused kernel, the default) and with the
explicit path (``set_fast_attention(model, False)``: scores, masked softmax, weighted sum, step by step), side
by side, and evaluates held-out exact match by greedy decoding every ``eval_every`` steps.

Reported per run: the first evaluated step at which exact match reaches ``target`` (or none), the training
seconds up to it (training time per step times that step: evaluation excluded), the final exact match, and per
seed the ratio explicit / fast of the seconds per training step. Both paths compute the same function (tested in
``tests/lib/test_attention.py``) but round differently, and over hundreds of steps the two runs of one seed drift
apart: their exact-match curves are close, not identical.

Options (``-o key=value``): ``seeds`` (default 0,1 small, 0,1,2 full); ``paths`` (default fast,explicit);
``steps`` (800); ``eval_every`` (100); ``target`` (0.99); ``train`` training examples (20000); ``test`` held-out
examples (500).
"""
from __future__ import annotations

import statistics

import torch

from bench.harness import Context, Result
from course_lib.attention import set_fast_attention
from course_lib.tasks import date_examples
from course_lib.tokenization import CharTokenizer
from course_lib.training import train
from course_lib.transformer import Transformer, TransformerConfig

NAME = "training"
TITLE = "Training: time to 99 % exact match on the date task (chapter 08's recipe)"
DEFAULT = True
DEVICES = ("cpu", "cuda")


def _data(n_train: int, n_test: int):
    examples = date_examples(n_train + 2 * n_test, seed=0)
    train_set = examples[:n_train]
    seen = {e["src"] for e in train_set}
    test_set = [e for e in examples[n_train:] if e["src"] not in seen][:n_test]
    return train_set, test_set, CharTokenizer.from_examples(train_set)


def run(ctx: Context) -> Result:
    seeds = [int(s) for s in ctx.option("seeds", "0,1" if ctx.size == "small" else "0,1,2").split(",")]
    paths = [p.strip() for p in ctx.option("paths", "fast,explicit").split(",")]
    steps = int(ctx.option("steps", "800"))
    eval_every = int(ctx.option("eval_every", "100"))
    target = float(ctx.option("target", "0.99"))
    train_set, test_set, tok = _data(int(ctx.option("train", "20000")), int(ctx.option("test", "500")))
    rows = []
    for seed in seeds:
        for path in paths:
            cfg = TransformerConfig.tiny(src_vocab_size=len(tok), tgt_vocab_size=len(tok), d_model=32, n_heads=4,
                                         d_ff=64, n_encoder_layers=2, n_decoder_layers=1, max_len=48)
            torch.manual_seed(seed)
            model = set_fast_attention(Transformer(cfg), path == "fast").to(ctx.device)
            hist = train(model, train_set, tok, steps=steps, batch_size=64, lr=1e-2, warmup_steps=50,
                         schedule="cosine", max_grad_norm=1.0, seed=seed, eval_data=test_set, eval_every=eval_every,
                         progress=False, device=ctx.device)
            per_step = hist.train_seconds / steps
            reached = next((s for s, em in zip(hist.eval_step, hist.eval_exact_match) if em >= target), None)
            rows.append({"seed": seed, "path": path, "steps": steps, "target": target,
                         "step_reached": reached, "seconds_to_target": None if reached is None else per_step * reached,
                         "train_seconds": hist.train_seconds, "eval_seconds": hist.eval_seconds,
                         "seconds_per_step": per_step, "final_exact_match": hist.eval_exact_match[-1],
                         "curve": ";".join(f"{s}:{em:.3f}" for s, em in zip(hist.eval_step, hist.eval_exact_match))})
            print(f"   seed {seed} {path:8s}: {target:.0%} at step {reached}, "
                  f"{rows[-1]['seconds_to_target'] or float('nan'):.1f} s; final exact match "
                  f"{rows[-1]['final_exact_match']:.3f}; {1000 * per_step:.1f} ms per step", flush=True)
    return Result(rows=rows, summary=_summary(rows, target), plot=lambda fig: _plot(fig, rows, target),
                  notes=["Seconds to the target = training seconds per step x the first evaluated step that reaches "
                         "it (evaluation excluded); exact match is evaluated every few steps, so the step is an "
                         "upper bound.", "One run per seed and path; the seed sets the initial weights and the "
                         "batch order."])


def _summary(rows: list[dict], target: float) -> list[str]:
    lines = []
    for path in dict.fromkeys(r["path"] for r in rows):
        mine = [r for r in rows if r["path"] == path]
        reached = [r for r in mine if r["step_reached"] is not None]
        seconds = [r["seconds_to_target"] for r in reached]
        lines.append(
            f"{path} attention: {len(reached)} of {len(mine)} seeds reach {target:.0%} held-out exact match, at steps "
            f"{', '.join(str(r['step_reached']) for r in mine)}; median {statistics.median(seconds):.1f} s of training"
            if seconds else f"{path} attention: no seed reaches {target:.0%} in {mine[0]['steps']} steps")
    by_seed = {}
    for r in rows:
        by_seed.setdefault(r["seed"], {})[r["path"]] = r["seconds_per_step"]
    ratios = [d["explicit"] / d["fast"] for d in by_seed.values() if "explicit" in d and "fast" in d]
    if ratios:
        lines.append("seconds per training step, explicit / fast: "
                     + ", ".join(f"{x:.2f}x" for x in ratios) + f" (median {statistics.median(ratios):.2f}x)")
    return lines


def _plot(fig, rows: list[dict], target: float) -> None:
    ax = fig.subplots()
    for i, r in enumerate(rows):
        pts = [tuple(map(float, p.split(":"))) for p in r["curve"].split(";")]
        ax.plot([r["seconds_per_step"] * s for s, _ in pts], [em for _, em in pts], marker="o", ms=3,
                color=f"C{i % 10}", ls="-" if r["path"] == "fast" else "--", label=f"seed {r['seed']}, {r['path']}")
    ax.axhline(target, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("training seconds (evaluation excluded)")
    ax.set_ylabel("held-out exact match")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Date normalisation, chapter 08's recipe", fontsize=11)
