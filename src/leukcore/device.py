"""Compute-device choice: ``auto`` picks CUDA when present, else CPU.

Nothing in leukcore hard-codes a GPU flag; every entry point takes
``device="auto" | "cpu" | "cuda" | "cuda:N"`` and resolves it here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["resolve_device", "available_devices", "DeviceInfo", "device_settings"]


@dataclass(frozen=True)
class DeviceInfo:
    """A device a model can run on: ``name`` (``cpu``, ``cuda:0``), a human-readable ``label``, ``available``."""

    name: str  # "cpu", "cuda:0"
    label: str  # human readable, e.g. "CUDA 0: NVIDIA H100"
    available: bool


def available_devices() -> list[DeviceInfo]:
    """Devices this machine offers (CPU always; CUDA devices when present)."""
    import torch

    out = [DeviceInfo("cpu", f"CPU ({torch.get_num_threads()} threads)", True)]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            out.append(DeviceInfo(f"cuda:{i}", f"CUDA {i}: {torch.cuda.get_device_name(i)}", True))
    return out


def resolve_device(device: str | None = "auto"):
    """Turn ``"auto"``/``"cpu"``/``"cuda[:N]"``/``torch.device`` into a ``torch.device``.

    Raises
    ------
    ValueError
        If CUDA is requested but not available, or the name is unknown.
    """
    import torch

    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} requested but CUDA is not available on this machine (use --device cpu or auto)"
            )
        return torch.device(name)
    raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda[:N]'")


def device_settings(device) -> dict:
    """Per-device performance settings: AMP, channels_last, pinned memory."""
    is_cuda = getattr(device, "type", str(device)).startswith("cuda")
    return {"amp": is_cuda, "channels_last": True, "pin_memory": is_cuda, "amp_dtype": "float16" if is_cuda else None}
