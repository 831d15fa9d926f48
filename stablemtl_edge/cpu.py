"""The host CPU's int8 dot-product support, read from its feature flags (a stage-neutral fact).

Calibration states it beside its timings and the runtime's GEMM probe decides from it whether to probe int8:
on an x86 CPU without VNNI (or an ARM one without the dot-product extension) onnxruntime's int8 kernels are
slower than fp32, so CPU timings there say nothing about int8 on the target GPU.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["INT8_CPU_FLAGS", "CpuInt8Support", "cpu_int8_support"]


#: CPU flags that give fast int8 dot products (x86 VNNI, ARM dot product / int8 matrix multiply).
INT8_CPU_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


@dataclass(frozen=True)
class CpuInt8Support:
    """The host CPU's int8 dot-product extensions, read from its feature flags.

    Attributes:
        machine: ``platform.machine()``.
        flags_found: the :data:`INT8_CPU_FLAGS` present.
        vnni: whether any is present; None when the flags cannot be read (not Linux).
        source: the file read.
        note: one sentence for the report.
    """

    machine: str
    flags_found: tuple[str, ...]
    vnni: bool | None
    source: str
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "flags_found": list(self.flags_found), "vnni": self.vnni,
                "source": self.source, "note": self.note}

    @classmethod
    def from_dict(cls, d: Any) -> CpuInt8Support:
        vnni = d["vnni"]
        return cls(str(d["machine"]), tuple(str(f) for f in d["flags_found"]),
                   None if vnni is None else bool(vnni), str(d["source"]), str(d["note"]))


def cpu_int8_support(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> CpuInt8Support:
    """Which int8 dot-product extensions the host CPU has, from its feature flags."""
    path = Path(cpuinfo)
    machine = platform.machine()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return CpuInt8Support(machine, (), None, str(path), f"cannot read {path}: int8 CPU support unknown")
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    found = tuple(f for f in INT8_CPU_FLAGS if f in flags)
    if found:
        note = (f"this CPU has int8 dot-product instructions ({', '.join(found)}), so onnxruntime's int8 kernels "
                "can beat fp32 here; whether these graphs do is measured below")
    else:
        note = (
            f"this CPU ({machine}) has no VNNI (none of {', '.join(INT8_CPU_FLAGS)} in {path}), so onnxruntime "
            "runs int8 slower than fp32 here; the int8 graphs are for TensorRT on the target GPU, and the CPU "
            "timings below measure this machine only"
        )
    return CpuInt8Support(machine, found, bool(found), str(path), note)
