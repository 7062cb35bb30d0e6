"""Device choice: ``auto`` picks cuda, then mps, then cpu. Everything runs on CPU."""

from __future__ import annotations

import torch

from conserv_core.systems.base import ParameterError

DEVICES = ("auto", "cpu", "cuda", "mps")


def available_devices() -> list[str]:
    """Device names usable on this machine (what a UI should offer)."""
    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out


def resolve_device(name: str = "auto") -> torch.device:
    """A ``torch.device`` for ``name``; refuses a device this machine lacks, clearly."""
    if name not in DEVICES:
        raise ParameterError(f"device must be one of {', '.join(DEVICES)}; got {name!r}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name not in available_devices():
        raise ParameterError(f"device {name!r} is not available here; available: {', '.join(available_devices())}")
    return torch.device(name)
