"""ours-torch-reference: models.torch.Model(impl="reference") — the source model itself."""

from __future__ import annotations

import torch

from bench.impls.base import global_attention, torch_train_step


def supports(cfg) -> str | None:
    return None


class Handle:
    def __init__(self, model, backend):
        self.model = model.eval()
        self.backend = backend
        # a decode step attends over the whole (grown) global buffer, masked
        self.reads_reserve = global_attention(model.config)

    @torch.no_grad()
    def prefill(self, tokens, pos):
        return self.model.prefill(tokens, pos, logits="last")

    @torch.no_grad()
    def decode(self, token, pos, cache):
        return self.model.decode(token, pos, cache)

    def fresh(self, cache, steps):
        """The cache with its global-attention buffers grown to hold the steps (doubling, as
        decode would on the way); decode returns a new cache and leaves its input unchanged."""
        from models.torch.blocks import AttentionCache, grow_global
        from models.torch.model import Cache

        cfg, n = self.model.config, cache.length + steps
        grown = [
            grow_global(cfg, c, n) if isinstance(c, AttentionCache) else c for c in cache.blocks
        ]
        return Cache(grown, cache.length)

    def train_step(self, checkpoint: bool = False):
        model = self.model
        if checkpoint:  # activation checkpointing per residual block
            return torch_train_step(
                model,
                lambda tokens, pos: model.logits(model.features(tokens, pos, checkpoint=True)),
            )
        return torch_train_step(model, model)

    def cache_nbytes(self, cache) -> int:
        return cache.nbytes()


def build(source, dtype, backend) -> Handle:
    return Handle(source, backend)
