"""A device that holds generations of at most FIT sequences (simulated): a cache of a larger batch
raises out-of-memory when it is made ready for decoding, and the backend reports FREE bytes."""

import torch

from bench.backends import TorchBackend
from bench.impls import ours_torch

FIT = 5
FREE: int | None = None  # None: no memory figure (the search starts at max_batch)


def supports(cfg):
    return None


class Backend(TorchBackend):
    def free_memory_bytes(self):
        return FREE


class Handle(ours_torch.Handle):
    def fresh(self, cache, steps):
        if cache.batch_size > FIT:
            raise torch.OutOfMemoryError(
                f"CUDA out of memory (simulated: batch {cache.batch_size})"
            )
        return super().fresh(cache, steps)


def build(source, dtype, backend):
    return Handle(source, Backend("cpu" if backend is None else backend.device))
