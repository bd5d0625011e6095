"""Hardware ceilings measured on the device in the same run: copy bandwidth and matmul rate.

Derived metrics (MBU, MFU) divide by these, never by a datasheet number.
"""

from __future__ import annotations

from bench.backends import TorchBackend
from bench.timing import TimingConfig


def measure(device: str) -> dict:
    """{"copy_gbps", "matmul_tflops", ...} for `device` ("cpu" or "cuda")."""
    import torch

    backend = TorchBackend(device)
    timer = backend.timer()
    cfg = TimingConfig(warmup=3, min_reps=10, max_reps=200, budget_s=1.0)
    on_gpu = backend.on_gpu

    n_bytes = (1 << 30) if on_gpu else (1 << 26)  # 1 GiB on a GPU: far beyond any cache
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    copy = timer.measure(lambda: dst.copy_(src), cfg=cfg)
    src = dst = None  # free before the matmul

    n = 8192 if on_gpu else 1024
    dtype = torch.bfloat16 if on_gpu else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    mm = timer.measure(lambda: a @ b, cfg=cfg)
    a = b = None
    backend.free()
    return {
        "copy_gbps": 2 * n_bytes / (copy.median_ms * 1e-3) / 1e9,
        "copy_bytes": n_bytes,
        "matmul_tflops": 2 * n**3 / (mm.median_ms * 1e-3) / 1e12,
        "matmul_shape": [n, n, n],
        "matmul_dtype": str(dtype).removeprefix("torch."),
        "method": "median of timed repetitions (copy: read + write bytes)",
    }
