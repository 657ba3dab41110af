"""The devices a bundle is made for, and the one rule for INT8 cpu's weight range on each.

ONNX Runtime's uint8 x int8 CPU kernels on x86 without VNNI (AVX2's ``VPMADDUBSW``) sum pairs of
products into a saturating int16, which alone cost the real EfficientNet-Lite1 0.11 of cosine; there
the weights are quantized to 7 bits (ONNX Runtime's own advice). VNNI/AMX x86 CPUs and ARM CPUs sum
into int32 and get full 8-bit weights. ``bbexport quantize`` decides for this machine, ``bbexport
bundle`` for its ``--target``: both through :func:`int8_weights_saturate`.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

TARGETS = ("x86-avx2", "x86-vnni", "arm", "jetson")
# CPU flags (Linux /proc/cpuinfo names) of x86 integer dot-product instructions that sum u8 x s8
# products into int32 without the int16 intermediate.
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
JETSON_RELEASE = Path("/etc/nv_tegra_release")  # L4T's release file: present on every Jetson


def int8_weights_saturate(target: str) -> bool:
    """Whether the INT8 cpu flavour needs 7-bit weights on ``target`` (x86 without VNNI)."""
    return target == "x86-avx2"


@functools.cache  # one read of /proc/cpuinfo per process, however many QuantizeOptions are made
def host_target(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """This machine as a target. An x86 machine whose flags cannot be read is taken to lack VNNI:
    7-bit weights are always safe."""
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "jetson" if JETSON_RELEASE.exists() else "arm"
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return "arm"
    try:
        flags = cpuinfo.read_text().split()
    except OSError:
        return "x86-avx2"
    return "x86-vnni" if any(flag in flags for flag in VNNI_FLAGS) else "x86-avx2"
