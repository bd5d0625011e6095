"""kernels.decode_attention_jax (JAX's flash-decoding Pallas kernel over the filled slots of a
global cache) equals its reference and does not read past the step's block; the JAX optimized
decode through it equals the reference model. The kernel runs in Pallas's interpreter here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from util import inputs, randomize_zeros_jax, rel_err

import models.jax
from kernels.decode_attention_jax import decode_attention, decode_attention_ref, layout
from models.config import preset
from models.jax import optimized


def qkv(b, n, h, s, dtype=jnp.float32, seed=0):
    kq, kk, kv = jax.random.split(jax.random.PRNGKey(seed), 3)
    return (
        jax.random.normal(kq, (b, n, h), dtype),
        jax.random.normal(kk, (b, s, h), dtype),
        jax.random.normal(kv, (b, s, h), dtype),
    )


@pytest.mark.parametrize(
    "b,n,h,s,start,stop",
    [
        (3, 2, 32, 1024, [0, 5, 700], [1024, 600, 701]),  # two splits; a row of one slot
        (2, 4, 16, 32, [0, 3], [17, 32]),  # one split, blocks of 32
        (1, 20, 32, 64, [8], [40]),  # more than 16 heads: two head tiles
    ],
)
def test_kernel_equals_reference(b, n, h, s, start, stop):
    q, k, v = qkv(b, n, h, s)
    start, stop = jnp.array(start), jnp.array(stop)
    got = decode_attention(q, k, v, start, stop)
    assert got.shape == (b, n, h) and got.dtype == q.dtype
    assert rel_err(got, decode_attention_ref(q, k, v, start, stop)) <= 1e-5
    # bfloat16 inputs against the float32 math: one rounding of the inputs and of the partials
    low = [x.astype(jnp.bfloat16) for x in (q, k, v)]
    got = decode_attention(*low, start, stop)
    assert got.dtype == jnp.bfloat16
    assert rel_err(got, decode_attention_ref(q, k, v, start, stop)) <= 2e-2


def test_kernel_does_not_read_the_blocks_past_the_step():
    """Slots from the block after `stop` on hold NaN (never written in a reserved buffer's
    future): the result is that of clean slots, so those blocks are not read."""
    b, n, h, s = 2, 2, 32, 1024
    q, k, v = qkv(b, n, h, s)
    start, stop = jnp.array([0, 40]), jnp.array([300, 520])
    _, block_k = layout(s)
    want = decode_attention_ref(q, k, v, start, stop)
    first_unread = int(-(-int(stop.max()) // block_k) * block_k)  # the block after the last stop
    k = k.at[:, first_unread:].set(jnp.nan)
    v = v.at[:, first_unread:].set(jnp.nan)
    got = decode_attention(q, k, v, start, stop)
    assert np.isfinite(np.asarray(got)).all()
    assert rel_err(got, want) <= 1e-5


def test_layout_of_a_buffer():
    assert layout(16) == (1, 16)
    assert layout(256) == (1, 256)
    assert layout(8192) == (16, 256)
    assert layout(48) == (1, 16)
    assert layout(40) is None  # not a multiple of 16: the reference
    assert layout(8192, 256) == (16, 128)  # head_dim 256: half the slots a block (shared memory)
    assert layout(32, 4096) is None


def test_decode_attention_implementation_choice(monkeypatch):
    monkeypatch.delenv(optimized.DECODE_ATTENTION_ENV, raising=False)
    assert optimized.decode_attention_implementation() == "xla"  # auto, on the CPU
    assert optimized.decode_attention_implementation(platform="gpu") == "pallas"
    monkeypatch.setenv(optimized.DECODE_ATTENTION_ENV, "xla")
    assert optimized.decode_attention_implementation(platform="gpu") == "xla"
    monkeypatch.setenv(optimized.DECODE_ATTENTION_ENV, "pallas")
    assert optimized.decode_attention_implementation() == "pallas"
    monkeypatch.setenv(optimized.DECODE_ATTENTION_ENV, "flash")
    with pytest.raises(ValueError, match="valid values: auto, xla, pallas"):
        optimized.decode_attention_implementation()


@pytest.mark.parametrize("name,gemv", [("mqa-tiny", False), ("gemma-tiny", True)])
def test_optimized_decode_through_the_kernel_equals_the_reference(name, gemv, monkeypatch):
    """Prefill then decode with the Pallas decode attention (forced) across document resets (a
    row whose document starts inside the decoded steps) equals the reference forward; the XLA
    step and the GEMV step (batch 1) alike. The global buffer grows (16 -> 32 slots) midway."""
    monkeypatch.setenv(optimized.DECODE_ATTENTION_ENV, "pallas")
    calls = []
    real = optimized.decode_attention_implementation

    def counted(*a, **kw):
        calls.append(real(*a, **kw))
        return calls[-1]

    monkeypatch.setattr(optimized, "decode_attention_implementation", counted)
    cfg = preset(name)
    ref = models.jax.Model(cfg)
    opt = models.jax.Model(cfg, impl="optimized", decode_gemv=gemv)
    params = randomize_zeros_jax(ref.init(jax.random.PRNGKey(0)), std=0.2)
    batch, t, prompt = (1, 24, 8) if gemv else (3, 24, 8)
    resets = {0: [6, 19]} if gemv else {0: [6, 19], 1: [8], 2: [12]}
    tokens, pos = inputs(batch, t, cfg.vocab_size, resets)
    tokens, pos = jnp.asarray(tokens.numpy(), jnp.int32), jnp.asarray(pos.numpy(), jnp.int32)
    full = ref.forward(params, tokens, pos)
    _, cache = opt.prefill(params, tokens[:, :prompt], pos[:, :prompt])
    for i in range(prompt, t):
        logits, cache = opt.decode(params, tokens[:, i : i + 1], pos[:, i : i + 1], cache)
        assert rel_err(logits, full[:, i : i + 1]) <= 1e-4, f"decode step {i}"
    assert "pallas" in calls  # the kernel's road was taken
