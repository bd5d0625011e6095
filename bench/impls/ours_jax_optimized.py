"""ours-jax-optimized: models.jax.Model(impl="optimized") on the source model's weights.

The same params pytree as ours-jax-reference. Decode donates its cache (consumed: the arrays are
reused for the new cache), so `fresh` hands decode a copy of the prefilled cache. The training
step is a jitted forward + cross-entropy + backward + AdamW (as base.jax_train_step) through
the Pallas RG-LRU backward, its loss models.jax.optimized.chunked_loss (as torch's optimized
model: the output layer and the loss chunk by chunk with their gradients in the forward pass, no
[b, t, vocab] logits). With checkpoint=True its blocks run as one jax.lax.scan over the repeats
of the block pattern (models.jax.model.run_stacked), each repeat rematerialised in the backward
pass; without, the blocks are unrolled (on the H200 a 400M step through the scan took
1.02-1.33x torch's, unrolled 0.93-0.97x).
On a GPU its decode attends over the filled slots of a global cache only
(models.jax.optimized's Pallas decode attention): unlike the reference it does not
`reads_reserve`.
Whether the batch holds one document per row (the causal attention fast path) is looked up on
the host once per new segment_pos array, a static argument of the step.
"""

from __future__ import annotations

from bench.impls import ours_jax


def supports(cfg) -> str | None:
    return None


class Handle(ours_jax.Handle):
    def __init__(self, jm, params, backend):
        from models.jax.optimized import decode_attention_implementation

        super().__init__(jm, params, backend)
        # on a GPU a decode step reads the filled slots of a global cache only (the Pallas
        # decode attention), not the whole reserve: a shorter length reads inside a longer one
        self.reads_reserve = self.reads_reserve and decode_attention_implementation() != "pallas"

    def fresh(self, cache, steps):
        from models.jax.optimized import copy_cache

        # decode consumes (donates) its input cache: a copy, grown for the steps first
        return copy_cache(ours_jax.reserve(self.jm.config, cache, steps))

    def train_step(self, checkpoint: bool = False):
        from bench.impls.base import jax_train_step
        from models.jax.model import run, run_stacked, stack_blocks
        from models.jax.optimized import chunked_loss, one_document_asker

        cfg = self.jm.config

        def loss_of(p, features, targets):
            return chunked_loss(cfg, p, features, targets)

        if checkpoint:
            return jax_train_step(
                lambda p, tokens, pos, one: run_stacked(
                    cfg,
                    p,
                    tokens,
                    pos,
                    impl="optimized",
                    one_document=one,
                    checkpoint=True,
                    features=True,
                ),
                self.params,
                static_of=one_document_asker(),
                prepare=lambda params: stack_blocks(cfg, params),
                loss_of=loss_of,
            )
        return jax_train_step(
            lambda p, tokens, pos, one: run(
                cfg, p, tokens, pos, None, 0, False, "features", impl="optimized", one_document=one
            )[0],
            self.params,
            static_of=one_document_asker(),
            loss_of=loss_of,
        )


def build(source, dtype, backend) -> Handle:
    import models.jax

    jm, params = models.jax.from_torch(source)
    return Handle(models.jax.Model(jm.config, impl="optimized"), params, backend)
