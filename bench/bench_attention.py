"""Benchmark: attention variants against full attention on the CPU, in one run.

Chapter 05 (Q23) shows a quick measurement; this script does the careful one. For every sequence length T it
times one forward pass of

* full attention (``course_lib.attention.scaled_dot_product_attention``), the reference;
* local attention with a dense band mask (``sliding_window_attention``): same work, hidden scores;
* local attention computed by blocks (``blocked_sliding_window_attention``): O(T * w);
* linear attention, non-causal and causal (``linear_attention``): O(T * Dh * Dv);
* PyTorch's fused kernel (``torch.nn.functional.scaled_dot_product_attention``), exact, FlashAttention-style;

and reports the median time over several rounds and the median per-round ratio ``time(full) / time(variant)``
(above 1: faster than full attention); each round calls every variant once, so load bursts hit them alike. Each variant is first checked against its dense reference, so a fast wrong kernel cannot
win. Ratios measured in the same run on the same machine are comparable; absolute times are not (other load,
other CPUs).

Usage::

    python bench/bench_attention.py                      # writes bench/results/attention_cpu.md
    python bench/bench_attention.py --lengths 256 512 --repeats 3 --out /tmp/quick.md
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.harness import _cpu_name as cpu_name  # noqa: E402

import torch
import torch.nn.functional as F

from course_lib.attention import scaled_dot_product_attention
from course_lib.efficient import (
    blocked_sliding_window_attention,
    linear_attention,
    linear_attention_weights,
    sliding_window_attention,
    sliding_window_mask,
)

RESULTS = Path(__file__).parent / "results" / "attention_cpu.md"


def variants(window: int) -> dict:
    return {
        "full (course_lib)": lambda q, k, v: scaled_dot_product_attention(q, k, v),
        "local, dense mask": lambda q, k, v: sliding_window_attention(q, k, v, window),
        "local, blocked": lambda q, k, v: blocked_sliding_window_attention(q, k, v, window),
        "linear": lambda q, k, v: linear_attention(q, k, v),
        "linear, causal": lambda q, k, v: linear_attention(q, k, v, causal=True),
        "PyTorch fused": lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
    }


def check(window: int) -> None:
    """Every variant equals its dense reference (float64, small T) before anything is timed."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 300, 16, generator=g, dtype=torch.float64) for _ in range(3))
    full = scaled_dot_product_attention(q, k, v)
    band = scaled_dot_product_attention(q, k, v, mask=sliding_window_mask(300, window))
    refs = {
        "full (course_lib)": full,
        "local, dense mask": band,
        "local, blocked": band,
        "linear": linear_attention_weights(q, k) @ v,
        "linear, causal": linear_attention_weights(q, k, causal=True) @ v,
        "PyTorch fused": full,
    }
    for name, fn in variants(window).items():
        torch.testing.assert_close(fn(q, k, v), refs[name], msg=lambda m: f"{name}: {m}")


def run(lengths, B, H, Dh, window, repeats):
    """Time every variant ``repeats`` times per length, round-robin (one call of each variant per round).

    Round-robin matters on a shared machine: a burst of load then slows every variant of the same round, and the
    per-round ratio ``time(full) / time(variant)`` stays meaningful. Returns, per variant and length, the median
    time and the median per-round ratio.
    """
    fns = variants(window)
    times = {name: [] for name in fns}
    ratios = {name: [] for name in fns}
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for T in lengths:
            q, k, v = (torch.randn(B, H, T, Dh, generator=g) for _ in range(3))
            for fn in fns.values():
                fn(q, k, v)  # warm-up
            rounds = {name: [] for name in fns}
            for _ in range(repeats):
                for name, fn in fns.items():
                    start = time.perf_counter()
                    fn(q, k, v)
                    rounds[name].append(time.perf_counter() - start)
            full = rounds["full (course_lib)"]
            for name in fns:
                times[name].append(statistics.median(rounds[name]))
                ratios[name].append(statistics.median(f / t for f, t in zip(full, rounds[name])))
            print(f"T={T}: " + ", ".join(f"{n} {1000 * times[n][-1]:.2f} ms" for n in fns), flush=True)
    return times, ratios


def report(times, ratios, lengths, args) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Attention variants on the CPU",
        "",
        "Written by `bench/bench_attention.py` (chapter 05, Q23). One forward pass per call, "
        f"{args.repeats} rounds after a warm-up, each round calling every variant once; B={args.batch}, H={args.heads}, Dh={args.head_dim}, "
        f"window w={args.window}, float32, torch threads={torch.get_num_threads()}.",
        "",
        f"Machine: {platform.machine()}, {cpu_name()}, {os.cpu_count()} logical CPUs; "
        f"torch {torch.__version__}; 1-minute load average at the end of the run: {load:.1f}.",
        "Absolute times depend on the machine and its load; the ratios, measured in the same run, are what to read.",
        "",
        "## Speed-up over full attention: median over rounds of time(full) / time(variant)",
        "",
        "| variant | " + " | ".join(f"T={T}" for T in lengths) + " |",
        "|---|" + "---:|" * len(lengths),
    ]
    for name, rs in ratios.items():
        lines.append(f"| {name} | " + " | ".join(f"{r:.2f}" for r in rs) + " |")
    lines += [
        "",
        "## Median time (ms)",
        "",
        "| variant | " + " | ".join(f"T={T}" for T in lengths) + " |",
        "|---|" + "---:|" * len(lengths),
    ]
    for name, ts in times.items():
        lines.append(f"| {name} | " + " | ".join(f"{1000 * t:.2f}" for t in ts) + " |")
    lines += [
        "",
        "Reading: full attention and local attention with a dense mask do the same T^2 work (the mask hides scores, "
        "it does not skip them); the blocked local version and linear attention grow like T, so their speed-up "
        "grows with T; the fused kernel does exact T^2 attention without writing the T x T matrix to memory.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--window", type=int, default=128)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: comparable across machines)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    check(args.window)
    times, ratios = run(args.lengths, args.batch, args.heads, args.head_dim, args.window, args.repeats)
    text = report(times, ratios, args.lengths, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
