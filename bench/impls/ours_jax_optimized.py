"""ours-jax-optimized: models.jax.Model(impl="optimized") on the source model's weights.

The same params pytree as ours-jax-reference. Decode donates its cache (consumed: the arrays are
reused for the new cache), so `fresh` hands decode a copy of the prefilled cache. The training
step is a jitted forward + cross-entropy + backward + AdamW (as base.jax_train_step) through
the Pallas RG-LRU backward; whether the batch holds one document per row (the causal attention
fast path) is looked up on the host once per new segment_pos array, a static argument of the step.
"""

from __future__ import annotations

from functools import partial

from bench.impls import ours_jax


def supports(cfg) -> str | None:
    return None


class Handle(ours_jax.Handle):
    def fresh(self, cache):
        from models.jax.optimized import copy_cache

        return copy_cache(cache)  # decode consumes (donates) its input cache

    def train_step(self):
        import jax
        import jax.numpy as jnp
        import optax

        from bench.impls.base import LEARNING_RATE
        from models.jax.model import run
        from models.jax.optimized import one_document

        cfg = self.jm.config
        opt = optax.adamw(LEARNING_RATE)
        params = jax.tree_util.tree_map(jnp.copy, self.params)  # donated below
        state = {"params": params, "opt": opt.init(params), "pos": None, "one_doc": False}

        def loss_fn(p, tokens, pos, targets, one_doc):
            logits, _ = run(
                cfg, p, tokens, pos, None, 0, False, impl="optimized", one_document=one_doc
            )
            logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
            return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))

        @partial(jax.jit, donate_argnums=(0, 1), static_argnums=5)
        def update(p, opt_state, tokens, pos, targets, one_doc):
            loss, grads = jax.value_and_grad(loss_fn)(p, tokens, pos, targets, one_doc)
            updates, opt_state = opt.update(grads, opt_state, p)
            return optax.apply_updates(p, updates), opt_state, loss

        def step(tokens, pos, targets):
            if pos is not state["pos"]:  # one host transfer per new positions array
                state["pos"], state["one_doc"] = pos, one_document(pos)
            state["params"], state["opt"], loss = update(
                state["params"], state["opt"], tokens, pos, targets, state["one_doc"]
            )
            return loss

        return step, lambda: None


def build(source, dtype, backend) -> Handle:
    import models.jax

    jm, params = models.jax.from_torch(source)
    return Handle(models.jax.Model(jm.config, impl="optimized"), params, backend)
