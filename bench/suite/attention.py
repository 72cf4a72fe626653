"""Attention: course_lib's explicit path and fast path against PyTorch's fused kernel and nn.MultiheadAttention.

Two levels, forward (inference, ``torch.no_grad``) and forward + backward (training), without a mask and with
a causal mask, for several sequence lengths T (self-attention, S = T):

* module level, one ``(B, T, D)`` self-attention layer with the same weights everywhere:
  ``course explicit`` (``MultiHeadAttention(fast=False)``: scores, masked softmax, weighted sum, step by
  step), ``course fast`` (``MultiHeadAttention()``, the default: ``fused_attention``), ``nn.MultiheadAttention``
  (``MultiHeadAttention.to_torch()``; in inference PyTorch takes its own native fast path), and
  ``PyTorch SDPA``, the reference: the same four projections around one call of
  ``torch.nn.functional.scaled_dot_product_attention`` (nanoGPT's layer; ``is_causal=True`` for the causal
  case, the kernel's fastest form);
* kernel level, on ``(B, H, T, Dh)`` tensors: ``scaled_dot_product_attention`` (explicit), ``fused_attention``
  (the fast path's core) and ``F.scaled_dot_product_attention``; with the causal mask also
  ``F.scaled_dot_product_attention`` given the boolean mask instead of ``is_causal=True``, which tells the
  kernel's own cost of a mask apart from the course wrapper's.

The course's variants take the course's boolean mask (``causal_mask(T)``, built once outside the timed call, as
a model builds it); nn.MultiheadAttention takes its True-means-ignore mask with ``is_causal=True``. Ratios are
``time(variant) / time(PyTorch SDPA)`` per round (above 1: slower than PyTorch's fused kernel). The goal: the
fast path within 1.2x of the fused kernel. Before anything is timed, every variant is checked to give the same
outputs and gradients (float64 on the CPU, float32 on a GPU), so a fast wrong variant cannot win.

Options (``-o key=value``): ``T=64,256,1024`` sequence lengths; ``B``, ``D``, ``H`` sizes; ``dtype`` (default
float32 on the CPU, float16 on CUDA); ``levels=module,kernel``; ``passes=forward,backward``; ``masks=none,causal``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.harness import Context, Result, compare
from course_lib.attention import (
    MultiHeadAttention,
    fused_attention,
    merge_heads,
    scaled_dot_product_attention,
    split_heads,
)
from course_lib.masks import causal_mask

NAME = "attention"
TITLE = "Attention: course_lib's explicit and fast paths against PyTorch's fused kernel and nn.MultiheadAttention"
DEFAULT = True
DEVICES = ("cpu", "cuda")

BASELINE = "PyTorch SDPA"
SDPA_MASK = "PyTorch SDPA, boolean mask"
PASS_NAMES = {"forward": "forward", "backward": "forward+backward"}  # option value -> name in the results
GOAL = 1.2  # the fast path within this factor of PyTorch's fused kernel

SIZES = {  # (device, size) -> B, D, H, lengths
    ("cpu", "small"): (2, 256, 4, [64, 256, 1024]),
    ("cpu", "full"): (4, 512, 8, [128, 512, 1024, 2048]),
    ("cuda", "small"): (8, 1024, 16, [256, 1024, 2048, 4096]),
    ("cuda", "full"): (8, 1024, 16, [512, 1024, 2048, 4096, 8192]),
}


class SDPAReference(nn.Module):
    """The reference layer: ``mha``'s four projections around one ``F.scaled_dot_product_attention`` call."""

    def __init__(self, mha: MultiHeadAttention):
        super().__init__()
        self.mha = mha

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        m = self.mha
        q = split_heads(m.q_proj(x), m.n_heads)  # (B, H, T, Dh)
        k = split_heads(m.k_proj(x), m.n_heads)  # (B, H, T, Dh)
        v = split_heads(m.v_proj(x), m.n_heads)  # (B, H, T, Dh)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, H, T, Dh)
        return m.out_proj(merge_heads(out))  # (B, T, D)


def _modules(D: int, H: int, device, dtype):
    torch.manual_seed(0)
    explicit = MultiHeadAttention(D, H, fast=False).to(device=device, dtype=dtype).eval()
    fast = MultiHeadAttention(D, H, fast=True).to(device=device, dtype=dtype).eval()
    fast.load_state_dict(explicit.state_dict())
    torch_mha = explicit.to_torch().eval()
    return explicit, fast, torch_mha, SDPAReference(explicit).eval()


def module_calls(D: int, H: int, T: int, causal: bool, device, dtype) -> dict:
    """name -> (function of x giving the layer's output, its parameters)."""
    explicit, fast, torch_mha, ref = _modules(D, H, device, dtype)
    mask = causal_mask(T, device=device) if causal else None  # (T, T), True = may attend
    ignore = ~mask if causal else None  # nn.MultiheadAttention's convention: True = may not attend
    return {
        "course explicit": (lambda x: explicit(x, mask=mask), list(explicit.parameters())),
        "course fast": (lambda x: fast(x, mask=mask), list(fast.parameters())),
        "nn.MultiheadAttention": (lambda x: torch_mha(x, x, x, attn_mask=ignore, is_causal=causal,
                                                      need_weights=False)[0], list(torch_mha.parameters())),
        BASELINE: (lambda x: ref(x, causal), list(ref.parameters())),
    }


def kernel_calls(T: int, causal: bool, device) -> dict:
    mask = causal_mask(T, device=device) if causal else None
    calls = {
        "course explicit": lambda q, k, v: scaled_dot_product_attention(q, k, v, mask=mask),
        "course fast": lambda q, k, v: fused_attention(q, k, v, mask=mask),
        BASELINE: lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
    }
    if causal:  # the same kernel given the boolean mask instead of is_causal: what a mask costs by itself
        calls[SDPA_MASK] = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return calls


def check(device) -> None:
    """Every variant gives the reference's outputs and gradients, with and without the causal mask."""
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    tol = {"atol": 1e-9, "rtol": 1e-7} if dtype == torch.float64 else {"atol": 2e-4, "rtol": 2e-3}
    B, D, H, T = 2, 32, 4, 9
    g = torch.Generator().manual_seed(0)
    for causal in (False, True):
        calls = module_calls(D, H, T, causal, device, dtype)
        x0 = torch.randn(B, T, D, generator=g, dtype=dtype).to(device)
        results = {}
        for name, (fn, _) in calls.items():
            x = x0.clone().requires_grad_(True)
            out = fn(x)
            out.sum().backward()
            results[name] = (out.detach(), x.grad)
        for name, (out, grad) in results.items():
            torch.testing.assert_close(out, results[BASELINE][0], **tol, msg=lambda m: f"{name} output: {m}")
            torch.testing.assert_close(grad, results[BASELINE][1], **tol, msg=lambda m: f"{name} grad: {m}")
        qkv0 = [torch.randn(B, H, T, D // H, generator=g, dtype=dtype).to(device) for _ in range(3)]
        outs = {}
        for name, fn in kernel_calls(T, causal, device).items():
            qkv = [t.clone().requires_grad_(True) for t in qkv0]
            out = fn(*qkv)
            out.sum().backward()
            outs[name] = [out.detach()] + [t.grad for t in qkv]
        for name, tensors in outs.items():
            for a, b in zip(tensors, outs[BASELINE]):
                torch.testing.assert_close(a, b, **tol, msg=lambda m: f"kernel {name}: {m}")


def _forward(fn, *inputs):
    def call():
        with torch.no_grad():
            return fn(*inputs)
    return call


def _backward(fn, inputs, params):
    def call():
        for t in list(inputs) + list(params):
            t.grad = None
        fn(*inputs).sum().backward()
    return call


def run(ctx: Context) -> Result:
    device = ctx.device
    B, D, H, lengths = SIZES[(device.type, ctx.size)]
    B, D, H = int(ctx.option("B", B)), int(ctx.option("D", D)), int(ctx.option("H", H))
    lengths = [int(t) for t in ctx.option("T", ",".join(map(str, lengths))).split(",")]
    dtype = getattr(torch, ctx.option("dtype", "float32" if device.type == "cpu" else "float16"))
    levels = ctx.option("levels", "module,kernel").split(",")
    passes = ctx.option("passes", "forward,backward").split(",")
    masks = ctx.option("masks", "none,causal").split(",")
    check(device)

    rows = []
    g = torch.Generator().manual_seed(0)
    for level in levels:
        for T in lengths:
            for mask_name in masks:
                causal = mask_name == "causal"
                for pass_name in passes:
                    variants = {}
                    if level == "module":
                        x = torch.randn(B, T, D, generator=g).to(device=device, dtype=dtype)
                        for name, (fn, params) in module_calls(D, H, T, causal, device, dtype).items():
                            if pass_name == "forward":
                                variants[name] = _forward(fn, x)
                            else:
                                xg = x.clone().requires_grad_(True)
                                variants[name] = _backward(fn, [xg], params)
                    else:
                        qkv = [torch.randn(B, H, T, D // H, generator=g).to(device=device, dtype=dtype)
                               for _ in range(3)]
                        for name, fn in kernel_calls(T, causal, device).items():
                            if pass_name == "forward":
                                variants[name] = _forward(fn, *qkv)
                            else:
                                variants[name] = _backward(fn, [t.clone().requires_grad_(True) for t in qkv], [])
                    timings = compare(variants, ctx, baseline=BASELINE)
                    for name, t in timings.items():
                        rows.append({"level": level, "pass": PASS_NAMES[pass_name], "mask": mask_name, "T": T,
                                     "variant": name, "median_ms": 1000 * t.median, "iqr_ms": 1000 * t.iqr,
                                     "ratio_to_sdpa": t.ratio, "calls_per_measurement": t.number,
                                     "rounds": len(t.times), "B": B, "D": D, "H": H,
                                     "dtype": str(dtype).replace("torch.", "")})
                    print(f"   {level} {PASS_NAMES[pass_name]:16s} {mask_name:6s} T={T:5d}: " + ", ".join(
                        f"{n} {1000 * t.median:.3g} ms ({t.ratio:.2f}x)" for n, t in timings.items()), flush=True)
    return Result(rows=rows, summary=_summary(rows, lengths), plot=lambda fig: _plot(fig, rows),
                  tables={"ratios": _ratio_table(rows)}, notes=_notes(device))


def _ratio(rows, **key):
    for r in rows:
        if all(r[k] == v for k, v in key.items()):
            return r["ratio_to_sdpa"]
    return None


def _ratio_table(rows) -> list[dict]:
    """One row per (level, pass, mask, T): each variant's time over PyTorch SDPA's, and SDPA's own time."""
    table = []
    keys = list(dict.fromkeys((r["level"], r["pass"], r["mask"], r["T"]) for r in rows))
    for level, pass_name, mask, T in keys:
        sel = {r["variant"]: r for r in rows
               if (r["level"], r["pass"], r["mask"], r["T"]) == (level, pass_name, mask, T)}
        row = {"level": level, "pass": pass_name, "mask": mask, "T": T,
               "PyTorch SDPA (ms)": float(f"{sel[BASELINE]['median_ms']:.3g}")}
        for name in ("course fast", "course explicit", "nn.MultiheadAttention", SDPA_MASK):
            if name in sel:
                row[f"{name} / SDPA"] = f"{sel[name]['ratio_to_sdpa']:.2f}"
        table.append(row)
    return table


def _summary(rows, lengths) -> list[str]:
    lines = []
    for level in dict.fromkeys(r["level"] for r in rows):
        for pass_name in dict.fromkeys(r["pass"] for r in rows):
            for mask in dict.fromkeys(r["mask"] for r in rows):
                what = f"{level}, {pass_name}, mask {mask}"
                fast = [_ratio(rows, level=level, **{"pass": pass_name}, mask=mask, T=T, variant="course fast")
                        for T in lengths]
                explicit = [_ratio(rows, level=level, **{"pass": pass_name}, mask=mask, T=T,
                                   variant="course explicit") for T in lengths]
                if None in fast:
                    continue
                worst = max(fast)
                verdict = "within" if worst <= GOAL else "NOT within"
                line = (f"{what}: course fast / PyTorch SDPA = "
                        + ", ".join(f"{r:.2f}x (T={T})" for r, T in zip(fast, lengths))
                        + f" -> {verdict} {GOAL}x; course explicit / SDPA = "
                        + ", ".join(f"{r:.2f}x" for r in explicit))
                masked = [_ratio(rows, level=level, **{"pass": pass_name}, mask=mask, T=T, variant=SDPA_MASK)
                          for T in lengths]
                if None not in masked:
                    line += "; PyTorch SDPA given the boolean mask / SDPA is_causal = " + ", ".join(
                        f"{r:.2f}x" for r in masked)
                if level == "module":
                    mha = [_ratio(rows, level=level, **{"pass": pass_name}, mask=mask, T=T,
                                  variant="nn.MultiheadAttention") for T in lengths]
                    line += "; nn.MultiheadAttention / SDPA = " + ", ".join(f"{r:.2f}x" for r in mha)
                lines.append(line)
    return lines


def _notes(device) -> list[str]:
    notes = ["Ratios above 1 are slower than PyTorch's fused kernel; each is the median over rounds of the "
             "per-round ratio, measured in the same run on the same machine."]
    if device.type == "cpu":
        notes.append("On the CPU the fused kernel saves memory traffic more than arithmetic; on a GPU the gap "
                     "between the explicit path and the fused kernel is much larger (see cuda.* when present).")
    return notes


def _plot(fig, rows) -> None:
    from matplotlib.ticker import FormatStrFormatter

    module = [r for r in rows if r["level"] == "module"] or rows
    passes = list(dict.fromkeys(r["pass"] for r in module))
    masks = list(dict.fromkeys(r["mask"] for r in module))
    styles = {"course explicit": ("C3", "o"), "course fast": ("C0", "s"), "nn.MultiheadAttention": ("C2", "^"),
              BASELINE: ("k", "x")}
    axes = fig.subplots(len(passes), len(masks), squeeze=False, sharex=True)
    for i, pass_name in enumerate(passes):
        for j, mask in enumerate(masks):
            ax = axes[i][j]
            for name, (color, marker) in styles.items():
                pts = [(r["T"], r["median_ms"]) for r in module
                       if r["pass"] == pass_name and r["mask"] == mask and r["variant"] == name]
                if pts:
                    ax.plot(*zip(*pts), marker=marker, color=color, label=name)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{pass_name}, mask: {mask}", fontsize=10)
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
            ax.xaxis.set_major_formatter(FormatStrFormatter("%d"))
            ax.tick_params(axis="y", which="minor", labelsize=7)
            ax.set_xlabel("sequence length T")
            ax.set_ylabel("median time per call (ms)")
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    level = module[0]
    fig.suptitle(f"One self-attention layer (B={level['B']}, D={level['D']}, H={level['H']}, {level['dtype']})",
                 fontsize=11)
