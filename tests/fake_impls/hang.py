"""Hangs (as a stuck build or a deadlocked kernel would) on a prompt of 16 tokens."""

import time

from bench.impls import ours_torch


def supports(cfg):
    return None


class Handle(ours_torch.Handle):
    def prefill(self, tokens, pos):
        if tokens.shape[1] == 16:
            time.sleep(3600)
        return super().prefill(tokens, pos)


def build(source, dtype, backend):
    return Handle(source, backend)
