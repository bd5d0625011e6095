"""models.jax.Model(impl="optimized") (Pallas RG-LRU, causal dot_product_attention fast path,
donated decode caches) equals impl="reference" on the same params: forward, prefill + decode past
the window and across document resets, and the gradients of a training loss. Float32, tiny
presets; the Pallas kernels run in Pallas's interpreter on the CPU (slow: short sequences)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from util import inputs, randomize_zeros_jax, rel_err

import models.jax
from models.config import RECURRENT, preset
from models.jax import optimized
from models.jax.model import run

NAMES = ["hawk-tiny", "griffin-tiny", "mqa-tiny", "recurrentgemma-tiny", "gemma-tiny"]
# local attention without recurrent blocks (no Pallas kernel to interpret: quick to compile)
LOCAL_MQA = dataclasses.replace(preset("mqa-tiny"), name="mqa-local-tiny", attention_window=8)
TOL = 1e-4
# Lengths are multiples of the kernel's time chunk (8): a tail chunk would be unrolled again in
# every interpreted kernel and double its compile time (kernels/pallas.py tests the tails).
T = 24  # past every tiny window (8)
PROMPT = 8
RESETS = {0: [6, 19], 1: [8]}  # row 0: in the prompt and inside decoding; row 1: first decoded


def config(name):
    return LOCAL_MQA if name == LOCAL_MQA.name else preset(name)


@functools.cache
def models_for(name):
    """(reference Model, optimized Model, params): built once per preset, so the jitted functions
    of one test are reused (compiled) by the next."""
    cfg = config(name)
    ref = models.jax.Model(cfg)
    opt = models.jax.Model(cfg, impl="optimized")
    params = randomize_zeros_jax(ref.init(jax.random.PRNGKey(0)), std=0.2)
    return ref, opt, params


def data(batch, t, name, resets=None, seed=0):
    tokens, pos = inputs(batch, t, config(name).vocab_size, resets, seed=seed)
    return jnp.asarray(tokens.numpy(), jnp.int32), jnp.asarray(pos.numpy(), jnp.int32)


@pytest.fixture
def spy(monkeypatch):
    """Counts the calls (at trace time) of the optimized ops and of the reference ones."""
    calls = {"pallas": 0, "causal": 0, "rg_lru_ref": 0}

    def wrap(module, attr, key):
        fn = getattr(module, attr)

        def counted(*args, **kw):
            calls[key] += 1
            return fn(*args, **kw)

        monkeypatch.setattr(module, attr, counted)

    from models.jax import blocks

    wrap(optimized.pallas, "rg_lru", "pallas")
    wrap(optimized, "causal_attention", "causal")
    wrap(blocks, "rg_lru_ref", "rg_lru_ref")
    return calls


@pytest.mark.parametrize("name", NAMES)
def test_forward_equals_reference(name, spy):
    ref, opt, params = models_for(name)
    tokens, pos = data(3, T, name, RESETS)
    want = ref.forward(params, tokens, pos)
    spy.update(pallas=0, causal=0, rg_lru_ref=0)
    assert rel_err(opt.forward(params, tokens, pos), want) <= TOL
    n_recurrent = sum(kind == RECURRENT for kind in config(name).block_types)
    assert spy == {"pallas": n_recurrent, "causal": 0, "rg_lru_ref": 0}  # resets: no fast path


@pytest.mark.parametrize("name", NAMES)
def test_prefill_then_decode_equals_reference_forward(name):
    ref, opt, params = models_for(name)
    tokens, pos = data(3, T, name, RESETS)
    full = ref.forward(params, tokens, pos)
    logits, cache = opt.prefill(params, tokens[:, :PROMPT], pos[:, :PROMPT])
    assert rel_err(logits, full[:, :PROMPT]) <= TOL
    for t in range(PROMPT, T):
        logits, cache = opt.decode(params, tokens[:, t : t + 1], pos[:, t : t + 1], cache)
        assert logits.shape == (3, 1, config(name).vocab_size)
        assert rel_err(logits, full[:, t : t + 1]) <= TOL, f"decode step {t}"
    assert cache.length == T


@pytest.mark.parametrize(
    "name,batch", [("griffin-tiny", 1), ("recurrentgemma-tiny", 2), ("gemma-tiny", 1)]
)
def test_decode_gemv_step_equals_reference_forward(name, batch):
    """Model(decode_gemv=True): the decode step of Pallas GEMVs (kernels.gemv_jax, norms, biases,
    residuals, gelu·mul and the soft cap fused) across resets and past the window, local and
    global attention, one row and two."""
    ref, _, params = models_for(name)
    opt = models.jax.Model(config(name), impl="optimized", decode_gemv=True)
    resets = {row: at for row, at in RESETS.items() if row < batch}
    tokens, pos = data(batch, T, name, resets)
    full = ref.forward(params, tokens, pos)
    _, cache = opt.prefill(params, tokens[:, :PROMPT], pos[:, :PROMPT])
    for t in range(PROMPT, T):
        logits, cache = opt.decode(params, tokens[:, t : t + 1], pos[:, t : t + 1], cache)
        assert logits.shape == (batch, 1, config(name).vocab_size)
        assert rel_err(logits, full[:, t : t + 1]) <= TOL, f"decode step {t}"
    # the up-projections' row copies: made once per params, remade for other up weights
    rows = opt._rows[1]
    opt.decode(params, tokens[:, :1], pos[:, :1], opt.prefill(params, tokens[:, :1], pos[:, :1])[1])
    assert opt._rows[1] is rows
    other = jax.tree_util.tree_map(lambda a: a, params)  # new containers, the same arrays
    for p in other["blocks"]:
        p["mlp_block"]["ffw_up"]["w"] = -p["mlp_block"]["ffw_up"]["w"]
    _, cache = opt.prefill(other, tokens[:, :PROMPT], pos[:, :PROMPT])
    logits, _ = opt.decode(
        other, tokens[:, PROMPT : PROMPT + 1], pos[:, PROMPT : PROMPT + 1], cache
    )
    want = ref.forward(other, tokens[:, : PROMPT + 1], pos[:, : PROMPT + 1])[:, -1:]
    assert opt._rows[1] is not rows and rel_err(logits, want) <= TOL
    with pytest.raises(ValueError, match="decode_gemv=True needs impl='optimized'"):
        models.jax.Model(config(name), decode_gemv=True)
    with pytest.raises(ValueError, match="decode_gemv must be None, True or False"):
        models.jax.Model(config(name), impl="optimized", decode_gemv="yes")
    default = models.jax.Model(config(name), impl="optimized")
    assert not default._gemv_at(1) and not default._gemv_at(2)  # on a GPU: batch 1 only


@pytest.mark.parametrize(
    "name, t, resets, causal",
    [
        ("mqa-local-tiny", 9, None, True),  # t - 1 <= window (8), one document: plain causal
        ("mqa-local-tiny", 20, None, True),  # the window cuts: causal + local_window_size
        ("mqa-local-tiny", 20, {1: [4]}, False),  # a document starts inside: the reference mask
        ("mqa-tiny", 20, None, True),  # global attention, one document
        ("gemma-tiny", 20, {0: [13]}, False),
        ("griffin-tiny", 16, None, True),  # with the Pallas RG-LRU in between
    ],
)
def test_causal_fast_path_is_used_for_one_document(name, t, resets, causal, spy):
    cfg = config(name)
    ref, opt, params = models_for(name)
    tokens, pos = data(2, t, name, resets, seed=3)
    want = ref.forward(params, tokens, pos)
    spy.update(pallas=0, causal=0, rg_lru_ref=0)
    assert rel_err(opt.forward(params, tokens, pos), want) <= TOL
    n_recurrent = sum(kind == RECURRENT for kind in cfg.block_types)
    n_attention = cfg.depth - n_recurrent
    assert spy == {"pallas": n_recurrent, "causal": n_attention if causal else 0, "rg_lru_ref": 0}
    # a prompt of one document prefills on the fast path too, and decodes from there
    if causal and cfg.name != "griffin-tiny":
        tokens, pos = data(2, T, name, seed=4)
        full = ref.forward(params, tokens, pos)
        logits, cache = opt.prefill(params, tokens[:, :t], pos[:, :t])
        assert rel_err(logits, full[:, :t]) <= TOL
        for i in range(t, T):
            logits, cache = opt.decode(params, tokens[:, i : i + 1], pos[:, i : i + 1], cache)
            assert rel_err(logits, full[:, i : i + 1]) <= TOL, f"decode step {i}"


def _loss(cfg, impl, one_document):
    def loss(params, tokens, pos, targets):
        logits = run(
            cfg, params, tokens, pos, None, 0, False, impl=impl, one_document=one_document
        )[0]
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))

    return jax.jit(jax.value_and_grad(loss))


@pytest.mark.parametrize(
    "name, resets",
    [
        ("hawk-tiny", {0: [9]}),
        ("griffin-tiny", {0: [9]}),
        ("mqa-tiny", None),  # causal fast path, differentiated
        ("mqa-local-tiny", None),  # causal fast path with the window, differentiated
        ("recurrentgemma-tiny", {1: [5]}),
        ("gemma-tiny", {0: [9]}),
    ],
)
def test_training_gradients_equal_reference(name, resets):
    cfg = config(name)
    _, _, params = models_for(name)
    tokens, pos = data(2, 16, name, resets, seed=2)
    targets = jnp.roll(tokens, -1, axis=1)
    one_doc = optimized.one_document(pos)
    assert one_doc == (resets is None)
    loss_ref, grads_ref = _loss(cfg, "reference", False)(params, tokens, pos, targets)
    loss_opt, grads_opt = _loss(cfg, "optimized", one_doc)(params, tokens, pos, targets)
    assert rel_err(loss_opt, loss_ref) <= TOL
    flat_ref = jax.tree_util.tree_leaves_with_path(grads_ref)
    flat_opt = jax.tree_util.tree_leaves(grads_opt)
    assert len(flat_ref) == len(flat_opt)
    for (path, g_ref), g_opt in zip(flat_ref, flat_opt, strict=True):
        key = jax.tree_util.keystr(path)
        assert bool(jnp.any(g_ref != 0)), key
        assert rel_err(g_opt, g_ref) <= TOL, key


def test_decode_consumes_its_cache_and_a_copy_replays():
    _, opt, params = models_for("griffin-tiny")
    tokens, pos = data(3, T, "griffin-tiny", RESETS)
    _, cache = opt.prefill(params, tokens[:, :PROMPT], pos[:, :PROMPT])
    keep = optimized.copy_cache(cache)
    step = tokens[:, PROMPT : PROMPT + 1], pos[:, PROMPT : PROMPT + 1]
    first, after = opt.decode(params, *step, cache)
    assert all(a.is_deleted() for a in jax.tree_util.tree_leaves(cache))  # donated
    assert not any(a.is_deleted() for a in jax.tree_util.tree_leaves(after))
    again, _ = opt.decode(params, *step, keep)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))


def test_reference_path_stays_functional():
    ref, _, params = models_for("griffin-tiny")
    tokens, pos = data(3, T, "griffin-tiny", RESETS)
    _, cache = ref.prefill(params, tokens[:, :PROMPT], pos[:, :PROMPT])
    step = tokens[:, PROMPT : PROMPT + 1], pos[:, PROMPT : PROMPT + 1]
    first, _ = ref.decode(params, *step, cache)
    assert not any(a.is_deleted() for a in jax.tree_util.tree_leaves(cache))
    again, _ = ref.decode(params, *step, cache)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))


def test_same_params_and_cache_layouts():
    ref, opt, params = models_for("griffin-tiny")
    fresh = opt.init(jax.random.PRNGKey(0))
    assert jax.tree_util.tree_structure(fresh) == jax.tree_util.tree_structure(params)
    shapes = jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), fresh)
    assert shapes == jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), params)
    tokens, pos = data(3, T, "griffin-tiny", RESETS)
    _, ref_cache = ref.prefill(params, tokens[:, :PROMPT], pos[:, :PROMPT])
    _, opt_cache = opt.prefill(params, tokens[:, :PROMPT], pos[:, :PROMPT])
    window = preset("griffin-tiny").attention_window
    assert opt_cache.blocks[2].k.shape[1] == window + 1  # ring of the window and the query
    with pytest.raises(ValueError, match="window \\+ 1"):
        opt.decode(params, tokens[:, PROMPT : PROMPT + 1], pos[:, PROMPT : PROMPT + 1], ref_cache)


def test_bad_impl_is_a_clear_error():
    assert models.jax.IMPLS == ("reference", "optimized")
    with pytest.raises(ValueError, match="unknown impl 'fast'; valid impls: reference, optimized"):
        models.jax.Model(preset("hawk-tiny"), impl="fast")


def test_attention_implementation_choice(monkeypatch):
    monkeypatch.delenv(optimized.ATTENTION_ENV, raising=False)
    assert optimized.attention_implementation(jnp.bfloat16) == "xla"  # auto, on the CPU
    assert optimized.attention_implementation(jnp.bfloat16, platform="gpu") == "cudnn"
    assert optimized.attention_implementation(jnp.float32, platform="gpu") == "xla"
    monkeypatch.setenv(optimized.ATTENTION_ENV, "xla")
    assert optimized.attention_implementation(jnp.bfloat16, platform="gpu") == "xla"
    monkeypatch.setenv(optimized.ATTENTION_ENV, "cudnn")
    assert optimized.attention_implementation(jnp.bfloat16) == "cudnn"
    assert optimized.attention_implementation(jnp.float32) == "xla"  # cuDNN has no float32
    monkeypatch.setenv(optimized.ATTENTION_ENV, "flash")
    with pytest.raises(ValueError, match="valid values: auto, xla, cudnn"):
        optimized.attention_implementation(jnp.bfloat16)


def test_one_document_is_decided_on_the_host_and_traced_inputs_take_the_general_path():
    _, pos = data(2, 12, "mqa-tiny")
    assert optimized.one_document(pos)
    assert optimized.one_document(pos.at[:, 0].set(5))  # a continuation: still one document
    assert not optimized.one_document(pos.at[1, 7].set(0))
    seen = []
    jax.jit(lambda p: seen.append(optimized.one_document(p)) or p)(pos)
    assert seen == [False]


def test_model_inside_a_users_jit_takes_the_general_path(spy):
    ref, _, params = models_for("mqa-tiny")
    opt = models.jax.Model(preset("mqa-tiny"), impl="optimized")
    tokens, pos = data(2, 12, "mqa-tiny")
    spy.update(pallas=0, causal=0, rg_lru_ref=0)
    got = jax.jit(opt.forward)(params, tokens, pos)
    assert spy["causal"] == 0
    assert rel_err(got, ref.forward(params, tokens, pos)) <= TOL
    assert rel_err(opt.forward(params, tokens, pos), got) <= TOL
    assert spy["causal"] == preset("mqa-tiny").depth  # called directly: the fast path


@pytest.mark.parametrize(
    "name, impl, checkpoint",
    [
        ("griffin-tiny", "reference", False),  # depth 4 = one repeat of (R, R, A) and one block
        ("griffin-tiny", "reference", True),
        ("hawk-tiny", "reference", True),  # three repeats of (R,), no remainder
        ("mqa-tiny", "reference", False),
        ("griffin-tiny", "optimized", True),
    ],
)
def test_stacked_blocks_equal_the_unrolled_loss_and_gradients(name, impl, checkpoint):
    from bench.impls.base import chunked_nll
    from models.jax.model import logits_from, run_stacked, stack_blocks

    cfg = config(name)
    _, _, params = models_for(name)
    tokens, pos = data(2, 16, name, {0: [9]}, seed=3)
    targets = jnp.roll(tokens, -1, axis=1)

    def nll(logits):
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))

    def stacked(p):  # differentiated through stack_blocks: gradients in the unrolled layout
        sp = stack_blocks(cfg, p)
        if not checkpoint:
            return nll(run_stacked(cfg, sp, tokens, pos, impl=impl))
        # as the checkpointed training step: features, then the loss in chunks (32 tokens: 4)
        h = run_stacked(cfg, sp, tokens, pos, impl=impl, checkpoint=True, features=True)
        return chunked_nll(lambda x: logits_from(cfg, sp, x), h, targets, chunk_tokens=8)

    sp = stack_blocks(cfg, params)
    period = len(cfg.block_pattern)
    assert len(sp["groups"]) == (period if cfg.depth >= period else 0)
    assert len(sp["rest"]) == cfg.depth % period
    loss_ref, grads_ref = _loss(cfg, impl, False)(params, tokens, pos, targets)
    loss, grads = jax.jit(jax.value_and_grad(stacked))(params)
    assert rel_err(loss, loss_ref) <= TOL
    flat_ref = jax.tree_util.tree_leaves_with_path(grads_ref)
    flat = jax.tree_util.tree_leaves(grads)
    assert len(flat_ref) == len(flat)
    for (path, g_ref), g in zip(flat_ref, flat, strict=True):
        assert rel_err(g, g_ref) <= TOL, jax.tree_util.keystr(path)


@pytest.mark.parametrize(
    "cap, dtype", [(0.0, jnp.float32), (30.0, jnp.float32), (5.0, jnp.bfloat16)]
)
def test_linear_cross_entropy_equals_the_loss_of_the_logits(cap, dtype):
    """The fused chunked loss (gradients in the forward pass) against autodiff of the plain
    cross-entropy of cap(x @ w.T): the loss and both gradients, over chunks that divide n
    unevenly (n = 24, chunk 16: gcd 8, three chunks)."""
    from models.jax.optimized import linear_cross_entropy

    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    n, d, v = 24, 16, 40
    x = jax.random.normal(k1, (n, d)).astype(dtype)
    w = (jax.random.normal(k2, (v, d)) * 0.5).astype(dtype)
    targets = jax.random.randint(k3, (n,), 0, v)

    def plain(x, w):
        z = (x @ w.T).astype(jnp.float32)
        z = jnp.tanh(z / cap) * cap if cap else z
        logp = jax.nn.log_softmax(z, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, targets[:, None], axis=-1))

    fused = jax.jit(lambda x, w: linear_cross_entropy(x, w, targets, cap, 16))
    (lr, (gxr, gwr)) = jax.value_and_grad(plain, argnums=(0, 1))(x, w)
    (lf, (gxf, gwf)) = jax.value_and_grad(fused, argnums=(0, 1))(x, w)
    tol = TOL if dtype == jnp.float32 else 2e-2
    assert lf.dtype == jnp.float32 and rel_err(lf, lr) <= tol
    assert gxf.dtype == dtype and gwf.dtype == dtype
    assert rel_err(gxf, gxr) <= tol and rel_err(gwf, gwr) <= tol
    # a scaled cotangent scales the gradients (the backward multiplies what the forward made)
    g2 = jax.grad(lambda x: 3.0 * fused(x, w))(x)
    assert rel_err(g2, 3.0 * gxf) <= tol


def test_the_optimized_training_loss_equals_the_reference_logits_loss():
    """chunked_loss on the features equals the cross-entropy of logits_from on them, through
    the final norm, for a model with a soft cap (griffin-tiny's blocks)."""
    from models.jax.model import run
    from models.jax.optimized import chunked_loss

    cfg = dataclasses.replace(config("griffin-tiny"), logits_soft_cap=3.0)  # a cap that bites
    _, _, params = models_for("griffin-tiny")
    tokens, pos = data(2, 16, "griffin-tiny", {}, seed=5)
    targets = jnp.roll(tokens, -1, axis=1)

    def via_logits(p):
        logits = run(cfg, p, tokens, pos, None, 0, False)[0]
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))

    def fused(p):
        h = run(cfg, p, tokens, pos, None, 0, False, "features")[0]
        return chunked_loss(cfg, p, h, targets, chunk_tokens=8)

    loss_ref, grads_ref = jax.value_and_grad(via_logits)(params)
    loss, grads = jax.jit(jax.value_and_grad(fused))(params)
    assert rel_err(loss, loss_ref) <= TOL
    for (path, g_ref), g in zip(
        jax.tree_util.tree_leaves_with_path(grads_ref),
        jax.tree_util.tree_leaves(grads),
        strict=True,
    ):
        assert rel_err(g, g_ref) <= TOL, jax.tree_util.keystr(path)
