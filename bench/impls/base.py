"""What every implementation handle offers the workloads.

handle.backend                       bench.backends.TorchBackend | JaxBackend
handle.prefill(tokens, pos)          -> (last-position logits [b, 1, v], cache)
handle.decode(token, pos, cache)     -> (logits [b, 1, v], cache)
handle.fresh(cache, steps)           -> a cache that decode may consume for `steps` more tokens
                                        (a copy when decode mutates its cache in place, else
                                        the same object; room for the steps reserved up front
                                        where the implementation preallocates)
handle.train_step(checkpoint=False)  -> (step(tokens, pos, targets) -> loss, restore())
                                        forward + cross-entropy + backward + AdamW; restore()
                                        puts back the weights the handle was built with;
                                        checkpoint=True: activation checkpointing (raises
                                        NotOffered where not offered: `unavailable`)
handle.cache_nbytes(cache)           -> bytes held by a cache
handle.reads_reserve                 (optional, default False) True when a decode step reads
                                        the whole reserved cache, not only its filled part: its
                                        cost then depends on the room `fresh` reserved, and a
                                        long generation's first steps do not time a short one
"""

from __future__ import annotations

import dataclasses
from functools import partial

LEARNING_RATE = 1e-5


class NotOffered(Exception):
    """An implementation does not offer what a point asks (recorded `unavailable`, not `error`)."""


def no_checkpointing(name: str) -> NotOffered:
    return NotOffered(
        f"{name} offers no activation checkpointing (train_step checkpoint = 1): our "
        f"implementations only"
    )


def global_attention(cfg) -> bool:
    """Whether a model has a global-attention block (a cache that grows with the generation)."""
    from models.config import ATTENTION

    return cfg.attention_window is None and ATTENTION in cfg.block_types


def tree_nbytes(obj) -> int:
    """Bytes of every tensor/array inside nested dicts, lists, tuples, NamedTuples, dataclasses."""
    if obj is None or isinstance(obj, str | int | float | bool):
        return 0
    if hasattr(obj, "nbytes") and hasattr(obj, "shape"):
        return int(obj.nbytes)
    if hasattr(obj, "element_size") and hasattr(obj, "numel"):  # torch.Tensor
        return obj.element_size() * obj.numel()
    if isinstance(obj, dict):
        return sum(tree_nbytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tree_nbytes(v) for v in obj)
    if dataclasses.is_dataclass(obj):
        return sum(tree_nbytes(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    if hasattr(obj, "__dict__"):  # e.g. a transformers Cache object
        return sum(tree_nbytes(v) for v in vars(obj).values())
    return 0


# device memory a saved copy needs free, as a multiple of the weights: the copy itself (1), the
# step's gradients and two AdamW moments (3), and as much again for activations (1)
_SAVE_ON_DEVICE_MULTIPLE = 5


def _saved_state(model) -> dict:
    """A copy of the model's state for restore(): on its device when the device's free memory
    holds it beside the training state, else in host memory (on the H200 a 7B model's host copy
    took 12-13 s out and 2-3 s back, its device copy 0.02 s)."""
    import torch

    state = model.state_dict()
    first = next(iter(state.values()))
    where = "cpu"
    if first.is_cuda:
        nbytes = sum(v.numel() * v.element_size() for v in state.values())
        free, _ = torch.cuda.mem_get_info(first.device)
        free += torch.cuda.memory_reserved(first.device) - torch.cuda.memory_allocated(first.device)
        if free > _SAVE_ON_DEVICE_MULTIPLE * nbytes:
            where = first.device
    return {k: v.detach().to(where, copy=True) for k, v in state.items()}


def torch_train_step(model, logits_fn, loss_fn=None):
    """A training step for a torch module: forward, float32 cross-entropy, backward, AdamW.

    Weights stay in their dtype (bf16 training without fp32 master weights, the same for every
    torch implementation). `loss_fn(tokens, pos, targets) -> mean loss`, when given, replaces
    logits_fn + cross-entropy (e.g. a chunked loss that never holds all logits). Returns
    (step, restore).
    """
    import torch
    import torch.nn.functional as F

    saved = _saved_state(model)
    params = [p for p in model.parameters() if p.requires_grad]
    fused = params[0].is_cuda
    opt = torch.optim.AdamW(params, lr=LEARNING_RATE, fused=fused)
    model.train()

    def step(tokens, pos, targets):
        if loss_fn is not None:
            loss = loss_fn(tokens, pos, targets)
        else:
            logits = logits_fn(tokens, pos)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def restore():
        model.eval()
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(saved[k])

    return step, restore


def jax_train_step(loss_logits_fn, params, static_of=None, prepare=None, head=None, loss_of=None):
    """A jitted training step for a JAX model: forward, float32 cross-entropy, backward, AdamW.

    `loss_logits_fn(params, tokens, pos) -> logits`. Params are threaded functionally (donated),
    so the handle's own params are untouched and restore() has nothing to do. With `static_of`,
    `static_of(pos)` (a hashable, computed on the host before each step) is passed to
    loss_logits_fn as a fourth, static argument: one compilation per value. `prepare(params)`,
    when given, makes the trained copy of the params in the layout loss_logits_fn takes (new
    arrays: e.g. models.jax.model.stack_blocks), once, before the first step. With
    `head(params, features) -> logits`, loss_logits_fn returns the features before the output
    layer and the loss is `chunked_nll`'s (no [b, t, vocab] logits in memory). With
    `loss_of(params, out, targets) -> mean loss`, that is the loss (e.g. a fused chunked loss on the
    features).
    """
    import jax
    import jax.numpy as jnp
    import optax

    opt = optax.adamw(LEARNING_RATE)
    # donated below; the handle keeps its own
    params = prepare(params) if prepare else jax.tree_util.tree_map(jnp.copy, params)
    state = {"params": params, "opt": opt.init(params)}

    def loss_fn(p, tokens, pos, targets, static):
        extra = () if static_of is None else (static,)
        out = loss_logits_fn(p, tokens, pos, *extra)
        if loss_of is not None:
            return loss_of(p, out, targets)
        if head is not None:
            return chunked_nll(lambda h: head(p, h), out, targets)
        logp = jax.nn.log_softmax(out.astype(jnp.float32), axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))

    @partial(jax.jit, donate_argnums=(0, 1), static_argnums=5)
    def update(p, opt_state, tokens, pos, targets, static):
        loss, grads = jax.value_and_grad(loss_fn)(p, tokens, pos, targets, static)
        updates, opt_state = opt.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    def step(tokens, pos, targets):
        static = None if static_of is None else static_of(pos)
        state["params"], state["opt"], loss = update(
            state["params"], state["opt"], tokens, pos, targets, static
        )
        return loss

    return step, lambda: None


def chunked_nll(head, features, targets, chunk_tokens: int = 2048):
    """Mean float32 next-token cross-entropy of `head(features)` (logits), computed over chunks
    of tokens in one jax.lax.scan, each chunk rematerialised in the backward pass
    (jax.checkpoint): only one chunk's logits are ever in memory, at the cost of recomputing the
    output layer. features [b, t, d], targets [b, t]; a chunk holds gcd(b*t, chunk_tokens)
    tokens."""
    import math

    import jax
    import jax.numpy as jnp

    n, d = features.shape[0] * features.shape[1], features.shape[-1]
    c = math.gcd(n, chunk_tokens)

    @jax.checkpoint
    def chunk_sum(h, y):
        logp = jax.nn.log_softmax(head(h[None]).astype(jnp.float32)[0], axis=-1)
        return -jnp.sum(jnp.take_along_axis(logp, y[:, None], axis=-1))

    def body(total, hy):
        return total + chunk_sum(*hy), None

    xs = (features.reshape(n // c, c, d), targets.reshape(n // c, c))
    total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), xs)
    return total / n
