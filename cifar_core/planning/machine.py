"""Which machine this is, in the terms that decide training speed; read without importing TensorFlow."""
from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

# CPU features that change TensorFlow's speed for these networks (oneDNN picks kernels by them)
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def _cpu() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), []
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key == "flags":
            present = set(value.split())
            flags = [f for f in SPEED_FLAGS if f in present]
            break
    return model, flags


def cores() -> int:
    """CPUs this process may run on (a container's or taskset's limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def gpu_count() -> int:
    """NVIDIA GPUs the driver lists and CUDA_VISIBLE_DEVICES does not hide (no TensorFlow import)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return 0
    gpus = Path("/proc/driver/nvidia/gpus")
    found = len(list(gpus.iterdir())) if gpus.is_dir() else 0
    if visible:
        found = min(found, len([v for v in visible.split(",") if v.strip()]))
    return found


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "missing"


def describe() -> dict[str, Any]:
    """This machine: what a probe's result is valid for."""
    model, flags = _cpu()
    gpus = gpu_count()
    return {"cpu": model, "flags": flags, "cores": cores(), "device": f"gpu x{gpus}" if gpus else "cpu",
            "tensorflow": _version("tensorflow"), "keras": _version("keras")}


def key(described: dict[str, Any]) -> str:
    """A short stable name for a machine description (the probe cache's file name)."""
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:12]


def summary(described: dict[str, Any]) -> str:
    """One line for people: 'Intel(R) Xeon(R) Processor, 2 cores, AVX-512 + AMX, cpu'."""
    flags = set(described.get("flags", ()))
    isa = "AMX" if "amx_bf16" in flags else "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    if isa == "AMX":
        isa = "AVX-512 + AMX"
    return f"{described.get('cpu')}, {described.get('cores')} cores, {isa}, {described.get('device')}"
