"""Runs out of device memory (simulated) in every call."""

import torch

from bench.impls import ours_torch


def supports(cfg):
    return None


class Handle(ours_torch.Handle):
    def prefill(self, tokens, pos):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB (simulated)")


def build(source, dtype, backend):
    return Handle(source, backend)
