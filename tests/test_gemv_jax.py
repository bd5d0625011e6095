"""The JAX Pallas GEMVs (kernels/gemv_jax.py) against their references: one to three weights with
and without biases, the RMSNorm, a residual and the soft cap; the MLP's gated up-projection in
both layouts; odd K and N (not multiples of the blocks: a masked K tail and row tails) and exact
multiples (no masks at all), M = 1 and 3, float32 and bfloat16.

The oracle is the `_ref` in float64 (its inputs the kernels' inputs converted exactly, under
jax.enable_x64). Tolerance rule (as tests/test_pallas.py): relative Frobenius error against
float64 <= 1e-5 for float32 and 2e-2 for bfloat16, and every element finite and within a max-norm
bound, so that a single wrong element or an unwritten one (the interpreter fills outputs with
NaN: checked below) fails. On a CPU the kernels run in Pallas's interpreter; small block sizes
make several K tiles and row blocks per call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from util import check_kernel as check

from kernels import gemv_jax as G
from kernels import pallas as P
from models.jax import layers

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
SMALL = G.Config(block_n=4, block_k=16)  # K = 77: four full K tiles and a tail of 13
EPS = 1e-6
K = 77
NS = (45, 13, 30)  # row tails at block_n 4 and 8 (45, 13, 30 % 4 = 1, 1, 2)


def arr(rng, shape, dtype, scale=1.0):
    return jnp.asarray(scale * rng.standard_normal(shape), jnp.float32).astype(dtype)


def ref64(fn, *args, **kwargs):
    """fn on the arguments converted exactly to float64 (lists and tuples walked), as numpy."""

    def up(v):
        if isinstance(v, list | tuple):
            return type(v)(up(u) for u in v)
        if isinstance(v, jax.Array):
            return jnp.asarray(np.asarray(v.astype(jnp.float32), np.float64))
        return v

    with jax.enable_x64(True):
        out = fn(*up(args), **{k: up(v) for k, v in kwargs.items()})
        assert all(o.dtype == jnp.float64 for o in (out if isinstance(out, list) else [out]))
        return [np.asarray(o) for o in out] if isinstance(out, list) else np.asarray(out)


def gemv_inputs(rng, m, k, ns, dtype, biases, norm, residual):
    """x, weights (~unit outputs), biases (per weight True / False), norm, residual."""
    dt = DTYPES[dtype]
    x = arr(rng, (m, k), dt)
    ws = [arr(rng, (n, k), dt, k**-0.5) for n in ns]
    bs = None if biases is None else [arr(rng, (n,), dt) if on else None for n, on in zip(ns, biases, strict=True)]  # fmt: skip
    nm = (arr(rng, (k,), dt, 0.3), EPS) if norm else None
    r = arr(rng, (m, ns[0]), dt) if residual else None
    return x, ws, bs, r, nm


# (ns, biases, norm, residual, cap): one to three weights, each epilogue on and off
GEMV_CASES = {
    "plain": (NS[:1], None, False, False, None),
    "out+res": (NS[:1], [True], False, True, None),
    "logits": (NS[:1], [False], True, False, 2.0),  # cap 2: tanh well off its linear part
    "xy(norm)": (NS[:2], [True, False], True, False, None),
    "qkv": (NS, [True, True, True], False, False, None),
    "qkv(norm,cap)": (NS, [False, True, False], True, False, 2.0),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GEMV_CASES)
def test_gemv(case, dtype):
    ns, biases, norm, residual, cap = GEMV_CASES[case]
    m = 3 if case in ("out+res", "qkv") else 1
    x, ws, bs, r, nm = gemv_inputs(
        np.random.default_rng(0), m, K, ns, dtype, biases, norm, residual
    )
    out = G.gemv(x, ws, bs, r, nm, cap, config=SMALL)
    assert len(out) == len(ns)
    want = ref64(G.gemv_ref, x, ws, bs, r, nm, cap)
    for i, (o, w) in enumerate(zip(out, want, strict=True)):
        assert o.shape == (m, ns[i]) and o.dtype == DTYPES[dtype]
        check(f"{case} output {i}", o, w, dtype)


@pytest.mark.parametrize(
    ("m", "k", "ns", "config"),
    [
        (2, 64, (32, 16), SMALL),  # K and every N whole blocks: no masks anywhere
        (1, 77, (45,), G.Config(8, 32, num_warps=2, num_stages=2)),  # two tiles and a tail
        (1, 7, (45,), G.Config(4, 64)),  # K < block_k: block_k clipped to 8, one masked tile
        (2, 77, NS, None),  # the module defaults (block_k clipped to 128)
    ],
    ids=["whole-blocks", "other-config", "short-K", "default-config"],
)
def test_gemv_shapes_and_configs(m, k, ns, config):
    x, ws, bs, r, nm = gemv_inputs(
        np.random.default_rng(1), m, k, ns, "float32", [True] * len(ns), True, False
    )
    out = G.gemv(x, ws, bs, r, nm, None, config=config)
    for i, (o, w) in enumerate(zip(out, ref64(G.gemv_ref, x, ws, bs, r, nm), strict=True)):
        check(f"output {i}", o, w, "float32")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [False, True], ids=["KN", "rows"])
@pytest.mark.parametrize("bias_norm", [(False, False), (True, True)], ids=["plain", "bias+norm"])
def test_gemv_gated_up(dtype, rows, bias_norm):
    bias, norm = bias_norm
    rng = np.random.default_rng(2)
    dt, m, n = DTYPES[dtype], 2, 45
    x = arr(rng, (m, K), dt)
    w = arr(rng, (2, K, n), dt, K**-0.5)
    b = arr(rng, (2, n), dt) if bias else None
    nm = (arr(rng, (K,), dt, 0.3), EPS) if norm else None
    wk = jnp.swapaxes(w, 1, 2) if rows else w
    cfg = G.Config(4, 16) if rows else G.Config(16, 16)  # N tail: 45 % 4, 45 % 16
    out = G.gemv_gated_up(x, wk, b, nm, rows=rows, config=cfg)
    assert out.shape == (m, n) and out.dtype == dt
    check("gated up", out, ref64(G.gemv_gated_up_ref, x, w, b, nm), dtype)
    check("gated up (rows ref)", out, ref64(G.gemv_gated_up_ref, x, wk, b, nm, rows=rows), dtype)


def test_gated_up_whole_blocks_and_defaults():
    rng = np.random.default_rng(3)
    x, w = arr(rng, (1, 64), jnp.float32), arr(rng, (2, 64, 32), jnp.float32, 0.125)
    nm = (arr(rng, (64,), jnp.float32, 0.3), EPS)
    want = ref64(G.gemv_gated_up_ref, x, w, None, nm)
    check("whole blocks", G.gemv_gated_up(x, w, None, nm, config=G.Config(16, 16)), want, "float32")
    check("defaults", G.gemv_gated_up(x, w, None, nm), want, "float32")
    wr = jnp.swapaxes(w, 1, 2)
    check("rows defaults", G.gemv_gated_up(x, wr, None, nm, rows=True), want, "float32")


def test_under_jit():
    rng = np.random.default_rng(4)
    x, ws, bs, r, nm = gemv_inputs(rng, 1, K, NS[:1], "bfloat16", [True], True, True)
    f = jax.jit(lambda x, ws, bs, r, s: G.gemv(x, ws, bs, r, (s, EPS), 2.0, config=SMALL))
    check("jit", f(x, ws, bs, r, nm[0])[0], ref64(G.gemv_ref, x, ws, bs, r, nm, 2.0)[0], "bfloat16")


def test_default_config_choice(monkeypatch):
    """GEMV_CONFIG up to WIDE_ROWS rows in all, GEMV_WIDE_CONFIG above (the logits); the gated
    up-projection's per layout."""
    seen = []
    checked = G._checked_config
    monkeypatch.setattr(G, "_checked_config", lambda c, k: seen.append(c) or checked(c, k))
    monkeypatch.setattr(G, "WIDE_ROWS", 56)  # 45 + 12 rows: wide; 45 + 1: not
    rng = np.random.default_rng(5)
    x, ws, *_ = gemv_inputs(rng, 1, 16, (45, 12, 1), "float32", None, False, False)
    G.gemv(x, ws[:2])
    G.gemv(x, ws[:1] + ws[2:])
    w = arr(rng, (2, 16, 8), jnp.float32)
    G.gemv_gated_up(x, w)
    G.gemv_gated_up(x, jnp.swapaxes(w, 1, 2), rows=True)
    assert seen == [G.GEMV_WIDE_CONFIG, G.GEMV_CONFIG, G.GATED_UP_CONFIG, G.GATED_UP_ROWS_CONFIG]
    assert G._checked_config(G.GEMV_CONFIG, 77).block_k == 128  # clipped to next_pow2(K)


def test_references_are_the_models_ops():
    """gemv_ref / gemv_gated_up_ref compute what models/jax/layers.py computes, bit for bit, in
    bfloat16 (the norm in x's dtype, not float32, as layers.rms_norm)."""
    rng = np.random.default_rng(6)
    dt, d, m = jnp.bfloat16, 24, 40
    x = arr(rng, (3, d), dt)
    scale = arr(rng, (d,), dt, 0.3)
    lin = {"weight": arr(rng, (16, d), dt), "bias": arr(rng, (16,), dt)}
    res = arr(rng, (3, 16), dt)
    h = layers.rms_norm({"scale": scale}, x, EPS)
    (got,) = G.gemv_ref(x, [lin["weight"]], [lin["bias"]], res, (scale, EPS))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(layers.linear(lin, h) + res))
    (logits,) = G.gemv_ref(x, [lin["weight"]], None, None, (scale, EPS), 30.0)
    want = jnp.tanh((h @ lin["weight"].T) / 30.0) * 30.0  # models/jax/model.py's logits_from
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(want))
    mlp = layers.init_mlp_block(jax.random.PRNGKey(0), d, m, True, 1.0, dt)
    mlp["ffw_up"]["b"] = arr(rng, (2, m), dt)
    z = G.gemv_gated_up_ref(x, mlp["ffw_up"]["w"], mlp["ffw_up"]["b"], (scale, EPS))
    np.testing.assert_array_equal(
        np.asarray(layers.linear(mlp["ffw_down"], z)), np.asarray(layers.mlp_block(mlp, h))
    )


def test_an_unwritten_or_wrong_element_fails_the_check(monkeypatch):
    """The checks can fail: one wrong or NaN element is caught, and a kernel that skips the last
    row of each weight leaves it as the interpreter made it (NaN), which fails."""
    rng = np.random.default_rng(7)
    x, ws, bs, r, nm = gemv_inputs(rng, 2, K, NS[:2], "float32", [True, True], True, False)
    want = ref64(G.gemv_ref, x, ws, bs, r, nm)
    cfg = G.Config(8, 16)  # 44 and 12 rows (the kernel told one fewer) still need masks
    out = G.gemv(x, ws, bs, r, nm, config=cfg)
    check("ok", out[1], want[1], "float32")
    for bad in (out[1].at[1, 7].add(1e-3), out[1].at[0, 12].set(jnp.nan)):
        with pytest.raises(AssertionError):
            check("bad", bad, want[1], "float32")

    gemv_kernel, up_kernel = G._gemv_kernel, G._gated_up_kernel
    monkeypatch.setattr(
        G, "_gemv_kernel", lambda *a, ns, **kw: gemv_kernel(*a, ns=tuple(n - 1 for n in ns), **kw)
    )
    monkeypatch.setattr(G, "_gated_up_kernel", lambda *a, n, **kw: up_kernel(*a, n=n - 1, **kw))
    short = G.gemv(x, ws, bs, r, nm, config=cfg)
    for o, w in zip(short, want, strict=True):
        assert np.isnan(np.asarray(o)[:, -1]).all() and np.isfinite(np.asarray(o)[:, :-1]).all()
        with pytest.raises(AssertionError):
            check("short", o, w, "float32")
    w = arr(rng, (2, K, 45), jnp.float32, K**-0.5)
    short = G.gemv_gated_up(x, w, config=G.Config(16, 16))
    assert np.isnan(np.asarray(short)[:, -1]).all()
    with pytest.raises(AssertionError):
        check("short gated", short, ref64(G.gemv_gated_up_ref, x, w), "float32")


def test_input_errors():
    x = jnp.ones((1, 8), jnp.float32)
    w = jnp.ones((5, 8), jnp.float32)
    cases = [
        (lambda: G.gemv(x[0], [w]), r"x must be \[M, K\]"),
        (lambda: G.gemv(x, []), "one to three weights"),
        (lambda: G.gemv(x, [w] * 4), "one to three weights"),
        (lambda: G.gemv(x, [w.T]), r"weight 0 must be \[N, 8\]"),
        (lambda: G.gemv(x, [w, w], [None]), "2 weights but 1 biases"),
        (lambda: G.gemv(x, [w], [jnp.ones(4)]), r"bias 0 must be \[5\]"),
        (lambda: G.gemv(x, [w, w], residual=jnp.ones((1, 5))), "a residual goes with one weight"),
        (lambda: G.gemv(x, [w], residual=jnp.ones((2, 5))), r"residual must be \[1, 5\]"),
        (lambda: G.gemv(x, [w], norm=(jnp.ones(7), EPS)), r"norm's scale must be \[8\]"),
        (lambda: G.gemv(x, [w], norm=jnp.ones(8)), r"norm must be \(scale \[K\], eps\)"),
        (lambda: G.gemv(x, [w], cap=0.0), "cap must be a positive number"),
        (lambda: G.gemv(x, [w.astype(jnp.bfloat16)]), "weights must share x's dtype"),
        (lambda: G.gemv(x.astype(jnp.int32), [w]), "float32, bfloat16 or float16"),
        (lambda: G.gemv(x, [w], config=G.Config(3, 16)), "powers of two"),
        (lambda: G.gemv(x[:, :0], [w[:, :0]]), "K >= 1"),
        (lambda: G.gemv_gated_up(x, jnp.ones((2, 5, 8))), r"w must be \[2, 8, N\]"),
        (lambda: G.gemv_gated_up(x, jnp.ones((2, 8, 5)), rows=True), r"w must be \[2, N, 8\]"),
        (lambda: G.gemv_gated_up(x, jnp.ones((2, 8, 5)), jnp.ones(5)), r"b must be \[2, 5\]"),
        (lambda: G.gemv_gated_up(x, jnp.ones((2, 8, 5)), config=G.Config(16, 12)), "powers"),
    ]
    big = jax.ShapeDtypeStruct((1 << 20, 1 << 11), jnp.bfloat16)  # 2^31 elements, never made
    cases.append((lambda: G.gemv(jnp.ones((1, 1 << 11), jnp.bfloat16), [big]), "int32"))
    for fn, match in cases:
        with pytest.raises(ValueError, match=match):
            fn()
    assert G.gemv(x[:0], [w])[0].shape == (0, 5)  # M = 0: empty outputs, no launch


def test_kernels_lower_to_triton_for_cuda():
    """Without a GPU: the kernels lower through Pallas's Triton lowering for CUDA (masked 2D
    loads, tanh, rsqrt, bf16 casts), one launch per call, odd shapes, every epilogue."""
    try:
        from jax._src.pallas.triton import pallas_call_registration  # noqa: F401
    except ImportError as exc:  # pragma: no cover - a jaxlib without the Triton lowering
        pytest.skip(f"no Pallas Triton lowering here: {exc}")
    bf = jnp.bfloat16
    x, s = jnp.ones((2, K), bf), jnp.ones((K,), bf)
    ws = [jnp.ones((n, K), bf) for n in NS]
    w_up = jnp.ones((2, K, 45), bf)

    def f(x, s, ws, w_up):
        norm = (s, EPS)
        a = G.gemv(x, ws, [ws[0][:, 0], None, ws[2][:, 0]], None, norm, 30.0, interpret=False)
        (b,) = G.gemv(x, ws[:1], None, a[0], None, None, interpret=False)
        c = G.gemv_gated_up(x, w_up, w_up[:, 0], norm, interpret=False)
        d = G.gemv_gated_up(x, jnp.swapaxes(w_up, 1, 2), None, None, rows=True, interpret=False)
        return a, b, c, d

    text = jax.jit(f).trace(x, s, ws, w_up).lower(lowering_platforms=("cuda",)).as_text()
    assert text.count("griffin_gemv_gated_up") >= 2
    assert text.count("triton") >= 4  # four kernels


def test_interpret_mode_follows_the_backend_and_the_env(monkeypatch):
    monkeypatch.setenv(P.INTERPRET_ENV, "1")
    calls = []
    real = G.pl.pallas_call
    monkeypatch.setattr(G.pl, "pallas_call", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    x = jnp.ones((1, 8), jnp.float32)
    G.gemv(x, [jnp.ones((5, 8), jnp.float32)])
    assert calls[-1]["interpret"] is True
