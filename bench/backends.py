"""Backend adapters behind one small protocol: inputs, outputs, synchronisation, the timer,
memory and out-of-memory detection. The workloads use only this and the implementation handles.
"""

from __future__ import annotations

import functools
import gc
import resource
import sys
from dataclasses import dataclass

import numpy as np

from bench.timing import CpuTimer, CudaEventTimer, JaxTimer


@dataclass
class TorchBackend:
    device: str  # "cpu" or "cuda"
    name: str = "torch"

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    def tokens(self, array: np.ndarray):
        import torch

        return torch.as_tensor(array, dtype=torch.long, device=self.device)

    def device_memory_bytes(self) -> int | None:
        """The accelerator's memory (None on the CPU: no limit checked)."""
        import torch

        return torch.cuda.get_device_properties(0).total_memory if self.on_gpu else None

    def free_memory_bytes(self) -> int | None:
        """Bytes this process could still allocate on the accelerator: the driver's free memory
        plus what torch's caching allocator holds unused (None on the CPU)."""
        import torch

        if not self.on_gpu:
            return None
        free, _ = torch.cuda.mem_get_info()
        return free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated()

    def to_numpy(self, x) -> np.ndarray:
        return x.detach().float().cpu().numpy()

    def argmax_next(self, logits):  # [b, t, v] -> int [b, 1], stays on the device
        return logits[:, -1].argmax(-1, keepdim=True)

    def sync(self, _=None) -> None:
        if self.on_gpu:
            import torch

            torch.cuda.synchronize()

    def timer(self):
        return CudaEventTimer() if self.on_gpu else CpuTimer()

    def reset_peak(self) -> None:
        if self.on_gpu:
            import torch

            torch.cuda.reset_peak_memory_stats()

    def peak_bytes(self) -> int | None:
        if self.on_gpu:
            import torch

            return torch.cuda.max_memory_allocated()
        return None

    def is_oom(self, exc: BaseException) -> bool:
        import torch

        return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()

    def free(self) -> None:
        gc.collect()
        if self.on_gpu:
            import torch

            torch.cuda.empty_cache()

    def device_label(self) -> str:
        if self.on_gpu:
            import torch

            return f"cuda:{torch.cuda.current_device()} {torch.cuda.get_device_name()}"
        return "cpu"


@dataclass
class JaxBackend:
    device: str  # the suite's device: "cpu" or "cuda"
    name: str = "jax"

    def tokens(self, array: np.ndarray):
        import jax.numpy as jnp

        return jnp.asarray(array, dtype=jnp.int32)

    def device_memory_bytes(self) -> int | None:
        """The accelerator's memory (None on the CPU or when XLA does not say)."""
        import jax

        if not self.device.startswith("cuda"):
            return None
        return (jax.devices()[0].memory_stats() or {}).get("bytes_limit")

    def free_memory_bytes(self) -> int | None:
        """Bytes XLA's allocator could still hand out (None on the CPU or when XLA does not
        say)."""
        import jax

        if not self.device.startswith("cuda"):
            return None
        stats = jax.devices()[0].memory_stats() or {}
        if "bytes_limit" not in stats:
            return None
        return stats["bytes_limit"] - stats.get("bytes_in_use", 0)

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x, dtype=np.float32)

    def argmax_next(self, logits):
        return _jax_argmax_next()(logits)

    def sync(self, out=None) -> None:
        import jax

        if out is not None:
            jax.block_until_ready(out)

    def timer(self):
        return JaxTimer()

    def reset_peak(self) -> None:
        pass  # XLA's allocator keeps a process-wide peak only

    def peak_bytes(self) -> int | None:
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        return stats.get("peak_bytes_in_use")

    def is_oom(self, exc: BaseException) -> bool:
        text = str(exc)
        return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text

    def free(self) -> None:
        """Garbage, and what torch's caching allocator holds unused: a JAX handle is built from
        a torch source model on the same device, whose freed weights torch would keep."""
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            torch.cuda.empty_cache()

    def device_label(self) -> str:
        import jax

        d = jax.devices()[0]
        return f"{d.platform}:{d.id} {d.device_kind}"

    def unavailable(self) -> str | None:
        """JAX must run where the suite runs: on a GPU suite, JAX needs its GPU backend."""
        import jax

        if self.device.startswith("cuda") and jax.default_backend() != "gpu":
            return f"JAX has no GPU backend here (default backend: {jax.default_backend()})"
        return None


def backend_for(name: str, device: str):
    return TorchBackend(device) if name == "torch" else JaxBackend(device)


def host_peak_rss_bytes() -> int:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@functools.cache
def _jax_argmax_next():
    """The greedy pick as one compiled op: eagerly, the slice, argmax and cast are three
    dispatches from the host per decode step, where a JAX decode loop at batch 1 on the H100
    looked host-bound (docs/h100.md; measured with the rest of c8ec1cf's
    host-path change: RG-2B decode at batch 1 3.82 -> 3.45 ms)."""
    import jax
    import jax.numpy as jnp

    return jax.jit(
        lambda logits: jnp.argmax(logits[:, -1], axis=-1, keepdims=True).astype(jnp.int32)
    )
