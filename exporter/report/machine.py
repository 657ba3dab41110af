"""The machine a report ran on: the header every timing needs."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

from ..pipeline import library_versions


def machine_info() -> dict:
    """CPU model, cores, GPU and library versions: the header every timing needs."""
    import torch

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        # Timings taken while other processes compete for the cores are not comparable: say so.
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {**library_versions(), **_optional_versions("torchvision", "timm", "matplotlib",
                                                                 "nvidia-modelopt", "tensorrt")},
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _optional_versions(*packages: str) -> dict[str, str]:
    versions = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions
