"""ours-jax-reference: models.jax.Model(impl="reference"), weights converted from the source."""

from __future__ import annotations

from bench.impls.base import jax_train_step


def supports(cfg) -> str | None:
    return None


class Handle:
    def __init__(self, jm, params, backend):
        self.jm, self.params, self.backend = jm, params, backend

    def prefill(self, tokens, pos):
        return self.jm.prefill(self.params, tokens, pos, logits="last")

    def decode(self, token, pos, cache):
        return self.jm.decode(self.params, token, pos, cache)

    def fresh(self, cache):
        return cache  # functional: decode never changes its input cache

    def train_step(self):
        from models.jax.model import run

        cfg = self.jm.config
        return jax_train_step(
            lambda p, tokens, pos: run(cfg, p, tokens, pos, None, 0, False)[0], self.params
        )

    def cache_nbytes(self, cache) -> int:
        return cache.nbytes()


def build(source, dtype, backend) -> Handle:
    import models.jax

    jm, params = models.jax.from_torch(source)
    return Handle(jm, params, backend)
