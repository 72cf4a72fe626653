"""Shared fixtures: the repository root and the device of the library tests (grading helpers: tests/grader/_grading.py)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


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
