"""recurrentgemma-torch: the official PyTorch Griffin, weights converted from the source.

Built with gradient_checkpointing=False, its fastest setting: the package default (True) recomputes
every block in the backward pass and costs time even in no-grad inference (measured:
docs/h100.md). Its decode updates the attention cache in place, so each
timed repetition gets a fresh copy (outside the timed region). Its prefill computes logits for every
prompt position (it has no last-position option).
"""

from __future__ import annotations

import copy

import torch

from bench.impls.base import no_checkpointing, torch_train_step, tree_nbytes
from models.config import recurrentgemma_incompatibility


def supports(cfg) -> str | None:
    return recurrentgemma_incompatibility(cfg)


class Handle:
    def __init__(self, rg, backend):
        self.rg = rg.eval()
        self.backend = backend

    @torch.no_grad()
    def prefill(self, tokens, pos):
        logits, cache = self.rg(tokens, pos, return_logits=True, return_cache=True)
        return logits[:, -1:], cache

    @torch.no_grad()
    def decode(self, token, pos, cache):
        return self.rg(token, pos, cache=cache)

    def fresh(self, cache, steps):
        return copy.deepcopy(cache)

    def train_step(self, checkpoint: bool = False):
        if checkpoint:
            raise no_checkpointing("recurrentgemma-torch")
        return torch_train_step(
            self.rg, lambda tokens, pos: self.rg(tokens, pos, return_cache=False)[0]
        )

    def cache_nbytes(self, cache) -> int:
        return tree_nbytes(cache)


def build(source, dtype, backend) -> Handle:
    from models.torch import to_recurrentgemma

    return Handle(to_recurrentgemma(source, gradient_checkpointing=False), backend)
