"""Raises inside the model call."""

from bench.impls import ours_torch


def supports(cfg):
    return None


class Handle(ours_torch.Handle):
    def prefill(self, tokens, pos):
        raise RuntimeError("boom: this implementation always fails")


def build(source, dtype, backend):
    return Handle(source, backend)
