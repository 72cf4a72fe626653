"""Grading specs and probes: the trusted side of grading.

A spec is a module ``grading/<assignment>.py`` (contract in CONTRIBUTING.md) with ``PROBES`` (grade_id ->
probe function), ``ANSWERS`` and ``FORBIDDEN``. A probe calls the answer's functions on fixed inputs and returns
tensors and JSON values. The grader runs each probe on the student's namespace (inside the sandbox) and on the
solution's namespace (outside), and awards a cell's points only when all outputs match.
"""
from __future__ import annotations

import importlib.util
import math
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["load_spec", "run_probes", "compare", "ProbeResult", "DEFAULT_TOLERANCE", "exec_cells"]

DEFAULT_TOLERANCE = {"atol": 1e-5, "rtol": 1e-4}


def load_spec(path: str | Path) -> ModuleType:
    """Import a spec file; check it has PROBES (dict of callables), ANSWERS and FORBIDDEN."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"grading spec not found: {path}")
    mod_name = f"_course_spec_{path.stem}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    probes = getattr(module, "PROBES", None)
    if not isinstance(probes, dict) or not probes or not all(callable(p) for p in probes.values()):
        raise ValueError(f"{path}: PROBES must be a non-empty dict of grade_id -> function")
    for name in ("ANSWERS", "FORBIDDEN"):
        if not isinstance(getattr(module, name, None), (list, tuple)):
            raise ValueError(f"{path}: {name} must be a list of names")
    return module


def exec_cells(sources: list[str], ns: dict | None = None) -> tuple[dict, list[tuple[int, str]]]:
    """Execute code cells in one namespace, continuing after errors; return (namespace, [(index, error)])."""
    ns = {"__name__": "__main__"} if ns is None else ns
    errors = []
    for i, src in enumerate(sources):
        try:
            exec(compile(src, f"<cell {i}>", "exec"), ns)
        except BaseException as e:  # noqa: BLE001 - a student's cell may raise anything, SystemExit included
            if isinstance(e, KeyboardInterrupt):
                raise
            errors.append((i, "".join(traceback.format_exception_only(type(e), e)).strip()))
    return ns, errors


@dataclass
class ProbeResult:
    ok: bool  # the probe ran without raising
    outputs: dict = field(default_factory=dict)
    error: str = ""


def run_probes(spec: ModuleType, ns: dict) -> dict[str, ProbeResult]:
    """Run every probe of ``spec`` on namespace ``ns``; an exception becomes a failed ProbeResult."""
    results = {}
    for gid, probe in spec.PROBES.items():
        try:
            with torch.no_grad():
                out = probe(ns)
            if not isinstance(out, dict):
                raise TypeError(f"probe {gid} returned {type(out).__name__}, expected a dict")
            results[gid] = ProbeResult(True, out)
        except BaseException as e:  # noqa: BLE001
            if isinstance(e, KeyboardInterrupt):
                raise
            msg = "".join(traceback.format_exception_only(type(e), e)).strip()
            results[gid] = ProbeResult(False, {}, msg[-2000:])
    return results


def _summ(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor{tuple(x.shape)} {x.dtype}"
    s = repr(x)
    return s if len(s) < 120 else s[:117] + "..."


def compare(expected, got, tolerance: dict | None = None, path: str = "") -> tuple[bool, str]:
    """Compare a reference output with a student's output; return (equal, message naming the first difference)."""
    tol = {**DEFAULT_TOLERANCE, **(tolerance or {})}
    where = path or "output"
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return False, f"{where}: expected a tensor, got {_summ(got)}"
        if tuple(got.shape) != tuple(expected.shape):
            return False, f"{where}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
        if expected.dtype == torch.bool or not expected.is_floating_point():
            if got.dtype == torch.bool and expected.dtype != torch.bool or \
               expected.dtype == torch.bool and got.dtype != torch.bool:
                return False, f"{where}: expected dtype {expected.dtype}, got {got.dtype}"
            if not torch.equal(got.to(expected.dtype), expected):
                return False, f"{where}: values differ"
            return True, ""
        if not got.is_floating_point():
            got = got.to(expected.dtype)
        g, e = got.detach().double(), expected.detach().double()
        if torch.isnan(g).any() and not torch.isnan(e).any():
            return False, f"{where}: contains NaN"
        if not torch.allclose(g, e, atol=tol["atol"], rtol=tol["rtol"], equal_nan=True):
            worst = (g - e).abs().nan_to_num(float("inf")).max().item()
            return False, f"{where}: values differ (largest difference {worst:.3g})"
        return True, ""
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return False, f"{where}: expected a dict, got {_summ(got)}"
        missing = sorted(set(expected) - set(got), key=str)
        if missing:
            return False, f"{where}: missing {missing}"
        for key in expected:
            ok, msg = compare(expected[key], got[key], tol, f"{path}.{key}" if path else str(key))
            if not ok:
                return ok, msg
        return True, ""
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(expected):
            return False, f"{where}: expected {len(expected)} items, got {_summ(got)}"
        for i, (e, g) in enumerate(zip(expected, got)):
            ok, msg = compare(e, g, tol, f"{where}[{i}]")
            if not ok:
                return ok, msg
        return True, ""
    if isinstance(expected, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        if math.isclose(expected, got, rel_tol=tol["rtol"], abs_tol=tol["atol"]):
            return True, ""
        return False, f"{where}: expected {expected!r}, got {got!r}"
    if type(expected) is not type(got) or expected != got:
        return False, f"{where}: expected {_summ(expected)}, got {_summ(got)}"
    return True, ""


def to_jsonable(x):
    """Check that a probe output is made of tensors and JSON values only (raises TypeError otherwise)."""
    if isinstance(x, torch.Tensor) or x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, dict):
        if not all(isinstance(k, str) for k in x):
            raise TypeError("probe outputs: dict keys must be strings")
        return {k: to_jsonable(v) for k, v in x.items()}
    raise TypeError(f"probe outputs must be tensors or JSON values, got {type(x).__name__}")

