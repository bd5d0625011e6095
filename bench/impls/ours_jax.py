"""ours-jax-reference: models.jax.Model(impl="reference"), weights converted from the source."""

from __future__ import annotations

from bench.impls.base import global_attention, jax_train_step


def supports(cfg) -> str | None:
    return None


def reserve(cfg, cache, steps):
    from models.jax.blocks import grow
    from models.jax.model import Cache

    n = cache.length + steps + 1
    return Cache([grow(cfg, c, n) for c in cache.blocks], cache.length)


class Handle:
    def __init__(self, jm, params, backend):
        self.jm, self.params, self.backend = jm, params, backend
        # a decode step attends over the whole reserved global buffer, masked (static shapes)
        self.reads_reserve = global_attention(jm.config)

    def prefill(self, tokens, pos):
        return self.jm.prefill(self.params, tokens, pos, logits="last")

    def decode(self, token, pos, cache):
        return self.jm.decode(self.params, token, pos, cache)

    def fresh(self, cache, steps):
        """The cache with its global-attention buffers grown to hold the steps, so that no step
        of a timed generation grows one (a new shape: a compile); functional otherwise: decode
        never changes its input cache."""
        return reserve(self.jm.config, cache, steps)

    def train_step(self, checkpoint: bool = False):
        from models.jax.model import logits_from, run, run_stacked, stack_blocks

        cfg = self.jm.config
        if checkpoint:  # each repeat of the block pattern and each chunk of the loss rematerialised
            return jax_train_step(
                lambda p, tokens, pos: run_stacked(
                    cfg, p, tokens, pos, checkpoint=True, features=True
                ),
                self.params,
                prepare=lambda params: stack_blocks(cfg, params),
                head=lambda p, h: logits_from(cfg, p, h),
            )
        return jax_train_step(
            lambda p, tokens, pos: run(cfg, p, tokens, pos, None, 0, False)[0], self.params
        )

    def cache_nbytes(self, cache) -> int:
        return cache.nbytes()


def build(source, dtype, backend) -> Handle:
    import models.jax

    jm, params = models.jax.from_torch(source)
    return Handle(jm, params, backend)
