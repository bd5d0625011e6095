"""The JAX Pallas kernels (kernels/pallas.py) against the references: outputs and gradients of the
linear scan and the fused RG-LRU on odd shapes (t and d not multiples of the blocks), with document
resets and h0, in float32 and bfloat16.

The oracle is the torch `_ref` twin in float64 (kernels.scan / kernels.rglru); the JAX references
(kernels.scan_jax / kernels.rglru_jax, float32) are checked too. Tolerance rule (as
tests/test_kernels.py): relative Frobenius error against float64 <= 1e-5 for float32 and 2e-2 for
bfloat16, and every element finite and within a max-norm bound, so that a single unwritten
(the interpreter fills outputs with NaN) or wrong element fails. On a CPU the kernels run in
Pallas's interpreter; small block sizes make several chunks and channel blocks per call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from util import check_kernel as check
from util import kernel_errors as errors

from kernels import pallas as P
from kernels.rglru import rg_lru_ref as rg_lru_torch
from kernels.rglru_jax import rg_lru_ref
from kernels.scan import linear_scan_ref as linear_scan_torch
from kernels.scan_jax import linear_scan_ref

# (b, t, d): t and d not multiples of the blocks below; one with several full chunks and a tail
SHAPES = [(2, 37, 45), (1, 1, 3), (3, 22, 70)]
SMALL = P.Config(block_t=4, block_d=16)  # several chunks and channel blocks even at these sizes
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def resets(b, t):
    """Row 0 a reset in the middle, row 1 continues a document (no reset at 0: h0 matters), the
    last row a reset at its final step."""
    pos = np.tile(np.arange(t), (b, 1))
    pos[0, t // 3 :] = np.arange(t - t // 3)
    if b > 1:
        pos[1] += 7
    if t > 1:
        pos[-1, -1] = 0
    return pos


def rand(rng, *shape, positive=False):
    return rng.uniform(0.0, 1.0, shape) if positive else rng.standard_normal(shape)


def to_jax(v, dtype):
    return jnp.asarray(v, jnp.float32).astype(dtype)


def as64(v) -> np.ndarray:
    """A JAX array's values in float64 (bf16 values exactly), for the float64 oracle."""
    return np.asarray(jnp.asarray(v, jnp.float32), np.float64)


def torch_ref(fn, primals, nondiff, cotangents):
    """The torch `_ref` in float64: outputs and gradients of sum(out * cotangent)."""
    leaves = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in primals]
    outs = fn(*leaves, *nondiff)
    loss = sum(
        (o * torch.tensor(c, dtype=torch.float64)).sum()
        for o, c in zip(outs, cotangents, strict=True)
    )
    grads = torch.autograd.grad(loss, leaves)
    return [o.detach().numpy() for o in outs], [g.numpy() for g in grads]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("with_h0", [False, True])
def test_linear_scan(shape, dtype, with_h0):
    b, t, d = shape
    rng = np.random.default_rng(0)
    a, x = (
        to_jax(rand(rng, b, t, d, positive=True), DTYPES[dtype]),
        to_jax(rand(rng, b, t, d), DTYPES[dtype]),
    )
    h0 = jnp.asarray(rand(rng, b, d), jnp.float32) if with_h0 else None
    gh, gl = rand(rng, b, t, d), rand(rng, b, d)
    primals = (a, x) + ((h0,) if with_h0 else ())

    def run(f, *p):
        out, vjp = jax.vjp(lambda *q: f(*q[:2], q[2] if with_h0 else None), *p)
        return out, vjp((to_jax(gh, out[0].dtype), jnp.asarray(gl, jnp.float32)))

    (h, h_last), grads = run(
        lambda *q: P.linear_scan(*q, fwd_config=SMALL, bwd_config=SMALL), *primals
    )
    assert h.dtype == DTYPES[dtype] and h_last.dtype == jnp.float32
    assert h.shape == (b, t, d) and h_last.shape == (b, d)
    assert all(g.dtype == p.dtype for g, p in zip(grads, primals, strict=True))

    outs64, grads64 = torch_ref(
        lambda a, x, *h: linear_scan_torch(a, x, h[0] if h else None),
        [as64(p) for p in primals],
        (),
        (gh, gl),
    )
    names = ("da", "dx", "dh0")[: len(primals)]
    check("h", h, outs64[0], dtype)
    check("h_last", h_last, outs64[1], "float32")
    for name, g, g64 in zip(names, grads, grads64, strict=True):
        check(name, g, g64, dtype)

    # the JAX reference (float32 lax.scan) agrees too: same function, same signature
    (hr, hlr), grads_r = run(linear_scan_ref, *primals)
    check("h vs jax ref", h, as64(hr), dtype)
    check("h_last vs jax ref", h_last, as64(hlr), dtype)
    for name, g, gr in zip(names, grads, grads_r, strict=True):
        check(f"{name} vs jax ref", g, as64(gr), dtype)


# the chained forward: several time tiles per row (10 at t = 37), a tail tile, channel tails,
# one tile only, and whole tiles (no masks)
CHAINED_SHAPES = [(2, 37, 45), (1, 1, 3), (3, 22, 70), (2, 16, 32)]


def scan_inputs(rng, b, t, d, dtype, with_h0=True):
    a = to_jax(rand(rng, b, t, d, positive=True), DTYPES[dtype])
    x = to_jax(rand(rng, b, t, d), DTYPES[dtype])
    h0 = jnp.asarray(rand(rng, b, d), jnp.float32) if with_h0 else None
    return a, x, h0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", CHAINED_SHAPES, ids=str)
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("publish_inclusive", [True, False])
def test_linear_scan_chained_forward(shape, dtype, with_h0, publish_inclusive):
    """The chained forward (tiles of SMALL, decoupled look-back) against the float64 oracle and
    the JAX reference. Without published inclusive prefixes (but tile 0's) every tile's
    look-back composes the transforms of all the tiles before it back to tile 0; with them it
    stops at its predecessor. The flags say which happened: 2 = prefix published, 1 = only the
    transform; the counter after them counts every tile once."""
    b, t, d = shape
    a, x, h0 = scan_inputs(np.random.default_rng(6), b, t, d, dtype, with_h0)
    state = P._state0(h0, b, d)
    h, h_last, flags, _, _ = P._scan_fwd_chained(
        a, x, state, SMALL, True, publish_inclusive, all_outputs=True
    )
    assert h.dtype == DTYPES[dtype] and h_last.dtype == jnp.float32
    assert h.shape == (b, t, d) and h_last.shape == (b, d)

    h64, hl64 = linear_scan_torch(
        *(torch.from_numpy(as64(v)) for v in (a, x)),
        None if h0 is None else torch.from_numpy(as64(h0)),
    )
    check("h", h, h64.numpy(), dtype)
    check("h_last", h_last, hl64.numpy(), "float32")
    hr, hlr = linear_scan_ref(a, x, h0)
    check("h vs jax ref", h, as64(hr), dtype)
    check("h_last vs jax ref", h_last, as64(hlr), "float32")

    n_chunks = -(-t // SMALL.block_t)
    rows = b * -(-d // SMALL.block_d)
    flags = np.asarray(flags)
    assert flags[-1] == rows * n_chunks
    tiles = flags[:-1].reshape(rows, n_chunks)
    assert (tiles[:, 0] == 2).all()
    assert (tiles[:, 1:] == (2 if publish_inclusive else 1)).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_scan_chained_gradients(dtype, monkeypatch):
    """linear_scan(fwd_chained=True): the chained forward under jit and jax.vjp (the backward as
    before), outputs and gradients as the reference; the module flag selects it too, and the
    default stays the per-channel-block kernel."""
    b, t, d = 2, 37, 45
    rng = np.random.default_rng(7)
    a, x, h0 = scan_inputs(rng, b, t, d, dtype)
    gh, gl = rand(rng, b, t, d), rand(rng, b, d)
    calls = []
    chained = P._scan_fwd_chained
    monkeypatch.setattr(P, "_scan_fwd_chained", lambda *args: calls.append(1) or chained(*args))

    def run(f):
        out, vjp = jax.vjp(f, a, x, h0)
        return out, vjp((to_jax(gh, out[0].dtype), jnp.asarray(gl, jnp.float32)))

    (h, h_last), grads = run(
        jax.jit(lambda *p: P.linear_scan(*p, fwd_config=SMALL, bwd_config=SMALL, fwd_chained=True))
    )
    assert calls, "fwd_chained=True did not take the chained forward"
    (hr, hlr), grads_r = run(linear_scan_ref)
    check("h", h, as64(hr), dtype)
    check("h_last", h_last, as64(hlr), "float32")
    for name, g, gr in zip(("da", "dx", "dh0"), grads, grads_r, strict=True):
        check(name, g, as64(gr), dtype)

    calls.clear()
    assert not P.SCAN_FWD_CHAINED  # unmeasured on a GPU: not the default
    P.linear_scan(a, x, h0, fwd_config=SMALL)
    assert not calls
    monkeypatch.setattr(P, "SCAN_FWD_CHAINED", True)
    check("h (module flag)", P.linear_scan(a, x, h0, fwd_config=SMALL)[0], as64(hr), dtype)
    assert calls
    calls.clear()
    P.linear_scan(a, x, h0, fwd_config=SMALL, fwd_chained=False)
    assert not calls


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("with_resets", [False, True])
def test_rg_lru(shape, dtype, with_resets):
    b, t, d = shape
    rng = np.random.default_rng(1)
    x, gx, ga = (to_jax(rand(rng, b, t, d), DTYPES[dtype]) for _ in range(3))
    a_param = to_jax(rand(rng, d), DTYPES[dtype])
    h0 = jnp.asarray(rand(rng, b, d), jnp.float32)
    pos = resets(b, t) if with_resets else None
    seg = None if pos is None else jnp.asarray(pos)
    gy, gl = rand(rng, b, t, d), rand(rng, b, d)
    primals = (x, gx, ga, a_param, h0)

    def run(f):
        out, vjp = jax.vjp(lambda x, gx, ga, ap, h0: f(x, gx, ga, ap, seg, h0), *primals)
        return out, vjp((to_jax(gy, out[0].dtype), jnp.asarray(gl, jnp.float32)))

    (y, h_last), grads = run(
        lambda *v: P.rg_lru(*v, fwd_config=SMALL, bwd_config=P.Config(block_t=3, block_d=32))
    )
    assert y.dtype == DTYPES[dtype] and h_last.dtype == jnp.float32
    assert all(g.dtype == p.dtype for g, p in zip(grads, primals, strict=True))

    outs64, grads64 = torch_ref(
        lambda x, gx, ga, ap, h0, seg: rg_lru_torch(x, gx, ga, ap, seg, h0),
        [as64(p) for p in primals],
        (None if pos is None else torch.from_numpy(pos),),
        (gy, gl),
    )
    names = ("dx", "dgate_x", "dgate_a", "da_param", "dh0")
    check("y", y, outs64[0], dtype)
    check("h_last", h_last, outs64[1], "float32")
    for name, g, g64 in zip(names, grads, grads64, strict=True):
        check(name, g, g64, dtype)

    (yr, hlr), grads_r = run(rg_lru_ref)
    check("y vs jax ref", y, as64(yr), dtype)
    check("h_last vs jax ref", h_last, as64(hlr), dtype)
    for name, g, gr in zip(names, grads, grads_r, strict=True):
        check(f"{name} vs jax ref", g, as64(gr), dtype)


def test_default_configs_match_the_reference():
    """The module's default block sizes (the ones the benchmarks use), odd t and d."""
    b, t, d = 2, 2 * P.SCAN_FWD_CONFIG.block_t + 3, P.SCAN_FWD_CONFIG.block_d + 5
    rng = np.random.default_rng(2)
    a, x = jnp.asarray(rand(rng, b, t, d, positive=True)), jnp.asarray(rand(rng, b, t, d))
    a, x = a.astype(jnp.float32), x.astype(jnp.float32)
    h0 = jnp.asarray(rand(rng, b, d), jnp.float32)
    dy = jnp.asarray(rand(rng, b, t, d), jnp.float32)

    def loss(f, *p):
        h, h_last = f(*p)
        return (h * dy).sum() + (h_last * h_last).sum()

    got = jax.value_and_grad(lambda *p: loss(P.linear_scan, *p), argnums=(0, 1, 2))(a, x, h0)
    ref = jax.value_and_grad(lambda *p: loss(linear_scan_ref, *p), argnums=(0, 1, 2))(a, x, h0)
    for g, r in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(ref), strict=True):
        check("scan", g, as64(r), "float32")

    # the chained forward's default tiles: three time tiles, two channel blocks
    cfg = P.SCAN_FWD_CHAINED_CONFIG
    tc, dc = 2 * cfg.block_t + 3, cfg.block_d + 5
    ac = jnp.asarray(rand(rng, b, tc, dc, positive=True), jnp.float32)
    xc = jnp.asarray(rand(rng, b, tc, dc), jnp.float32)
    h0c = jnp.asarray(rand(rng, b, dc), jnp.float32)
    hc, hlc = P.linear_scan(ac, xc, h0c, fwd_chained=True)
    hr, hlr = linear_scan_ref(ac, xc, h0c)
    check("scan chained", hc, as64(hr), "float32")
    check("scan chained h_last", hlc, as64(hlr), "float32")

    gx, ga = jnp.asarray(rand(rng, b, t, d), jnp.float32), jnp.asarray(rand(rng, b, t, d))
    ga = ga.astype(jnp.float32)
    a_param = jnp.asarray(rand(rng, d), jnp.float32)
    seg = jnp.asarray(resets(b, t))
    got = jax.value_and_grad(
        lambda *p: loss(lambda *q: P.rg_lru(*q[:4], seg, q[4]), *p), argnums=(0, 1, 2, 3, 4)
    )(x, gx, ga, a_param, h0)
    ref = jax.value_and_grad(
        lambda *p: loss(lambda *q: rg_lru_ref(*q[:4], seg, q[4]), *p), argnums=(0, 1, 2, 3, 4)
    )(x, gx, ga, a_param, h0)
    for g, r in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(ref), strict=True):
        check("rg_lru", g, as64(r), "float32")


def test_jit_and_t_equal_to_whole_chunks():
    """Under jit, t an exact multiple of block_t (no tail) and d of block_d (no channel mask)."""
    b, t, d = 2, 8, 32
    rng = np.random.default_rng(3)
    a = jnp.asarray(rand(rng, b, t, d, positive=True), jnp.float32)
    x = jnp.asarray(rand(rng, b, t, d), jnp.float32)
    h, h_last = jax.jit(lambda a, x: P.linear_scan(a, x, fwd_config=SMALL))(a, x)
    hr, hlr = linear_scan_ref(a, x)
    check("h", h, as64(hr), "float32")
    check("h_last", h_last, as64(hlr), "float32")


def test_rg_lru_sqrt_gradient_is_clipped():
    """a -> 1 (gate_a and Λ very negative: 1 - a^2 ~ 1e-26): the sqrt gradient is clipped at
    MAX_SQRT_GRADIENT as in the reference, and every gradient stays finite."""
    b, t, d = 1, 9, 40
    rng = np.random.default_rng(4)
    x = jnp.asarray(rand(rng, b, t, d), jnp.float32)
    gx = jnp.asarray(rand(rng, b, t, d), jnp.float32)
    ga = jnp.full((b, t, d), -30.0, jnp.float32)
    a_param = jnp.full((d,), -30.0, jnp.float32)

    def loss(f, *p):
        return f(*p)[0].sum()

    got = jax.grad(lambda *p: loss(lambda *q: P.rg_lru(*q, fwd_config=SMALL), *p), (0, 1, 2, 3))(
        x, gx, ga, a_param
    )
    ref = jax.grad(lambda *p: loss(rg_lru_ref, *p), (0, 1, 2, 3))(x, gx, ga, a_param)
    for name, g, r in zip(("dx", "dgate_x", "dgate_a", "da_param"), got, ref, strict=True):
        assert np.all(np.isfinite(np.asarray(g))), name
        if name != "dx":  # dx ~ sqrt(1 - a^2): 0 in float32
            assert errors(g, as64(r))[0] <= 1e-4, (name, errors(g, as64(r)))


def test_empty_sequence_and_input_errors():
    x = jnp.ones((2, 0, 8), jnp.float32)
    h, h_last = P.linear_scan(x, x)
    assert h.shape == (2, 0, 8) and h_last.shape == (2, 8)
    h0 = jnp.full((2, 8), 3.0)
    y, h_last = P.rg_lru(x, x, x, jnp.zeros(8), None, h0)
    assert y.shape == (2, 0, 8) and bool((h_last == 3.0).all())
    x = jnp.ones((2, 5, 8), jnp.float32)
    with pytest.raises(ValueError, match=r"a and x must both be \[b, t, d\]"):
        P.linear_scan(x[..., :4], x)
    with pytest.raises(ValueError, match=r"h0 must be float32 \[b, d\]"):
        P.linear_scan(x, x, jnp.zeros((2, 7)))
    with pytest.raises(ValueError, match=r"a_param must be \[d\] = \[8\]"):
        P.rg_lru(x, x, x, jnp.zeros(7))
    with pytest.raises(ValueError, match=r"segment_pos must be \[b, t\]"):
        P.rg_lru(x, x, x, jnp.zeros(8), jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(ValueError, match="block_d a power of two"):
        P.linear_scan(x, x, fwd_config=P.Config(block_t=4, block_d=24))


def test_an_unwritten_or_wrong_element_fails_the_check():
    """The checks can fail: the interpreter leaves unwritten outputs NaN, and one wrong element
    anywhere, or one NaN, is caught; a kernel that skips the last time step is caught too."""
    b, t, d = 2, 7, 20
    rng = np.random.default_rng(5)
    a = jnp.asarray(rand(rng, b, t, d, positive=True), jnp.float32)
    x = jnp.asarray(rand(rng, b, t, d), jnp.float32)
    hr = as64(linear_scan_ref(a, x)[0])
    h, _ = P.linear_scan(a, x, fwd_config=SMALL)
    check("h", h, hr, "float32")
    for bad in (h.at[1, 5, 17].add(1e-3), h.at[0, 6, 19].set(jnp.nan)):
        with pytest.raises(AssertionError):
            check("h", bad, hr, "float32")

    # a forward kernel that walks only t - 1 steps: its last row stays as the interpreter left it
    from jax.experimental import pallas as pl

    short = P.functools.partial(
        P._scan_fwd_kernel, t=t - 1, d=d, block_t=SMALL.block_t, block_d=SMALL.block_d
    )
    h_short, _ = pl.pallas_call(
        short,
        out_shape=(
            jax.ShapeDtypeStruct(x.shape, x.dtype),
            jax.ShapeDtypeStruct((b, d), jnp.float32),
        ),
        grid=(b, pl.cdiv(d, SMALL.block_d)),
        interpret=True,
    )(a, x, jnp.zeros((b, d), jnp.float32))
    assert np.isnan(np.asarray(h_short)[:, -1]).all()
    with pytest.raises(AssertionError):
        check("h", h_short, hr, "float32")


def test_a_broken_chained_forward_fails_the_check(monkeypatch):
    """The chained forward's checks can fail too: its kernel told t - 1 (the same tiles) leaves
    the last row unwritten (NaN), and a look-back that drops the carry from the tiles before is
    wrong from the second tile on."""
    b, t, d = 2, 7, 20
    rng = np.random.default_rng(8)
    a, x, h0 = scan_inputs(rng, b, t, d, "float32")
    hr = as64(linear_scan_ref(a, x, h0)[0])
    h, _ = P._scan_fwd_chained(a, x, h0, SMALL, True)
    check("h", h, hr, "float32")
    for bad in (h.at[1, 5, 17].add(1e-3), h.at[0, 6, 19].set(jnp.nan)):
        with pytest.raises(AssertionError):
            check("h", bad, hr, "float32")

    kernel = P._scan_fwd_chained_kernel
    with monkeypatch.context() as m:
        m.setattr(P, "_scan_fwd_chained_kernel", lambda *r, t, **kw: kernel(*r, t=t - 1, **kw))
        # unjitted: the jitted one would replay its trace of the intact kernel
        h_short, _ = P._scan_fwd_chained.__wrapped__(a, x, h0, SMALL, True)
    assert np.isnan(np.asarray(h_short)[:, -1]).all()
    assert np.isfinite(np.asarray(h_short)[:, :-1]).all()
    with pytest.raises(AssertionError):
        check("h", h_short, hr, "float32")

    # every tile starts from zero (h0 for tile 0): what the look-back adds is what is checked
    zero = jnp.zeros((b, d), jnp.float32)
    rows_alone = [
        linear_scan_ref(
            a[:, s : s + SMALL.block_t], x[:, s : s + SMALL.block_t], h0 if s == 0 else zero
        )[0]
        for s in range(0, t, SMALL.block_t)
    ]
    with pytest.raises(AssertionError):
        check("h", jnp.concatenate(rows_alone, axis=1), hr, "float32")


def test_interpret_mode_follows_the_backend_and_the_env(monkeypatch):
    monkeypatch.delenv(P.INTERPRET_ENV, raising=False)
    assert P.default_interpret() == (jax.default_backend() == "cpu")
    monkeypatch.setenv(P.INTERPRET_ENV, "1")
    assert P.default_interpret()
    monkeypatch.setenv(P.INTERPRET_ENV, "0")
    assert not P.default_interpret()


def test_kernels_lower_to_triton_for_cuda():
    """Without a GPU: the kernels (forward and backward) lower through Pallas's Triton lowering
    for CUDA (power-of-two blocks, supported primitives), bf16 and odd shapes."""
    b, t, d = 2, 37, 45
    x = jnp.ones((b, t, d), jnp.bfloat16)
    h0, ap, seg = jnp.zeros((b, d)), jnp.ones((d,), jnp.bfloat16), jnp.zeros((b, t), jnp.int32)

    def scan_all(a, x, h0, chained=False):
        out, vjp = jax.vjp(
            lambda *p: P.linear_scan(*p, fwd_chained=chained, interpret=False), a, x, h0
        )
        return out, vjp(out)

    def scan_chained(a, x, h0):
        return scan_all(a, x, h0, chained=True)

    def rg_all(x, gx, ga, ap, h0):
        out, vjp = jax.vjp(
            lambda *p: P.rg_lru(*p[:4], seg, p[4], interpret=False), x, gx, ga, ap, h0
        )
        return out, vjp(out)

    try:
        from jax._src.pallas.triton import pallas_call_registration  # noqa: F401
    except ImportError as exc:  # pragma: no cover - a jaxlib without the Triton lowering
        pytest.skip(f"no Pallas Triton lowering here: {exc}")
    for f, args in (
        (scan_all, (x, x, h0)),
        (scan_chained, (x, x, h0)),
        (rg_all, (x, x, x, ap, h0)),
    ):
        text = jax.jit(f).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
        assert text.count("triton") >= 2  # the forward and the backward kernel
        assert ("griffin_scan_fwd_chained" in text) == (f is scan_chained)


def test_mosaic_forward_applies_where_it_can():
    """The Mosaic GPU forward takes 16-bit inputs with d a multiple of the block (a multiple of
    128) and t of the time tile; elsewhere, and in the interpreter, the Triton-lowered forward
    runs (same result)."""
    cfg = P.MosaicConfig(block_t=8, block_d=128, stages=2)
    x = jnp.zeros((2, 16, 256), jnp.bfloat16)
    assert P.mosaic_applies(x, cfg) == (P.plgpu is not None)
    assert not P.mosaic_applies(x[:, :12], cfg)  # t not a multiple of the tile
    assert not P.mosaic_applies(x[..., :192], cfg)  # d not a multiple of the block
    assert not P.mosaic_applies(x.astype(jnp.float32), cfg)
    assert not P.mosaic_applies(x, P.MosaicConfig(8, 64, 2))  # not a warpgroup's channels
    rng = np.random.default_rng(0)
    a, x, h0 = scan_inputs(rng, 2, 16, 256, "bfloat16")
    asked = P.linear_scan(a, x, h0, fwd_mosaic=True, mosaic_config=cfg, interpret=True)
    plain = P.linear_scan(a, x, h0, interpret=True)
    for got, ref in zip(asked, plain, strict=True):
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(ref, np.float32))


def test_mosaic_forward_lowers_for_cuda():
    """Without a GPU: with fwd_mosaic, the forward lowers to a Mosaic GPU kernel for CUDA (the
    backward stays the Triton-lowered one); where it does not apply, no Mosaic kernel."""
    if P.plgpu is None:  # pragma: no cover - a jax without Mosaic GPU
        pytest.skip("no Mosaic GPU in this jax")
    cfg = P.MosaicConfig(block_t=16, block_d=128, stages=2)

    def lowered(t, d, mosaic=True, config=cfg):
        a = jnp.ones((2, t, d), jnp.bfloat16)
        h0 = jnp.zeros((2, d))

        def f(a, x, h0):
            out, vjp = jax.vjp(
                lambda *p: P.linear_scan(
                    *p, fwd_mosaic=mosaic, mosaic_config=config, interpret=False
                ),
                a, x, h0,
            )  # fmt: skip
            return out, vjp(out)

        return jax.jit(f).trace(a, a, h0).lower(lowering_platforms=("cuda",)).as_text()

    text = lowered(64, 256)
    assert "mosaic_gpu" in text and "griffin_scan_bwd" in text
    assert "mosaic_gpu" not in lowered(60, 256)  # t not a multiple of the tile
    # the default (SCAN_FWD_MOSAIC, on): the Mosaic forward with its default config; off: none
    assert P.SCAN_FWD_MOSAIC and "mosaic_gpu" in lowered(128, 256, mosaic=None, config=None)
    assert "mosaic_gpu" not in lowered(64, 256, mosaic=False)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="Mosaic GPU runs on a GPU only")
@pytest.mark.parametrize("shape", [(2, 128, 256), (1, 64, 128)], ids=str)
def test_mosaic_forward_matches_the_reference_on_gpu(shape):
    """On a GPU: the Mosaic GPU forward's h and h_last (and the gradients, through the
    Triton-lowered backward) against the float64 oracle, bf16, with h0, several time tiles."""
    b, t, d = shape
    cfg = P.MosaicConfig(block_t=32, block_d=128, stages=2)
    rng = np.random.default_rng(0)
    a, x, h0 = scan_inputs(rng, b, t, d, "bfloat16")
    gh, gl = rand(rng, b, t, d), rand(rng, b, d)
    assert P.mosaic_applies(x, cfg)
    out, vjp = jax.vjp(lambda *p: P.linear_scan(*p, fwd_mosaic=True, mosaic_config=cfg), a, x, h0)
    grads = vjp((to_jax(gh, jnp.bfloat16), jnp.asarray(gl, jnp.float32)))
    outs64, grads64 = torch_ref(
        lambda a, x, h: linear_scan_torch(a, x, h), [as64(p) for p in (a, x, h0)], (), (gh, gl)
    )
    check("h", out[0], outs64[0], "bfloat16")
    check("h_last", out[1], outs64[1], "float32")
    for name, g, g64 in zip(("da", "dx", "dh0"), grads, grads64, strict=True):
        check(name, g, g64, "bfloat16")


def test_a_kernel_called_twice_with_one_shape_is_lowered_once():
    """Each kernel call is a jitted function: a model's blocks calling the same kernel on the
    same shapes share one lowering (one Triton custom call in the module, called twice) instead
    of lowering it to Triton IR per call."""
    b, t, d = 2, 37, 45
    x, ap = jnp.ones((b, t, d), jnp.bfloat16), jnp.ones((d,), jnp.bfloat16)

    def two_blocks(x, gx, ga, ap):
        y = P.rg_lru(x, gx, ga, ap, interpret=False)[0]
        return P.rg_lru(y, gx, ga, ap, interpret=False)[0].astype(jnp.float32).sum()

    text = (
        jax.jit(jax.grad(two_blocks, argnums=(0, 1, 2, 3)))
        .trace(x, x, x, ap)
        .lower(lowering_platforms=("cuda",))
        .as_text()
    )
    calls = [line for line in text.splitlines() if "@__gpu$xla.gpu.triton(" in line]
    assert len(calls) == 2  # the forward kernel and the backward kernel, once each
    assert text.count("call @") - len(calls) >= 4  # each called twice
