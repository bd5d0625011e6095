"""Multi-query attention for a JAX decode step over the filled slots of a global cache only.

    out = decode_attention(q, k, v, start, stop)      # q [b, n, h]; k, v [b, s, h]; start, stop [b]
    out = decode_attention_ref(q, k, v, start, stop)  # plain jnp, the JAX model's math

Row i attends to slots start[i] .. stop[i] - 1 (a global cache holds token j in slot j: `start`
is the row's document start, `stop` the step's stream index + 1), one shared key/value head for
the n query heads. The JAX model's own decode step (models.jax.layers.attend over the whole
cache, masked) reads every slot of the buffer reserved for the generation: a generation of 4096
tokens from a cache of 8192 slots reads ~4x the keys and values it attends to (on the H200,
MQA-1B at batch 512: 86.8 s against the torch decoder's 35.0 s, results/h200/paper-fig1b.jsonl at
3e01547). Here the kernel is JAX's own flash-decoding Pallas kernel
(`jax.experimental.pallas.ops.gpu.decode_attention.mqa`, Triton lowering): the slots are split
across programs, each loops over its blocks of BLOCK_K slots only up to `stop` (a dynamic loop
bound: no recompile as the cache fills), keeps a running float32 softmax for all heads (padded to
16 rows of one tile) and writes its partial sum, and XLA combines the splits. The probabilities
enter the value product in the inputs' dtype, as in the reference; the partial sums are stored in
q's dtype (the kernel's), one rounding more than the reference's.

Every row must attend to at least one slot (start < stop: a decode step sees its own token). A
buffer whose slots do not split into blocks of at least 16 (s not a multiple of 16) takes the
reference. On a CPU backend (or GRIFFIN_BENCH_PALLAS_INTERPRET=1) the kernel runs in Pallas's
interpreter (kernels.pallas.default_interpret).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SPLIT_SLOTS = 512  # slots per program (split) of a long buffer
BLOCK_K = 256  # slots per iteration of a program's loop, at most
# a block's keys and values in shared memory: BLOCK_K slots of head_dim 256 asked the H200 for
# 278528 bytes (232448 there); block_k * head_dim <= BLOCK_ELEMENTS fits (139 KB at 256)
BLOCK_ELEMENTS = 32768


def decode_attention_ref(q, k, v, start, stop):
    """q [b, n, h], k, v [b, s, h], start, stop int [b] -> [b, n, h] (q's dtype): softmax over
    slots [start, stop) of each row, as models.jax.layers.attend computes it."""
    h = q.shape[-1]
    logits = jnp.einsum("bnh,bsh->bns", q, k) * h**-0.5
    slots = jnp.arange(k.shape[1])[None, :]
    mask = (slots >= start[:, None]) & (slots < stop[:, None])
    logits = jnp.where(mask[:, None], logits.astype(jnp.float32), jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bns,bsh->bnh", probs, v).astype(q.dtype)


def layout(s: int, h: int = 128) -> tuple[int, int] | None:
    """(splits, block_k) for a buffer of s slots of head_dim h, or None where the kernel does
    not apply."""
    if s % 16 or h > BLOCK_ELEMENTS // 16:
        return None
    splits = s // SPLIT_SLOTS if s % SPLIT_SLOTS == 0 else 1
    split = s // splits
    block_k = max(16, min(BLOCK_K, BLOCK_ELEMENTS // h))
    while split % block_k:
        block_k //= 2
    return splits, block_k


def decode_attention(q, k, v, start, stop, *, interpret: bool | None = None):
    """The Pallas kernel (see the module docstring); same arguments and result as the ref."""
    from jax.experimental.pallas.ops.gpu import decode_attention as pallas_decode

    from kernels.pallas import default_interpret

    b, _, h = q.shape
    if k.shape[0] != b or k.shape[2] != h or v.shape != k.shape:
        raise ValueError(
            f"k and v must be [{b}, s, {h}] (one shared head); got {list(k.shape)}, {list(v.shape)}"
        )
    shape = layout(k.shape[1], h)
    if shape is None:
        return decode_attention_ref(q, k, v, start, stop)
    splits, block_k = shape
    interpret = default_interpret() if interpret is None else bool(interpret)
    return pallas_decode.mqa(
        q,
        k.astype(q.dtype),
        v.astype(q.dtype),
        start_idx=jnp.broadcast_to(start, (b,)).astype(jnp.int32),
        kv_seq_len=jnp.broadcast_to(stop, (b,)).astype(jnp.int32),
        sm_scale=h**-0.5,
        block_k=block_k,
        k_splits=splits,
        interpret=interpret,
    ).astype(q.dtype)  # (its normalisation promotes a 16-bit result to float32)
