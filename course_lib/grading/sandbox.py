"""Running untrusted notebook code: a bubblewrap sandbox when available, with limits either way.

What the sandbox gives (bubblewrap, Debian package ``bubblewrap``):
  * a fresh mount namespace with only the operating system, the Python installation, the course
    environment and ``course_lib`` visible, all read-only; the gradebook, the solutions, the source notebooks,
    the grading specs' folder and every other student's files are simply absent;
  * a private, size-capped ``/tmp`` and working folder, gone when the run ends;
  * no network (a new network namespace), a new PID namespace (every process dies with the run), no
    capabilities, an unprivileged user id.
Without bubblewrap the same runner is started as a plain child process: limits, timeouts and the trusted
scoring still hold, but the student's code can read and write any file the grader can. ``--require-sandbox``
refuses to grade in that case.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Limits", "RunOutcome", "sandbox_available", "run_untrusted"]

_SANDBOX_CHECK: dict = {}


@dataclass(frozen=True)
class Limits:
    cell_seconds: int = 60  # a cell (or a probe) running longer is stopped
    notebook_seconds: int = 300  # the whole run is killed after this
    memory_bytes: int = 6 * 2**30  # address-space cap of the student's process (torch alone maps ~2-3 GiB)
    output_chars: int = 20_000  # output kept per cell
    stream_bytes: int = 2 * 2**20  # raw stdout/stderr kept from the process
    results_bytes: int = 64 * 2**20  # the results pipe
    tmp_bytes: int = 256 * 2**20  # size of the private /tmp and working folder
    file_bytes: int = 64 * 2**20  # largest file the student's code may write


@dataclass
class RunOutcome:
    events: list = field(default_factory=list)
    returncode: int | None = None
    killed: str = ""  # why the grader killed the run, if it did
    stream: str = ""  # raw stdout/stderr of the process (capped)
    sandboxed: bool = False
    seconds: float = 0.0
    results_truncated: bool = False


def sandbox_available() -> tuple[bool, str]:
    """Whether bubblewrap can run here (cached); returns (available, reason)."""
    if "ok" not in _SANDBOX_CHECK:
        bwrap = shutil.which("bwrap")
        if not bwrap:
            _SANDBOX_CHECK.update(ok=False, why="bubblewrap (bwrap) is not installed")
        else:
            proc = subprocess.run([bwrap, *_base_args(), "--", sys.executable, "-c", "print('ok')"],
                                  capture_output=True, text=True, timeout=120)
            ok = proc.returncode == 0 and proc.stdout.strip() == "ok"
            _SANDBOX_CHECK.update(ok=ok, why="" if ok else f"bwrap failed: {proc.stderr.strip()[:300]}")
    return _SANDBOX_CHECK["ok"], _SANDBOX_CHECK["why"]


def _python_paths() -> list[Path]:
    """Folders the student's Python needs, read-only: the interpreter, the environment, course_lib."""
    import course_lib

    paths = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), Path(course_lib.__file__).resolve().parent}
    return sorted(paths)


def _base_args(tmp_bytes: int = 256 * 2**20) -> list[str]:
    # private, size-capped /tmp and working folder first: the read-only binds below may sit inside them
    args = ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--uid", "65534", "--gid", "65534",
            "--size", str(tmp_bytes), "--tmpfs", "/tmp",
            "--size", str(tmp_bytes), "--tmpfs", "/sandbox",
            "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for name in ("bin", "lib", "lib64", "sbin"):
        p = Path("/") / name
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), str(p)]
        elif p.exists():
            args += ["--ro-bind", str(p), str(p)]
    for p in _python_paths():
        args += ["--ro-bind", str(p), str(p)]
    args += ["--proc", "/proc", "--dev", "/dev", "--chdir", "/sandbox", "--clearenv"]
    for key, value in _child_env().items():
        args += ["--setenv", key, value]
    return args


def _child_env() -> dict:
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": "/tmp",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": "/tmp/mpl",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": "1",
        "LANG": "C.UTF-8",
    }


def _reader(stream, cap: int, sink: list, flags: dict, key: str):
    """Read a pipe to the end, keeping at most ``cap`` bytes (the rest is drained and dropped)."""
    kept = 0
    while True:
        chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
        if not chunk:
            break
        if kept < cap:
            sink.append(chunk[: cap - kept])
            kept += min(len(chunk), cap - kept)
        if kept >= cap and len(chunk) > 0:
            flags[key] = True


def run_untrusted(cells: list[dict], spec_path: Path | None, limits: Limits, sandbox: bool) -> RunOutcome:
    """Run ``cells`` (and the spec's probes) in a fresh process, sandboxed when ``sandbox`` is True."""
    outcome = RunOutcome(sandboxed=sandbox)
    with tempfile.TemporaryDirectory(prefix="course-job-") as staging:
        staging = Path(staging)
        r_fd, w_fd = os.pipe()
        job = {"cells": cells, "results_fd": w_fd,
               "limits": {"cell_seconds": limits.cell_seconds, "memory_bytes": limits.memory_bytes,
                          "output_chars": limits.output_chars, "file_bytes": limits.file_bytes}}
        if spec_path is not None:
            shutil.copy(spec_path, staging / "spec.py")
        if sandbox:
            job["spec"] = "/job/spec.py" if spec_path is not None else None
            (staging / "job.json").write_text(json.dumps(job), encoding="utf-8")
            cmd = [shutil.which("bwrap"), *_base_args(limits.tmp_bytes), "--ro-bind", str(staging), "/job",
                   "--", sys.executable, "-I", "-m", "course_lib.grading.runner", "/job/job.json"]
            env, cwd = None, None
        else:
            work = staging / "work"
            work.mkdir()
            job["spec"] = str(staging / "spec.py") if spec_path is not None else None
            (staging / "job.json").write_text(json.dumps(job), encoding="utf-8")
            cmd = [sys.executable, "-I", "-m", "course_lib.grading.runner", str(staging / "job.json")]
            env, cwd = {**_child_env(), "HOME": str(work), "MPLCONFIGDIR": str(work / "mpl")}, str(work)
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                pass_fds=(w_fd,), env=env, cwd=cwd, start_new_session=True)
        os.close(w_fd)
        results_raw, stream_raw, flags = [], [], {}
        with os.fdopen(r_fd, "rb") as results_pipe:
            threads = [threading.Thread(target=_reader, args=(results_pipe, limits.results_bytes, results_raw, flags,
                                                              "results"), daemon=True),
                       threading.Thread(target=_reader, args=(proc.stdout, limits.stream_bytes, stream_raw, flags,
                                                              "stream"), daemon=True)]
            for t in threads:
                t.start()
            try:
                proc.wait(timeout=limits.notebook_seconds)
            except subprocess.TimeoutExpired:
                outcome.killed = f"the notebook ran longer than {limits.notebook_seconds} s in total and was stopped"
            _kill_group(proc)  # whatever the notebook left running in its process group dies with it
            # a process that escaped the group may still hold the pipes open: do not wait for it forever
            for t in threads:
                t.join(timeout=10)
            if any(t.is_alive() for t in threads):
                _kill_group(proc)
        outcome.returncode = proc.returncode
        outcome.seconds = time.monotonic() - start
        outcome.results_truncated = flags.get("results", False)
        outcome.stream = b"".join(stream_raw).decode("utf-8", "replace")
        if flags.get("stream"):
            outcome.stream += "\n[... process output truncated]"
        for line in b"".join(results_raw).decode("utf-8", "replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and isinstance(event.get("event"), str):
                outcome.events.append(event)
    return outcome


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
