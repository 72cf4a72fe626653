"""Shared fixtures: the repository root, the assignments, a temporary copy of the course for nbgrader."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = sorted(p.name for p in (ROOT / "solutions").glob("ex*") if p.is_dir())

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def nbgrader_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    return env


def run_nbgrader(course: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run `python -m nbgrader ARGS` in ``course``; fail the test with nbgrader's output if it fails."""
    proc = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=nbgrader_env(),
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"nbgrader {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def copy_course(dest: Path, assignments=ASSIGNMENTS) -> Path:
    """A minimal copy of the course (config, sources, releases) where nbgrader may write freely."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "nbgrader_config.py", dest / "nbgrader_config.py")
    for step in ("solutions", "exercises"):
        for a in assignments:
            if (ROOT / step / a).exists():
                shutil.copytree(ROOT / step / a, dest / step / a)
    return dest


def load_bugs(assignment: str) -> list[dict]:
    path = ROOT / "tests" / "exercise_bugs" / f"{assignment}.json"
    if not path.exists():
        return []
    return json.loads(path.read_text(encoding="utf-8"))["bugs"]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


# --- the device the library tests run on: `pytest --device cuda tests/lib` (default cpu) ----------------
def pytest_addoption(parser):
    parser.addoption("--device", default="cpu",
                     help="device for the library tests that take the `device` fixture: cpu (default), cuda, "
                          "cuda:1, ...; CUDA tests are skipped when no GPU is available")


@pytest.fixture(scope="session")
def device(request):
    """The ``torch.device`` given by ``--device``; skips the test when it is CUDA and none is available."""
    import torch

    name = request.config.getoption("--device")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip(f"--device {name}: CUDA is not available")
    return dev
