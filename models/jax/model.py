"""The model: embedding, residual blocks, final norm, tied output layer (JAX).

Mirrors models/torch/model.py. Params are a plain pytree (nested dicts, `blocks` a list) named
like the torch state_dict. forward / prefill / decode are jitted; decode compiles once per cache
shape and takes the stream position as a traced value.

    jm = Model(cfg, impl="reference")
    params = jm.init(rng)
    logits = jm.forward(params, tokens, segment_pos)
    logits, cache = jm.prefill(params, tokens, segment_pos)
    logits, cache = jm.decode(params, tokens[:, -1:], segment_pos[:, -1:], cache)

impl="optimized" (models/jax/optimized.py) takes the same params: the Pallas RG-LRU kernel,
dot_product_attention on a causal fast path, and a decode step that consumes (donates) its cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from models.config import ModelConfig, embed_multiplier
from models.jax import blocks, layers
from models.jax.blocks import AttentionCache, BlockCache, RecurrentCache

IMPLS = ("reference", "optimized")


@partial(jax.tree_util.register_dataclass, data_fields=["blocks"], meta_fields=["length"])
@dataclass
class Cache:
    """Decode state of every block, and how many tokens the stream holds so far (a Python int)."""

    blocks: list[BlockCache]
    length: int

    @property
    def batch_size(self) -> int:
        first = self.blocks[0]
        return (first.rg_lru if isinstance(first, RecurrentCache) else first.k).shape[0]

    def nbytes(self) -> int:
        """Bytes held by the cache arrays."""
        total = 0
        for c in self.blocks:
            arrays = (c.rg_lru, c.conv) if isinstance(c, RecurrentCache) else (c.k, c.v, c.pos)
            total += sum(a.size * a.dtype.itemsize for a in arrays)
        return total


def check_inputs(tokens, segment_pos) -> None:
    """Raise a clear error for tokens / segment_pos that the model cannot take."""
    for name, x in (("tokens", tokens), ("segment_pos", segment_pos)):
        if not hasattr(x, "dtype") or not hasattr(x, "shape"):
            raise TypeError(f"{name} must be an integer array [b, t], got {type(x).__name__}")
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise TypeError(f"{name} must be an integer array (int32 [b, t]), got dtype {x.dtype}")
        if x.ndim != 2:
            raise ValueError(f"{name} must have rank 2 [batch, time], got shape {list(x.shape)}")
    if tokens.shape != segment_pos.shape:
        raise ValueError(
            f"tokens {list(tokens.shape)} and segment_pos {list(segment_pos.shape)} must have the same shape"
        )
    if tokens.shape[1] == 0:
        raise ValueError("tokens must hold at least one time step")


def init(cfg: ModelConfig, key, dtype=jnp.float32) -> dict:
    """Random parameters with the official initialisation."""
    k_embed, *k_blocks = jax.random.split(key, cfg.depth + 1)
    embed = jax.random.normal(k_embed, (cfg.vocab_size, cfg.width)) * math.sqrt(1.0 / cfg.width)
    return {
        "embedder": {"input_embedding": embed.astype(dtype)},
        "blocks": [
            blocks.init_residual_block(k, cfg, kind, dtype)
            for k, kind in zip(k_blocks, cfg.block_types, strict=True)
        ],
        "final_norm": layers.init_rms_norm(cfg.width, dtype),
    }


def embed(cfg: ModelConfig, params: dict, tokens) -> jax.Array:  # int [b, t] -> [b, t, d]
    table = params["embedder"]["input_embedding"]
    x = table[tokens]
    scale = embed_multiplier(cfg, str(table.dtype))
    return x if scale is None else x * scale


def logits_from(cfg: ModelConfig, params: dict, x) -> jax.Array:  # [b, t, d] -> [b, t, v]
    logits = (
        layers.rms_norm(params["final_norm"], x, cfg.norm_eps)
        @ params["embedder"]["input_embedding"].T
    )
    cap = cfg.logits_soft_cap
    return jnp.tanh(logits / cap) * cap if cap else logits


def run(
    cfg: ModelConfig,
    params,
    tokens,
    segment_pos,
    cache_blocks,
    length,
    return_cache,
    logits="all",
    *,
    impl: str = "reference",
    one_document: bool = False,
):
    """The whole stack; cache_blocks None for a fresh stream. Returns (logits, new blocks or None);
    logits for every position, or for the last one only with logits="last" (logits="features":
    the residual stream after the last block instead, for a chunked loss). impl="optimized" runs
    the optimized blocks; one_document=True (static) promises that no row of segment_pos starts a
    document after its first token (optimized.one_document), for the causal attention fast path."""
    x = embed(cfg, params, tokens)
    new_blocks = []
    for i, (kind, p) in enumerate(zip(cfg.block_types, params["blocks"], strict=True)):
        c = None if cache_blocks is None else cache_blocks[i]
        x, c = blocks.residual_block(
            cfg, kind, p, x, segment_pos, c, length, return_cache, impl, one_document
        )
        new_blocks.append(c)
    new_blocks = new_blocks if return_cache else None
    if logits == "features":  # the residual stream after the last block, before the final norm
        return x, new_blocks
    x = x if logits == "all" else x[:, -1:]
    return logits_from(cfg, params, x), new_blocks


def stack_blocks(cfg: ModelConfig, params: dict) -> dict:
    """The params with their blocks regrouped for `run_stacked`: `groups[j]` stacks (a leading
    axis per repeat) the blocks at position j of every whole repeat of cfg.block_pattern, `rest`
    the blocks after the last whole repeat. New arrays (a copy of the block weights)."""
    period = len(cfg.block_pattern)
    repeats = cfg.depth // period
    blocks_ = params["blocks"]
    groups = []
    for j in range(period if repeats else 0):
        at_j = [blocks_[r * period + j] for r in range(repeats)]
        groups.append(jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *at_j))
    rest = [jax.tree_util.tree_map(jnp.copy, b) for b in blocks_[repeats * period :]]
    others = {k: jax.tree_util.tree_map(jnp.copy, v) for k, v in params.items() if k != "blocks"}
    return {**others, "groups": groups, "rest": rest}


def run_stacked(
    cfg: ModelConfig,
    sparams: dict,
    tokens,
    segment_pos,
    *,
    impl: str = "reference",
    one_document: bool = False,
    checkpoint: bool = False,
    features: bool = False,
):
    """Logits for every position of a fresh stream (as `run`), from params of `stack_blocks`
    (features=True: the residual stream after the last block instead, for `logits_from`):
    one jax.lax.scan over the repeats of the block pattern (the pattern's blocks compiled once).
    checkpoint=True rematerialises each repeat in the backward pass (jax.checkpoint: only the
    residual stream between repeats is kept, the activations inside are recomputed), the use
    the training step makes of it; without checkpointing the unrolled `run` trains faster (on
    the H200 a 400M step through the scan took 1.02-1.33x torch's, unrolled 0.93-0.97x)."""
    kinds = cfg.block_types
    period = len(cfg.block_pattern)

    def block(kind, p, x):
        return blocks.residual_block(
            cfg, kind, p, x, segment_pos, None, 0, False, impl, one_document
        )[0]

    def repeat(x, ps):
        for kind, p in zip(kinds[:period], ps, strict=True):
            x = block(kind, p, x)
        return x, None

    if checkpoint:
        repeat = jax.checkpoint(repeat)
        block = jax.checkpoint(block, static_argnums=0)
    x = embed(cfg, sparams, tokens)
    if sparams["groups"]:
        x, _ = jax.lax.scan(repeat, x, sparams["groups"])
    tail = kinds[len(kinds) - len(sparams["rest"]) :]
    for kind, p in zip(tail, sparams["rest"], strict=True):
        x = block(kind, p, x)
    return x if features else logits_from(cfg, sparams, x)


class Model:
    """Hawk, Griffin or the MQA Transformer in JAX, as `cfg.block_types` says.

    impl="reference": plain jnp, functional (decode leaves its input cache intact).
    impl="optimized": the same params and function on models/jax/optimized.py; forward and
    prefill look once per call (on the host) whether each row holds one document, and decode
    donates its input cache (consumed: see `decode`). decode_gemv (optimized only): decode steps
    run optimized.decode_step_gemv, the matmuls as kernels.gemv_jax GEMVs with the norms, biases,
    residuals and the MLP's gelu·mul fused, its up-projections from row copies of the weights
    made once per params (optimized.up_rows; 2 GB at RecurrentGemma-2B). None (the default):
    at batch 1 on a GPU, where on the H100, in the decode suite's loop (8 greedy steps a timed
    run), RG-2B's step took 2.854 ms against 3.054 ms with XLA's matmuls, in one process
    (docs/h100.md). True / False: at every batch size / never.
    """

    def __init__(
        self, cfg: ModelConfig, impl: str = "reference", *, decode_gemv: bool | None = None
    ):
        if impl not in IMPLS:
            raise ValueError(f"unknown impl {impl!r}; valid impls: {', '.join(IMPLS)}")
        if decode_gemv not in (None, True, False):
            raise ValueError(f"decode_gemv must be None, True or False, got {decode_gemv!r}")
        if decode_gemv and impl != "optimized":
            raise ValueError("decode_gemv=True needs impl='optimized'")
        self.config = cfg
        self.impl = impl
        self.decode_gemv = decode_gemv
        if impl == "optimized":
            self._init_optimized(cfg)
            return
        self._forward = jax.jit(
            lambda params, tokens, seg: run(cfg, params, tokens, seg, None, 0, False)[0]
        )
        self._prefill = jax.jit(
            lambda params, tokens, seg, logits: run(
                cfg, params, tokens, seg, None, 0, True, logits
            ),
            static_argnums=3,
        )
        self._decode = jax.jit(
            lambda params, tokens, seg, cache_blocks, length: run(
                cfg, params, tokens, seg, cache_blocks, length, True
            )
        )

    def _init_optimized(self, cfg: ModelConfig) -> None:
        from models.jax import optimized

        opt = partial(run, cfg, impl="optimized")
        forward = jax.jit(
            lambda params, tokens, seg, one_doc: opt(
                params, tokens, seg, None, 0, False, one_document=one_doc
            )[0],
            static_argnums=3,
        )
        prefill = jax.jit(
            lambda params, tokens, seg, logits, one_doc: opt(
                params, tokens, seg, None, 0, True, logits, one_document=one_doc
            ),
            static_argnums=(3, 4),
        )
        one_document = optimized.one_document_asker()  # traced: False, the general path

        self._forward = lambda params, tokens, seg: forward(params, tokens, seg, one_document(seg))
        self._prefill = lambda params, tokens, seg, logits: prefill(
            params, tokens, seg, logits, one_document(seg)
        )
        gemv_step = partial(optimized.decode_step_gemv, cfg)
        self._up_rows = jax.jit(optimized.up_rows)
        self._rows = ([], None)  # (the params' up weights, their row copies): the latest

        def step(params, tokens, seg, cache_blocks, length, rows=None):
            if rows is not None:  # (traced apart: None and a list are different signatures)
                return gemv_step(params, tokens, seg, cache_blocks, length, rows)
            return opt(params, tokens, seg, cache_blocks, length, True)

        # the cache (argument 3) donated: updated in place where the backend can
        self._decode = jax.jit(step, donate_argnums=3)

    def init(self, key, dtype=jnp.float32) -> dict:
        """Random parameters (a pytree) with the official initialisation."""
        return init(self.config, key, dtype)

    def forward(self, params, tokens, segment_pos) -> jax.Array:
        """Full forward pass: int [b, t] tokens and segment positions -> logits [b, t, v]."""
        tokens, segment_pos = _as_arrays(tokens, segment_pos)
        return self._forward(params, tokens, segment_pos)

    def prefill(
        self, params, tokens, segment_pos, *, logits: str = "all"
    ) -> tuple[jax.Array, Cache]:
        """Process a prompt: logits [b, t, v] (or [b, 1, v] with logits="last") and the cache."""
        if logits not in ("all", "last"):
            raise ValueError(f"logits must be 'all' or 'last', got {logits!r}")
        tokens, segment_pos = _as_arrays(tokens, segment_pos)
        logits, new_blocks = self._prefill(params, tokens, segment_pos, logits)
        return logits, Cache(new_blocks, tokens.shape[1])

    def _gemv_at(self, batch: int) -> bool:
        """Whether decode steps of this batch size run decode_step_gemv (see the class)."""
        if self.impl != "optimized":
            return False
        if self.decode_gemv is None:
            return batch == 1 and jax.default_backend() == "gpu"
        return self.decode_gemv

    def _rows_for(self, params) -> list:
        """decode_gemv's row copies of the up-projections (optimized.up_rows), made once for
        the params whose up weights are these very arrays (2 GB at RecurrentGemma-2B)."""
        ups = [p["mlp_block"]["ffw_up"]["w"] for p in params["blocks"]]
        held = self._rows[0]
        if len(held) != len(ups) or any(a is not b for a, b in zip(held, ups, strict=False)):
            self._rows = ([], None)  # let the old copies go before making new ones
            self._rows = (ups, self._up_rows(params))
        return self._rows[1]

    def decode(self, params, tokens, segment_pos, cache: Cache) -> tuple[jax.Array, Cache]:
        """One step: tokens and segment_pos int [b, 1] -> logits [b, 1, v] and the new cache.

        impl="reference" leaves the input cache unchanged. impl="optimized" donates it: its
        arrays become the new cache's (updated in place on a GPU) and are deleted, so the input
        Cache must not be used again; decode from a copy (optimized.copy_cache) to keep it.
        """
        if not isinstance(cache, Cache):
            raise TypeError(
                f"cache must be the Cache returned by prefill/decode, got {type(cache).__name__}"
            )
        tokens, segment_pos = _as_arrays(tokens, segment_pos)
        if tokens.shape[1] != 1:
            raise ValueError(
                f"decode takes one token per row ([b, 1]), got shape {list(tokens.shape)}; "
                "use prefill for a prompt"
            )
        if tokens.shape[0] != cache.batch_size:
            raise ValueError(
                f"decode got a batch of {tokens.shape[0]} but the cache holds a batch of "
                f"{cache.batch_size}; prefill a cache for this batch size"
            )
        if len(cache.blocks) != self.config.depth:
            raise ValueError(
                f"cache has {len(cache.blocks)} blocks but the model has {self.config.depth}"
            )
        if self.impl == "optimized":
            from models.jax import optimized

            optimized.check_cache(self.config, cache)
        grown = [blocks.grow(self.config, c, cache.length + 1) for c in cache.blocks]
        args = [params, tokens, segment_pos, grown, np.int32(cache.length)]  # (no jnp dispatch)
        if self.impl == "optimized":  # the GEMV step's row copies, or None: XLA's matmuls
            args.append(self._rows_for(params) if self._gemv_at(tokens.shape[0]) else None)
        logits, new_blocks = self._decode(*args)
        return logits, Cache(new_blocks, cache.length + 1)


def _as_arrays(tokens, segment_pos):
    check_inputs(tokens, segment_pos)
    return _int32(tokens), _int32(segment_pos)


def _int32(x):
    """x as an int32 jax array; one that already is passes through (a decode loop calls this
    per step, and jnp.asarray is a dispatch from the host even when it changes nothing)."""
    if isinstance(x, jax.Array) and x.dtype == jnp.int32:
        return x
    return jnp.asarray(x, jnp.int32)


__all__ = ["IMPLS", "AttentionCache", "Cache", "Model", "RecurrentCache", "init", "run"]
