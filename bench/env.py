"""The environment a measurement was taken in: GPU (via nvidia-ml-py), driver, clocks, power,
library versions, git sha."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path

LIBRARIES = (
    "torch",
    "jax",
    "jaxlib",
    "triton",
    "numpy",
    "transformers",
    "recurrentgemma",
    "flax",
    "optax",
    "fla-core",
    "accelerated-scan",
)
ROOT = Path(__file__).resolve().parent.parent


def git_sha() -> str | None:
    """HEAD of the checkout (with "-dirty" if it has changes), or $GRIFFIN_BENCH_GIT_SHA where the
    tree travelled without .git (a remote GPU machine)."""
    if os.environ.get("GRIFFIN_BENCH_GIT_SHA"):
        return os.environ["GRIFFIN_BENCH_GIT_SHA"]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def versions() -> dict[str, str | None]:
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            out[lib] = None
    return out


def _nvml():
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # no driver, no GPU, no nvidia-ml-py
        return None


def gpu_static(index: int = 0) -> dict | None:
    """Name, driver, memory, max clocks and power limit of GPU `index` (None without a GPU)."""
    nv = _nvml()
    if nv is None or nv.nvmlDeviceGetCount() <= index:
        return None
    h = nv.nvmlDeviceGetHandleByIndex(index)
    name = nv.nvmlDeviceGetName(h)
    out = {
        "name": name.decode() if isinstance(name, bytes) else name,
        "driver": _str(nv.nvmlSystemGetDriverVersion()),
        "memory_total_bytes": nv.nvmlDeviceGetMemoryInfo(h).total,
        "max_sm_clock_mhz": _try(nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_SM),
        "max_mem_clock_mhz": _try(nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_MEM),
        "power_limit_w": _div(_try(nv.nvmlDeviceGetEnforcedPowerLimit, h), 1000),
        "cuda_driver_version": _try(nv.nvmlSystemGetCudaDriverVersion),
    }
    return out


def gpu_state(index: int = 0) -> dict | None:
    """Current clocks, power, temperature and device memory in use (sampled now)."""
    nv = _nvml()
    if nv is None or nv.nvmlDeviceGetCount() <= index:
        return None
    h = nv.nvmlDeviceGetHandleByIndex(index)
    return {
        "sm_clock_mhz": _try(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM),
        "mem_clock_mhz": _try(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_MEM),
        "power_w": _div(_try(nv.nvmlDeviceGetPowerUsage, h), 1000),
        "temperature_c": _try(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU),
        "memory_used_bytes": nv.nvmlDeviceGetMemoryInfo(h).used,
    }


def collect(device: str) -> dict:
    """Everything a record needs about where it was measured."""
    cpu = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "device": device,
        "gpu": gpu_static() if device.startswith("cuda") else None,
        "versions": versions(),
        "git_sha": git_sha(),
        # Triton kernels ran in the interpreter (CPU): their timings say nothing about speed
        "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
    }


def _try(fn, *args):
    try:
        return fn(*args)
    except Exception:
        return None


def _div(x, d):
    return None if x is None else x / d


def _str(x):
    return x.decode() if isinstance(x, bytes) else x
