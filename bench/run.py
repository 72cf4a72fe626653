"""Run the course's benchmarks and write their tables and plots under bench/results/.

    python bench/run.py                      # every default benchmark (`make bench`), on the CPU, and on CUDA too
                                             # when a GPU is there (--device auto)
    python bench/run.py attention -o T=128,512 --rounds 5
    python bench/run.py course               # opt-in benchmarks run only when named (`make bench-course`)
    python bench/run.py --list

Each benchmark is one file in bench/suite/ (bench/README.md says how to add one). For each, on each device,
this writes bench/results/<name>/<device>.csv (all measurements), <device>_<table>.csv (small tables, such as
ratios), <device>.md (the machine and the ratios, included by the book's Performance appendix),
<device>.json (the same, for programs) and <device>.png (the plot), and prints the ratios and the machine.
CPU results never depend on a GPU: they are measured and written separately (cpu.*; the GPU's are cuda.*).
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository: course_lib, and bench as a package

import torch  # noqa: E402

from bench import suite  # noqa: E402
from bench.harness import RESULTS, Context, command_line, machine_info, machine_line, write_result  # noqa: E402


def discover() -> dict:
    """name -> module, for every file in bench/suite/ that defines NAME, TITLE and run()."""
    found = {}
    for info in sorted(pkgutil.iter_modules(suite.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bench.suite.{info.name}")
        if all(hasattr(module, a) for a in ("NAME", "TITLE", "run")):
            found[module.NAME] = module
    return found


def _options(values: list[str]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"-o expects key=value, received {item!r}")
        out[key.strip()] = value.strip()
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    benchmarks = discover()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", help=f"benchmarks to run (default: the default ones); "
                                            f"available: {', '.join(benchmarks)}")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                   help="cpu (default), cuda, or auto: the CPU, then CUDA too when available")
    p.add_argument("--threads", type=int, default=1, help="torch threads, pinned (default 1)")
    p.add_argument("--size", default="small", choices=["small", "full"],
                   help="small (default, minutes on a laptop CPU) or full (the sizes a GPU or a patient CPU can take)")
    p.add_argument("--rounds", type=int, default=7, help="measured rounds per variant (default 7)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per variant first (default 2)")
    p.add_argument("--min-time", type=float, default=0.05,
                   help="seconds one measurement lasts at least (default 0.05)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option for the benchmarks (each benchmark's docstring lists its own)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder (default bench/results)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = p.parse_args(argv)

    if args.list:
        for name, m in benchmarks.items():
            default = "default" if getattr(m, "DEFAULT", True) else "opt-in"
            print(f"{name:12s} {default:8s} {','.join(getattr(m, 'DEVICES', ('cpu', 'cuda'))):9s} {m.TITLE}")
        return 0
    unknown = [n for n in args.names if n not in benchmarks]
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; available: {list(benchmarks)}")
    names = args.names or [n for n, m in benchmarks.items() if getattr(m, "DEFAULT", True)]
    devices = ["cpu"]
    if args.device == "cuda":
        if not torch.cuda.is_available():
            p.error("--device cuda: torch sees no CUDA device")
        devices = ["cuda"]
    elif args.device == "auto" and torch.cuda.is_available():
        devices = ["cpu", "cuda"]

    torch.set_num_threads(args.threads)
    command = command_line(argv)
    failures = []
    for device in devices:
        ctx = Context(device=torch.device(device), threads=args.threads, size=args.size, rounds=args.rounds,
                      warmup=args.warmup, min_time=args.min_time, options=_options(args.option),
                      results=args.out)
        for name in names:
            module = benchmarks[name]
            if device not in getattr(module, "DEVICES", ("cpu", "cuda")):
                continue
            info = machine_info(ctx)
            print(f"== {name} on {device}: {module.TITLE}", flush=True)
            print(f"   machine: {machine_line(info)}", flush=True)
            start = time.perf_counter()
            try:
                result = module.run(ctx)
            except Exception as exc:  # report, go on with the other benchmarks, fail at the end
                failures.append(f"{name} on {device}: {type(exc).__name__}: {exc}")
                print(f"   FAILED: {type(exc).__name__}: {exc}", flush=True)
                continue
            info = machine_info(ctx) | {"date": info["date"], "seconds": round(time.perf_counter() - start, 1)}
            for line in result.summary:
                print(f"   {line}")
            for note in result.notes:
                print(f"   note: {note}")
            for path in write_result(name, module.TITLE, result, info, command, args.out):
                print(f"   wrote {path.relative_to(args.out.parent.parent) if path.is_relative_to(args.out.parent.parent) else path}")
            print(f"   ({info['seconds']} s)", flush=True)
    for name in names:  # the book includes cuda.md: until a GPU run writes it, say so there
        module = benchmarks[name]
        placeholder = args.out / name / "cuda.md"
        if "cuda" in getattr(module, "DEVICES", ("cpu", "cuda")) and not placeholder.exists():
            placeholder.parent.mkdir(parents=True, exist_ok=True)
            placeholder.write_text("Not measured on a GPU yet: `make bench` on a machine with CUDA writes the "
                                   "GPU's results here (absolute times, `cuda.csv`, `cuda.png`).\n", encoding="utf-8")
    if failures:
        print("\nFailed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
