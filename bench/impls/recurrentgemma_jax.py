"""recurrentgemma-jax: the official Flax Griffin (scan_type AUTO), weights converted, jitted.

Its prefill computes logits for every prompt position (no last-position option)."""

from __future__ import annotations

from functools import partial

from bench.impls.base import jax_train_step, no_checkpointing, tree_nbytes
from models.config import recurrentgemma_incompatibility


def supports(cfg) -> str | None:
    return recurrentgemma_incompatibility(cfg)


class Handle:
    def __init__(self, module, variables, backend):
        import jax

        self.module, self.variables, self.backend = module, variables, backend
        apply = partial(module.apply, return_logits=True, return_cache=True)
        self._prefill = jax.jit(lambda v, tokens, pos: apply(v, tokens, pos))
        self._decode = jax.jit(lambda v, token, pos, cache: apply(v, token, pos, cache))

    def prefill(self, tokens, pos):
        logits, cache = self._prefill(self.variables, tokens, pos)
        return logits[:, -1:], cache

    def decode(self, token, pos, cache):
        return self._decode(self.variables, token, pos, cache)

    def fresh(self, cache, steps):
        return cache

    def train_step(self, checkpoint: bool = False):
        if checkpoint:
            raise no_checkpointing("recurrentgemma-jax")
        module = self.module
        return jax_train_step(
            lambda v, tokens, pos: module.apply(v, tokens, pos, return_cache=False)[0],
            self.variables,
        )

    def cache_nbytes(self, cache) -> int:
        return tree_nbytes(cache)


def build(source, dtype, backend) -> Handle:
    import models.jax

    jm, params = models.jax.from_torch(source)
    module, variables = models.jax.to_recurrentgemma(jm.config, params)
    return Handle(module, variables, backend)
