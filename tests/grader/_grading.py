"""Helpers shared by the grading tests (imported as ``from _grading import ...``; pytest puts tests/grader on the path)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ASSIGNMENTS = sorted(p.name for p in (ROOT / "solutions").glob("ex*") if p.is_dir())


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
    path = ROOT / "tests" / "grader" / "exercise_bugs" / f"{assignment}.json"
    if not path.exists():
        return []
    return json.loads(path.read_text(encoding="utf-8"))["bugs"]
