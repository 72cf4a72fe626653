"""Runs one notebook's code cells and the grading probes, and reports on a pipe. Runs INSIDE the sandbox.

Usage: ``python -I -m course_lib.grading.runner JOB.json``. The job file gives the cells, the spec file, the
limits and the file descriptor of the results pipe. Everything reported here comes from an untrusted process:
the trusted grader only uses it to *compare* probe outputs with references it computed itself, and to show
messages in the feedback.

Protocol: one JSON object per line on the results descriptor:
``{"event": "cell", "index": i, "status": "ok"|"error"|"timeout", "output": "...", "error": "..."}``,
``{"event": "probe", "grade_id": g, "ok": bool, "outputs": {...}, "error": "..."}``, ``{"event": "done"}``.
Tensors are encoded as ``{"__tensor__": {"dtype": "float64", "shape": [...], "data": base64}}``.
"""
from __future__ import annotations

import base64
import io
import json
import os
import resource
import signal
import sys
import traceback

# dtypes that may cross the pipe; anything else is converted to float64
SAFE_DTYPES = ("float64", "float32", "int64", "int32", "bool")


class CellTimeout(BaseException):
    """Raised by the alarm when a cell or a probe runs too long (a BaseException, so `except Exception` misses it)."""


class CappedWriter(io.TextIOBase):
    """A text stream that keeps at most ``cap`` characters and counts the rest."""

    def __init__(self, cap: int):
        self.cap, self.parts, self.size, self.dropped = cap, [], 0, 0

    def write(self, s):
        s = str(s)
        room = self.cap - self.size
        if room > 0:
            self.parts.append(s[:room])
            self.size += min(len(s), room)
        self.dropped += max(0, len(s) - max(room, 0))
        return len(s)

    def getvalue(self) -> str:
        text = "".join(self.parts)
        if self.dropped:
            text += f"\n[... output truncated: {self.dropped} more characters not kept]"
        return text


def encode(x):
    """Probe outputs -> JSON (tensors as base64 of their raw bytes)."""
    import torch

    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if str(t.dtype).replace("torch.", "") not in SAFE_DTYPES:
            t = t.to(torch.float64)
        t = t.contiguous()
        data = t.numpy().tobytes()
        return {"__tensor__": {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape),
                               "data": base64.b64encode(data).decode("ascii")}}
    if isinstance(x, dict):
        return {str(k): encode(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [encode(v) for v in x]
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    raise TypeError(f"probe outputs must be tensors or JSON values, got {type(x).__name__}")


def _alarm(signum, frame):
    raise CellTimeout()


def _limit(res, value):
    if value:
        try:
            resource.setrlimit(res, (value, value))
        except (ValueError, OSError):
            pass


def main(job_path: str) -> None:
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    out = os.fdopen(job["results_fd"], "w", buffering=1, encoding="utf-8", closefd=False)

    def emit(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    limits = job.get("limits", {})
    _limit(resource.RLIMIT_AS, limits.get("memory_bytes"))
    _limit(resource.RLIMIT_FSIZE, limits.get("file_bytes"))
    _limit(resource.RLIMIT_CORE, 0)
    cell_timeout = int(limits.get("cell_seconds", 60))
    output_cap = int(limits.get("output_chars", 20000))
    signal.signal(signal.SIGALRM, _alarm)

    # Warm up before any student code: imports are slow on a busy machine and must not eat the cells' time.
    import torch  # noqa: F401

    spec = None
    if job.get("spec"):
        from course_lib.grading.probes import load_spec

        spec = load_spec(job["spec"])
    try:
        import course_lib.checking  # noqa: F401
    except ImportError:
        pass

    ns = {"__name__": "__main__"}
    real_stdout, real_stderr = sys.stdout, sys.stderr
    for cell in job["cells"]:
        buf = CappedWriter(output_cap)
        status, error = "ok", ""
        sys.stdout = sys.stderr = buf
        try:
            signal.signal(signal.SIGALRM, _alarm)  # again before every cell: a cell may have replaced it
            signal.alarm(cell_timeout)
            exec(compile(cell["source"], f"<cell {cell['index']}>", "exec"), ns)
        except CellTimeout:
            status, error = "timeout", f"the cell ran longer than {cell_timeout} s and was stopped"
        except MemoryError:
            status, error = "error", "MemoryError: the cell used more memory than the grader allows"
        except BaseException as e:  # noqa: BLE001 - anything a student's cell raises, SystemExit included
            status = "error"
            error = "".join(traceback.format_exception(type(e), e, e.__traceback__)[-6:])[-4000:]
        finally:
            signal.alarm(0)
            sys.stdout, sys.stderr = real_stdout, real_stderr
        emit({"event": "cell", "index": cell["index"], "status": status, "output": buf.getvalue(), "error": error})

    if spec is not None:
        for gid, probe in spec.PROBES.items():
            result = {"event": "probe", "grade_id": gid, "ok": False, "outputs": {}, "error": ""}
            buf = CappedWriter(2000)
            sys.stdout = sys.stderr = buf
            try:
                signal.signal(signal.SIGALRM, _alarm)
                signal.alarm(cell_timeout)
                with torch.no_grad():
                    outputs = probe(ns)
                signal.alarm(0)
                if not isinstance(outputs, dict):
                    raise TypeError(f"probe returned {type(outputs).__name__}, expected a dict")
                result.update(ok=True, outputs=encode(outputs))
            except CellTimeout:
                result["error"] = f"stopped after {cell_timeout} s: the answer does not finish (infinite loop?)"
            except MemoryError:
                result["error"] = "MemoryError: the answer used more memory than the grader allows"
            except BaseException as e:  # noqa: BLE001
                result["error"] = "".join(traceback.format_exception_only(type(e), e)).strip()[-2000:]
            finally:
                signal.alarm(0)
                sys.stdout, sys.stderr = real_stdout, real_stderr
            emit(result)
    emit({"event": "done"})


if __name__ == "__main__":
    main(sys.argv[1])
