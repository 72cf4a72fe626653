"""Helpers shared by the library tests (imported as ``from _helpers import ...``; pytest puts tests/lib on the path)."""
from __future__ import annotations

import torch


def rand(*shape, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Standard-normal numbers of ``shape`` from their own seeded generator (float64 unless told)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@torch.no_grad()
def randomize(module: torch.nn.Module) -> torch.nn.Module:
    """Move every parameter off PyTorch's initial values (biases 0, norms (1, 0)), so that copying them is tested."""
    for p in module.parameters():
        p.add_(0.1 * torch.randn_like(p))
    return module
