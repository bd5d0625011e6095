"""Computes a slightly different function: the correctness gate must catch it."""

import torch

from bench.impls import ours_torch


def supports(cfg):
    return None


class Handle(ours_torch.Handle):
    @torch.no_grad()
    def prefill(self, tokens, pos):
        logits, cache = super().prefill(tokens, pos)
        return logits * 1.2, cache

    @torch.no_grad()
    def decode(self, token, pos, cache):
        logits, cache = super().decode(token, pos, cache)
        return logits * 1.2, cache


def build(source, dtype, backend):
    return Handle(source, backend)
