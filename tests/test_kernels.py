"""Every Triton kernel against its `_ref` twin computed in float64: outputs and gradients, odd
shapes (t and d not multiples of the blocks), document resets and h0, float32 and bfloat16.
Outputs are poisoned (NaN) before each call, so an element a kernel fails to write fails the test.
On a machine without a GPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1)."""

import subprocess
import sys

import pytest
import torch

from kernels.conv1d import conv1d, conv1d_ref, conv1d_step, conv1d_step_ref
from kernels.cross_entropy import xent_grad_, xent_grad_ref
from kernels.decode_attention import mqa_decode, mqa_decode_ref
from kernels.fused import gelu_mul, gelu_mul_ref, rms_norm, rms_norm_ref
from kernels.gemv import gemv, gemv_gated_up, gemv_gated_up_ref, gemv_ref
from kernels.recurrent_step import rg_lru_gated_step, rg_lru_gated_step_ref
from kernels.rglru import rg_lru, rg_lru_ref, rg_lru_step, rg_lru_step_ref
from kernels.scan import linear_scan, linear_scan_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SHAPES = [(2, 37, 45), (1, 1, 3), (3, 130, 70)]  # (b, t, d): blocks are 32..64 wide
DTYPES = [torch.float32, torch.bfloat16]
# relative Frobenius error against float64: float32 arithmetic lands far below 1e-5; bfloat16
# inputs/outputs carry their rounding (2^-9 relative) into outputs and gradients
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """torch.empty / empty_like return NaN-filled (floats) or -1-filled (ints) tensors."""
    empty, empty_like = torch.empty, torch.empty_like

    def fill(t):
        return t.fill_(float("nan") if t.dtype.is_floating_point else -1)

    monkeypatch.setattr(torch, "empty", lambda *a, **k: fill(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: fill(empty_like(*a, **k)))


def rel(out, ref) -> float:
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    assert not torch.isnan(out).any(), "NaN in the output: an element was not written"
    denom = ref.norm()
    return float((out - ref).norm() / denom) if denom > 0 else float(out.norm())


def randn_fn(g, dtype):
    """t(*shape, scale=1.0): standard normals from generator g, times scale, as dtype on DEVICE."""

    def t(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(DEVICE, dtype)

    return t


def leaf(*shape, dtype, scale=1.0, positive=False):
    x = torch.rand(*shape) if positive else torch.randn(*shape) * scale
    return x.to(DEVICE, dtype).requires_grad_()


def resets(b, t):
    """Segment positions: row 0 a reset in the middle, row 1 continues a document (no reset at 0,
    so h0 matters), the last row a reset at its final step."""
    pos = torch.arange(t).repeat(b, 1)
    pos[0, t // 3 :] = torch.arange(t - t // 3)
    if b > 1:
        pos[1] += 7
    if t > 1:
        pos[-1, -1] = 0
    return pos.to(DEVICE)


def check_grads(pairs, dtype):
    for name, (got, ref) in pairs.items():
        assert rel(got, ref) <= TOL[dtype], f"{name}: {rel(got, ref):.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("with_h0", [False, True])
def test_linear_scan(shape, dtype, with_h0):
    b, t, d = shape
    a, x = leaf(b, t, d, dtype=dtype, positive=True), leaf(b, t, d, dtype=dtype)
    h0 = leaf(b, d, dtype=torch.float32) if with_h0 else None
    h, h_last = linear_scan(a, x, h0)
    ref_in = [v.detach().double().requires_grad_() if v is not None else None for v in (a, x, h0)]
    h_ref, last_ref = linear_scan_ref(*ref_in)
    assert h.dtype == dtype and h_last.dtype == torch.float32
    assert rel(h, h_ref) <= TOL[dtype] and rel(h_last, last_ref) <= TOL[torch.float32]
    gh, gl = torch.randn(b, t, d, device=DEVICE), torch.randn(b, d, device=DEVICE)
    ((h.float() * gh).sum() + (h_last * gl).sum()).backward()
    ((h_ref * gh.double()).sum() + (last_ref * gl.double()).sum()).backward()
    pairs = {"da": (a.grad, ref_in[0].grad), "dx": (x.grad, ref_in[1].grad)}
    if with_h0:
        pairs["dh0"] = (h0.grad, ref_in[2].grad)
    check_grads(pairs, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("with_resets", [False, True])
def test_rg_lru(shape, dtype, with_resets):
    b, t, d = shape
    x, gx, ga = (leaf(b, t, d, dtype=dtype) for _ in range(3))
    a_param = leaf(d, dtype=dtype)
    h0 = leaf(b, d, dtype=torch.float32)
    pos = resets(b, t) if with_resets else None
    y, h_last = rg_lru(x, gx, ga, a_param, pos, h0)
    ref_in = [v.detach().double().requires_grad_() for v in (x, gx, ga, a_param, h0)]
    y_ref, last_ref = rg_lru_ref(*ref_in[:4], pos, ref_in[4])
    assert rel(y, y_ref) <= TOL[dtype] and rel(h_last, last_ref) <= TOL[torch.float32]
    gy, gl = torch.randn(b, t, d, device=DEVICE), torch.randn(b, d, device=DEVICE)
    ((y.float() * gy).sum() + (h_last * gl).sum()).backward()
    ((y_ref * gy.double()).sum() + (last_ref * gl.double()).sum()).backward()
    names = ("dx", "dgate_x", "dgate_a", "da_param", "dh0")
    got = (x.grad, gx.grad, ga.grad, a_param.grad, h0.grad)
    check_grads({n: (g, r.grad) for n, g, r in zip(names, got, ref_in, strict=True)}, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("ns", [(45,), (37, 70), (9, 20, 33)], ids=str)
def test_gemv_conv_step(ns, dtype):
    """The Conv1D decode step on the last weight's output (a recurrent block's x branch), its
    state shifted in place as conv1d_step_ref does; row 0 continues its document, row 1 starts
    one (its old state is cut)."""
    g = torch.Generator().manual_seed(sum(ns))

    t = randn_fn(g, dtype)

    k, n = 70, ns[-1]
    x, ws, norm = t(2, k, scale=3.0), [t(m, k, scale=k**-0.5) for m in ns], (t(k, scale=0.5), 1e-6)
    biases = [t(m) for m in ns]
    cw, cb, state = t(4, n, scale=0.5), t(n), t(2, 3, n)
    reset = torch.tensor([False, True], device=DEVICE)
    state_ref = state.double()
    ys = gemv(x, ws, biases, None, norm, None, conv=(cw, cb, state, reset))
    refs = gemv_ref(
        x.double(), [w.double() for w in ws], [b.double() for b in biases], None,
        (norm[0].double(), norm[1]), None, conv=(cw.double(), cb.double(), state_ref, reset),
    )  # fmt: skip
    for y, ref in zip(ys, refs, strict=True):
        assert y.dtype == dtype and rel(y, ref) <= TOL[dtype]
    assert rel(state, state_ref) <= TOL[dtype]
    assert not state[1, :2].any()  # the reset row's shifted state: its old values are cut
    with pytest.raises(ValueError, match="the conv state must be a contiguous"):
        gemv(x, ws, biases, None, norm, None, conv=(cw, cb, state[:, :2], reset))


@pytest.mark.parametrize("name", ["gemv_conv", "rg_lru_gated_step", "mqa_decode_write"], ids=str)
def test_state_writing_ops_functionalize(name):
    """The operators that write decode state in place are ones torch.compile can functionalize
    (auto_functionalized): a list return, or an output aliasing an input, makes Inductor refuse
    the whole step, and the decoder falls back to an eager one (as the H100 showed for the
    list-returning gemv_conv)."""
    from torch._higher_order_ops.auto_functionalize import can_auto_functionalize

    op = getattr(torch.ops.griffin_bench, name).default
    assert op._schema.is_mutable and can_auto_functionalize(op), str(op._schema)


def test_gemv_conv_op_compiles():
    """gemv_conv as the compiled decode step calls it: traced and functionalized (aot_eager, one
    graph) it gives the eager outputs and writes the same conv state."""
    from kernels.gemv import gemv_conv_op

    g = torch.Generator().manual_seed(5)
    t = randn_fn(g, torch.float32)
    k, n = 40, 24
    x, ws, bs = t(1, k), [t(n, k), t(n, k)], [t(n), t(n)]
    scale, cw, cb, state = t(k), t(4, n), t(n), t(1, 3, n)
    reset = torch.tensor([False], device=DEVICE)

    def step(x, state):
        y, xs = gemv_conv_op(x, ws, bs, scale, 1e-6, cw, cb, state, reset)
        return y * 2, xs

    state_eager = state.clone()
    want = step(x, state_eager)
    got = torch.compile(step, backend="aot_eager", fullgraph=True)(x, state)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(state, state_eager)
    with pytest.raises(ValueError, match="two weights"):
        gemv_conv_op(x, ws[:1], bs[:1], scale, 1e-6, cw, cb, state, reset)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("even", [True, False], ids=["unmasked", "masked"])
def test_rg_lru_forward_whole_tiles(dtype, even, monkeypatch):
    """The forward where t and d are multiples of its block (kernels.rglru.EVEN_TILES: the
    unmasked variant) and the same shapes through the masked one: both equal the float64 ref,
    with resets and h0."""
    from kernels import rglru

    monkeypatch.setattr(rglru, "EVEN_TILES", even)
    bt, bd = rglru.FWD_CONFIG[:2]
    b, t, d = 2, 2 * bt, 2 * bd
    x, gx, ga = (leaf(b, t, d, dtype=dtype).detach() for _ in range(3))
    a_param = leaf(d, dtype=dtype).detach()
    h0 = torch.randn(b, d, device=DEVICE)
    pos = resets(b, t)
    y, h_last = rglru._rglru_forward(x, gx, ga, a_param, pos, h0)
    y_ref, last_ref = rg_lru_ref(
        x.double(), gx.double(), ga.double(), a_param.double(), pos, h0.double()
    )
    assert y.dtype == dtype and rel(y, y_ref) <= TOL[dtype]
    assert rel(h_last, last_ref) <= TOL[torch.float32]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("with_h0", [False, True])
def test_rg_lru_time_parallel_forward(dtype, with_h0, monkeypatch):
    """Without gradients and with few sequences, rg_lru splits time into chunks (two passes and
    a scan over chunk states): same outputs as the reference, resets inside chunks, at a chunk's
    first step and at the last step."""
    import kernels.rglru as rglru

    monkeypatch.setattr(rglru, "MIN_CHUNK", 8)
    calls = []
    parallel = rglru._rglru_forward_time_parallel
    monkeypatch.setattr(
        rglru,
        "_rglru_forward_time_parallel",
        lambda *a: calls.append(a[-1]) or parallel(*a),
    )
    b, t, d = 2, 96, 45
    x, gx, ga = (leaf(b, t, d, dtype=dtype).detach() for _ in range(3))
    a_param = leaf(d, dtype=dtype).detach()
    h0 = leaf(b, d, dtype=torch.float32).detach() if with_h0 else None
    pos = resets(b, t)  # row 1: a reset at its last step, h0 carried in otherwise
    pos[0, 24:] = torch.arange(t - 24)  # row 0: at 24, a chunk's first step (chunks of 12),
    pos[0, 50:] = torch.arange(t - 50)  # and at 50, inside a chunk
    with torch.no_grad():
        y, h_last = rg_lru(x, gx, ga, a_param, pos, h0)
    assert calls == [8]  # 2 rows x the channel blocks x 8 chunks; 12 steps each
    assert rglru._time_chunks(8, 4096, 2560, rglru.FWD_CONFIG[1]) == 1  # enough programs: plain
    ref_in = [v.double() if v is not None else None for v in (x, gx, ga, a_param, h0)]
    y_ref, last_ref = rg_lru_ref(*ref_in[:4], pos, ref_in[4])
    assert y.dtype == dtype and h_last.dtype == torch.float32
    assert rel(y, y_ref) <= TOL[dtype] and rel(h_last, last_ref) <= TOL[torch.float32]


def test_rg_lru_sqrt_gradient_is_clipped():
    """a -> 1 (gate_a and Λ very negative: 1 - a^2 ~ 1e-26): the sqrt gradient is clipped at
    1000 as in the reference, and stays finite."""
    b, t, d = 1, 9, 40
    x = torch.randn(b, t, d, device=DEVICE, requires_grad=True)
    gx = torch.randn(b, t, d, device=DEVICE, requires_grad=True)
    ga = torch.full((b, t, d), -30.0, device=DEVICE, requires_grad=True)
    a_param = torch.full((d,), -30.0, device=DEVICE, requires_grad=True)
    y, _ = rg_lru(x, gx, ga, a_param)
    y.sum().backward()
    ref_in = [v.detach().double().requires_grad_() for v in (x, gx, ga, a_param)]
    rg_lru_ref(*ref_in)[0].sum().backward()
    for got, ref in zip((gx.grad, ga.grad, a_param.grad), ref_in[1:], strict=True):
        assert torch.isfinite(got).all()
        assert rel(got, ref.grad) <= 1e-4
    assert torch.isfinite(x.grad).all()  # dx ~ sqrt(1 - a^2): 0 in float32, ~1e-13 in float64


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("with_state", [False, True])
def test_conv1d(shape, dtype, with_state):
    b, t, d = shape
    x = leaf(b, t, d, dtype=dtype)
    w, bias = leaf(4, d, dtype=dtype), leaf(d, dtype=dtype)
    state = torch.randn(b, 3, d, device=DEVICE).to(dtype) if with_state else None
    pos = resets(b, t)
    y, new_state = conv1d(x, w, bias, pos, state)
    ref_in = [v.detach().double().requires_grad_() for v in (x, w, bias)]
    y_ref, state_ref = conv1d_ref(*ref_in, pos, None if state is None else state.double())
    assert rel(y, y_ref) <= TOL[dtype] and rel(new_state, state_ref) <= TOL[dtype]
    gy = torch.randn(b, t, d, device=DEVICE)
    (y.float() * gy).sum().backward()
    (y_ref * gy.double()).sum().backward()
    names = ("dx", "dw", "db")
    check_grads(
        {n: (g.grad, r.grad) for n, g, r in zip(names, (x, w, bias), ref_in, strict=True)}, dtype
    )


@pytest.mark.parametrize("with_state", [False, True])
def test_conv1d_split_in_time(with_state, monkeypatch):
    """Both kernels' programs split t into chunks (the backward's partial dw, db summed after):
    document starts at a chunk's first step, just after it and just before it; outputs, the new
    state (written by the last chunk) and gradients equal the reference."""
    import kernels.conv1d as c1

    monkeypatch.setattr(c1, "TARGET_PROGRAMS", 10**6)  # one tile per chunk: 5 chunks
    b, t, d = 2, 300, 24
    for config in (c1.FWD_CONFIG, c1.BWD_CONFIG):  # both 64 steps a tile
        assert c1._time_chunks(b, t, d, config[0], config[1]) == (5, 64)
    x = leaf(b, t, d, dtype=torch.float32)
    w, bias = leaf(4, d, dtype=torch.float32), leaf(d, dtype=torch.float32)
    state = torch.randn(b, 3, d, device=DEVICE) if with_state else None
    pos = torch.arange(t).repeat(b, 1)
    for start in (63, 128, 129):  # row 0 only; row 1 one document (the state carried in)
        pos[0, start:] = torch.arange(t - start)
    pos = pos.to(DEVICE)
    y, new_state = conv1d(x, w, bias, pos, state)
    ref_in = [v.detach().double().requires_grad_() for v in (x, w, bias)]
    y_ref, state_ref = conv1d_ref(*ref_in, pos, None if state is None else state.double())
    assert rel(y, y_ref) <= TOL[torch.float32] and rel(new_state, state_ref) <= TOL[torch.float32]
    gy = torch.randn(b, t, d, device=DEVICE)
    (y * gy).sum().backward()
    (y_ref * gy.double()).sum().backward()
    names = ("dx", "dw", "db")
    check_grads(
        {n: (g.grad, r.grad) for n, g, r in zip(names, (x, w, bias), ref_in, strict=True)},
        torch.float32,
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(2, 37, 45), (1, 1, 3), (3, 21, 130)], ids=str)
def test_rms_norm(shape, dtype):
    x = leaf(*shape, dtype=dtype, scale=3.0)
    scale = leaf(shape[-1], dtype=dtype, scale=0.5)
    y = rms_norm(x, scale, 1e-6)
    ref_in = [v.detach().double().requires_grad_() for v in (x, scale)]
    y_ref = rms_norm_ref(*ref_in, 1e-6)
    assert y.dtype == dtype and rel(y, y_ref) <= TOL[dtype]
    gy = torch.randn(shape, device=DEVICE)
    (y.float() * gy).sum().backward()
    (y_ref * gy.double()).sum().backward()
    check_grads({"dx": (x.grad, ref_in[0].grad), "dscale": (scale.grad, ref_in[1].grad)}, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(2, 37, 45), (1, 1, 3), (3, 500, 7)], ids=str)
def test_gelu_mul(shape, dtype):
    gate, up = leaf(*shape, dtype=dtype, scale=3.0), leaf(*shape, dtype=dtype)
    z = gelu_mul(gate, up)
    ref_in = [v.detach().double().requires_grad_() for v in (gate, up)]
    z_ref = gelu_mul_ref(*ref_in)
    assert z.dtype == dtype and rel(z, z_ref) <= TOL[dtype]
    gz = torch.randn(shape, device=DEVICE)
    (z.float() * gz).sum().backward()
    (z_ref * gz.double()).sum().backward()
    check_grads({"dgate": (gate.grad, ref_in[0].grad), "dup": (up.grad, ref_in[1].grad)}, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cap", [0.0, 30.0], ids=str)
@pytest.mark.parametrize("n,v", [(3, 5000), (1, 7), (4, 4096)], ids=str)
def test_xent_grad(n, v, cap, dtype):
    """Loss rows and the gradient written over the logits: a vocabulary of one partial block,
    several blocks with a partial last one, whole blocks; logits well past the soft cap's linear
    range; targets in the first and the last column."""
    g = torch.Generator().manual_seed(n * v)
    logits = (torch.randn(n, v, generator=g) * 20).to(DEVICE, dtype)
    targets = torch.randint(0, v, (n,), generator=g).to(DEVICE)
    targets[0] = v - 1
    if n > 1:
        targets[1] = 0
    loss_ref, grad_ref = xent_grad_ref(logits.double(), targets, cap, 0.25)
    work = logits.clone()
    loss = xent_grad_(work, targets, cap, 0.25)
    assert loss.dtype == torch.float32 and work.dtype == dtype
    assert rel(loss, loss_ref) <= TOL[dtype] and rel(work, grad_ref) <= TOL[dtype]


def test_xent_grad_errors():
    logits = torch.zeros(3, 10, device=DEVICE)
    with pytest.raises(ValueError, match=r"targets must be \[n\] = \[3\]"):
        xent_grad_(logits, torch.zeros(4, dtype=torch.long, device=DEVICE))
    with pytest.raises(ValueError, match="contiguous in the vocabulary"):
        xent_grad_(logits.T, torch.zeros(10, dtype=torch.long, device=DEVICE))
    with pytest.raises(ValueError, match="int32 or int64"):
        xent_grad_(logits, torch.zeros(3, device=DEVICE))


@pytest.mark.parametrize("t", [1, 2, 3, 5])
def test_conv1d_new_state_is_the_refs_exactly(t):
    """The state the kernel writes: short chunks take inputs from the old state, and a document
    start at any of the last positions zeroes what lies before it."""
    b, d = 2 * t + 2, 40
    x = torch.randn(b, t, d, device=DEVICE).bfloat16()
    w, bias = torch.randn(4, d, device=DEVICE).bfloat16(), torch.randn(d, device=DEVICE).bfloat16()
    state = torch.randn(b, 3, d, device=DEVICE).bfloat16()
    pos = torch.arange(t, device=DEVICE).repeat(b, 1) + 5
    for row in range(1, b - 1):  # row r: a start at position (r-1) % t; first and last: none
        start = (row - 1) % t
        pos[row, start:] = torch.arange(t - start, device=DEVICE)
    for st in (state, None):
        _, new_state = conv1d(x, w, bias, pos, st)
        _, state_ref = conv1d_ref(x, w, bias, pos, st)
        assert torch.equal(new_state, state_ref)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_decode_steps_update_state_in_place_like_their_refs(dtype):
    b, d = 3, 70
    conv_state = torch.randn(b, 3, d, device=DEVICE).to(dtype)
    h = torch.randn(b, d, device=DEVICE)
    conv_ref_state, h_ref = conv_state.clone(), h.clone()
    for step in range(6):
        x, gx, ga = (torch.randn(b, d, device=DEVICE).to(dtype) for _ in range(3))
        w, bias = (
            torch.randn(4, d, device=DEVICE).to(dtype),
            torch.randn(d, device=DEVICE).to(dtype),
        )
        a_param = torch.randn(d, device=DEVICE).to(dtype)
        reset = torch.tensor([step == 2, False, step % 2 == 0], device=DEVICE)
        y = conv1d_step(x, w, bias, conv_state, reset)
        y_ref = conv1d_step_ref(x, w, bias, conv_ref_state, reset)
        assert rel(y, y_ref) <= TOL[dtype] and torch.equal(conv_state, conv_ref_state)
        z = rg_lru_step(x, gx, ga, a_param, h, reset)
        z_ref = rg_lru_step_ref(x, gx, ga, a_param, h_ref, reset)
        assert rel(z, z_ref) <= TOL[dtype] and rel(h, h_ref) <= 1e-6


def _f64(v):
    return None if v is None else v.double()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "k,ns,fused",
    [(45, [7], "residual+cap"), (70, [13, 5, 130], "norm+bias"), (3, [1, 9], "norm")],
    ids=str,
)
def test_gemv(k, ns, fused, dtype):
    """Rows not a multiple of a program's block (4 or 16), K not a multiple of its tile; one to
    three weights in one launch, each with or without a bias; two rows of x."""
    g = torch.Generator().manual_seed(k)

    t = randn_fn(g, dtype)

    x, ws = t(2, k, scale=3.0), [t(n, k, scale=k**-0.5) for n in ns]
    biases = [t(n) if i % 2 == 0 else None for i, n in enumerate(ns)] if "bias" in fused else None
    norm = (t(k, scale=0.5), 1e-6) if "norm" in fused else None
    residual = t(2, ns[0]) if "residual" in fused else None
    cap = 1.5 if "cap" in fused else None
    ys = gemv(x, ws, biases, residual, norm, cap, pdl=k == 70)  # (pdl: a no-op off the GPU)
    refs = gemv_ref(
        x.double(), [w.double() for w in ws], None if biases is None else [_f64(b) for b in biases],
        _f64(residual), None if norm is None else (norm[0].double(), norm[1]), cap,
    )  # fmt: skip
    assert len(ys) == len(ns)
    for y, ref in zip(ys, refs, strict=True):
        assert y.dtype == dtype and y.shape == ref.shape and rel(y, ref) <= TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize(
    "t,d,block_t,block_p,pack",
    [(37, 36, 8, 4, 4), (32, 32, 8, 4, 4), (5, 12, 8, 4, 4), (37, 20, 8, 4, 2), (16, 6, 8, 4, 2),
     (40, 44, 16, 8, 2), (9, 8, 8, 2, 4)],
    ids=str,
)  # fmt: skip
def test_linear_scan_packed_forward(t, d, block_t, block_p, pack, dtype):
    """The packed forward (scan._forward_packed), 2 or 4 channels a word: whole tiles and a
    partial last one, fewer steps than a tile, channel blocks whole or partial (masked words),
    with and without h0, bfloat16 and float16 (the bits are unpacked and packed by hand)."""
    from kernels import scan

    b = 3
    a = leaf(b, t, d, dtype=dtype, positive=True).detach()
    x = leaf(b, t, d, dtype=dtype).detach()
    h0 = torch.randn(b, d, device=DEVICE)
    for start in (None, h0):
        h, h_last = scan._forward_packed(a, x, start, (block_t, block_p, 1, 2, pack))
        ref, ref_last = linear_scan_ref(a.double(), x.double(), _f64(start))
        assert h.dtype == dtype and rel(h, ref) <= TOL[torch.bfloat16]
        assert rel(h_last, ref_last) <= 1e-5


def test_linear_scan_packing():
    """Which inputs take the packed forward, and how many channels a word."""
    from kernels.scan import packing

    x = torch.zeros(2, 3, 16, dtype=torch.bfloat16)
    assert packing(x) == 4 and packing(x.half()) == 4
    assert packing(x[..., :6].contiguous()) == 2  # d = 6: two channels a word
    assert packing(x[..., :5].contiguous()) == 0  # d odd
    assert packing(x.float()) == 0  # not 16-bit
    assert packing(x[..., :8]) == 0  # not contiguous
    flat = torch.zeros(2 * 3 * 8 + 2, dtype=torch.bfloat16)
    assert packing(flat[2:].view(2, 3, 8)) == 2  # aligned to 4 bytes, not 8
    assert packing(flat[1:-1].view(2, 3, 8)) == 0  # aligned to 2 bytes


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "b,n,s,h,sms",
    [(2, 10, 150, 24, 8), (3, 1, 64, 7, 8), (1, 16, 200, 32, 8), (2, 4, 300, 16, 8),
     (1, 8, 1500, 16, 40)],
    ids=str,
)  # fmt: skip
def test_mqa_decode(b, n, s, h, sms, dtype, monkeypatch):
    """Slots split across programs (32- or 64-slot blocks, a last split part-full; with `sms`
    SMs, 1500 slots make 47 splits, combined 16 at a time; 8 channels a combine program, so h = 24
    and 32 take several); a mask with holes, a row whose first
    split is wholly masked (a split that saw nothing), a row that sees one slot; head sizes not a
    power of two."""
    import kernels.decode_attention as da

    monkeypatch.setattr(da, "_sm_count", lambda device: sms)
    monkeypatch.setattr(da, "COMBINE_SPLITS", 16)
    monkeypatch.setattr(da, "COMBINE_CHANNELS", 8)
    block, splits, _ = da._plan(b, s, sms)
    assert (block, splits) == {150: (32, 5), 64: (32, 2), 200: (32, 7), 300: (64, 5),
                               1500: (32, 47)}[s]  # fmt: skip
    g = torch.Generator().manual_seed(s + n)
    q, k, v = (torch.randn(*shape, generator=g).to(DEVICE, dtype) for shape in
               [(b, n, h), (b, s, h), (b, s, h)])  # fmt: skip
    mask = torch.rand(b, s, generator=g) < 0.7
    mask[0, : min(s - 1, 80)] = False
    mask[:, -1] = True  # the step's own token
    if b > 1:
        mask[1] = False
        mask[1, s // 2] = True
    mask = mask.to(DEVICE)
    ref = mqa_decode_ref(q.double(), k.double(), v.double(), mask, scale=0.3)
    out = mqa_decode(q, k, v, mask, scale=0.3)
    assert out.dtype == dtype and out.shape == ref.shape and rel(out, ref) <= TOL[dtype]
    if b > 1:  # one slot seen: its value exactly (up to the output's rounding)
        assert rel(out[1], v[1, s // 2].expand(n, h)) <= TOL[dtype]

    # with the step's own key and value written at their slot by the kernel (the last slot:
    # the one every row sees), as the decoder calls it; the cache's other slots untouched
    k_new, v_new = (torch.randn(b, h, generator=g).to(DEVICE, dtype) for _ in range(2))
    slot = torch.tensor([s - 1], device=DEVICE)
    kr, vr = k.double(), v.double()
    ref = mqa_decode_ref(q.double(), kr, vr, mask, 0.3, new=(k_new.double(), v_new.double(), slot))
    k0, v0 = k.clone(), v.clone()
    out = mqa_decode(q, k, v, mask, 0.3, new=(k_new, v_new, slot))
    assert rel(out, ref) <= TOL[dtype]
    assert torch.equal(k[:, -1], k_new) and torch.equal(v[:, -1], v_new)
    assert torch.equal(k[:, :-1], k0[:, :-1]) and torch.equal(v[:, :-1], v0[:, :-1])

    # with the rotary embedding applied in the kernel to q and the new key (on all channels,
    # or on the first part of each head), the rotated key written into the cache
    positions = torch.arange(b, device=DEVICE) * 37 + 5
    for dims in {h - h % 2, max(2, (h // 2) - (h // 2) % 2)}:
        rope = (positions, dims, 10000.0)
        kr, vr = k0.double(), v0.double()
        new = (k_new.double(), v_new.double(), slot)
        ref = mqa_decode_ref(q.double(), kr, vr, mask, 0.3, new=new, rope=rope)
        k, v = k0.clone(), v0.clone()
        out = mqa_decode(q, k, v, mask, 0.3, new=(k_new, v_new, slot), rope=rope)
        assert rel(out, ref) <= TOL[dtype], dims
        assert rel(k[:, -1], kr[:, -1]) <= TOL[dtype] and torch.equal(v[:, -1], v_new)

    # filled: a global cache filled up to a slot in the middle, the rest empty (masked) and
    # holding garbage that must not be read (NaN would poison any split that read it)
    fill = s // 2
    slot = torch.tensor([fill], device=DEVICE)
    mask_f = mask.clone()
    mask_f[:, fill:] = False
    mask_f[:, fill] = True
    k, v = k0.clone(), v0.clone()
    k[:, fill + 1 :], v[:, fill + 1 :] = float("nan"), float("nan")
    ref = mqa_decode_ref(q.double(), k0.double(), v0.double(), mask_f, 0.3,
                         new=(k_new.double(), v_new.double(), slot))  # fmt: skip
    out = mqa_decode(q, k, v, mask_f, 0.3, new=(k_new, v_new, slot), filled=True)
    assert torch.isfinite(out).all() and rel(out, ref) <= TOL[dtype]
    assert torch.equal(k[:, fill], k_new) and torch.equal(v[:, fill], v_new)


def test_rope_ref_is_the_models_rotary_embedding():
    from kernels.decode_attention import rope_ref
    from models.torch.layers import apply_rope

    x = torch.randn(3, 4, 24)
    pos = torch.tensor([0, 7, 2049])
    for dims in (24, 12):
        want = apply_rope(x[:, None], pos[:, None], dims, 10000.0)[:, 0]
        assert rel(rope_ref(x, pos, dims, 10000.0), want) <= 1e-6


def test_mqa_decode_input_errors():
    q, k = torch.zeros(1, 4, 8, device=DEVICE), torch.zeros(1, 5, 8, device=DEVICE)
    mask = torch.ones(1, 5, dtype=torch.bool, device=DEVICE)
    with pytest.raises(ValueError, match="one shared head"):
        mqa_decode(q, k, k[:, :, :4], mask)
    with pytest.raises(ValueError, match="mask must be bool"):
        mqa_decode(q, k, k, mask.float())
    with pytest.raises(ValueError, match="at most 16 query heads"):
        mqa_decode(torch.zeros(1, 17, 8, device=DEVICE), k, k, mask)
    with pytest.raises(ValueError, match="share a dtype"):
        mqa_decode(q.bfloat16(), k, k, mask)
    slot = torch.tensor([0], device=DEVICE)
    with pytest.raises(ValueError, match="new key and value must be"):
        mqa_decode(q, k, k, mask, new=(k[:, 0, :4], k[:, 0], slot))
    with pytest.raises(ValueError, match="slot must be one int64"):
        mqa_decode(q, k, k, mask, new=(k[:, 0], k[:, 0], slot.int()))
    pos = torch.zeros(1, dtype=torch.long, device=DEVICE)
    with pytest.raises(ValueError, match="rope needs new"):
        mqa_decode(q, k, k, mask, rope=(pos, 8, 1e4))
    with pytest.raises(ValueError, match="filled needs new"):
        mqa_decode(q, k, k, mask, filled=True)
    with pytest.raises(ValueError, match="rope_dims must be even"):
        mqa_decode(q, k, k, mask, new=(k[:, 0], k[:, 0], slot), rope=(pos, 7, 1e4))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("k,n,fused", [(45, 37, "norm+bias"), (130, 20, ""), (2, 3, "norm")])
def test_gemv_gated_up(k, n, fused, dtype):
    g = torch.Generator().manual_seed(n)

    t = randn_fn(g, dtype)

    x, w = t(2, k, scale=3.0), t(2, k, n, scale=k**-0.5)
    b = t(2, n) if "bias" in fused else None
    norm = (t(k, scale=0.5), 1e-6) if "norm" in fused else None
    ref = gemv_gated_up_ref(
        x.double(), w.double(), _f64(b), None if norm is None else (norm[0].double(), norm[1])
    )
    for rows in (False, True):  # the module's [2, K, N], or the halves transposed to [2, N, K]
        z = gemv_gated_up(x, w.transpose(1, 2).contiguous() if rows else w, b, norm, rows=rows)
        assert z.dtype == dtype and z.shape == ref.shape and rel(z, ref) <= TOL[dtype], rows


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("heads,e", [(3, 15), (2, 32), (1, 7)], ids=str)
def test_rg_lru_gated_step(heads, e, dtype):
    """The decode step's gates + RG-LRU step + gelu·mul against the model's ops (computed in
    float32 from the same inputs): head widths not a multiple of the 16-column block, a reset in
    the middle row, h updated in place as the ref updates it."""
    g = torch.Generator().manual_seed(e)

    t = randn_fn(g, dtype)

    d = heads * e
    args = [t(3, d), t(3, d, scale=2.0), t(heads, e, e, scale=e**-0.5), t(heads, e),
            t(heads, e, e, scale=e**-0.5), t(heads, e), t(d)]  # fmt: skip
    h = torch.randn(3, d, generator=g).to(DEVICE)
    reset = torch.tensor([False, True, False], device=DEVICE)
    h_ref = h.clone()
    z = rg_lru_gated_step(*args, h, reset)
    z_ref = rg_lru_gated_step_ref(*[a.float() for a in args], h_ref, reset)
    assert z.dtype == dtype and rel(z, z_ref) <= TOL[dtype]
    assert rel(h, h_ref) <= TOL[torch.float32]


def test_gemv_input_errors():
    x, w = torch.randn(1, 8, device=DEVICE), torch.randn(5, 8, device=DEVICE)
    with pytest.raises(ValueError, match=r"weight 1 must be \[N, 8\]"):
        gemv(x, [w, w[:, :4]])
    with pytest.raises(ValueError, match="a residual goes with one weight"):
        gemv(x, [w, w], residual=torch.zeros(1, 5, device=DEVICE))
    with pytest.raises(ValueError, match="weights must share x's dtype"):
        gemv(x, [w.bfloat16()])
    with pytest.raises(ValueError, match=r"w must be \[2, 8, N\]"):
        gemv_gated_up(x, w)
    with pytest.raises(ValueError, match=r"w must be \[2, N, 8\]"):
        gemv_gated_up(x, torch.zeros(2, 8, 5, device=DEVICE), rows=True)
    w3 = torch.zeros(2, 4, 4, device=DEVICE)
    with pytest.raises(ValueError, match=r"wx must be \[H, e, e\] with H \* e = 8"):
        rg_lru_gated_step(x, x, w3[:, :3, :3], w3[:, 0], w3, w3[:, 0], x[0], x, x[:, 0] > 0)


def test_kernel_input_errors():
    x = torch.randn(2, 5, 8, device=DEVICE)
    with pytest.raises(ValueError, match=r"a and x must both be \[b, t, d\]"):
        linear_scan(x[..., :4], x)
    with pytest.raises(ValueError, match="share one dtype"):
        linear_scan(x.bfloat16(), x)
    with pytest.raises(ValueError, match=r"h0 must be torch.float32 \[b, d\]"):
        linear_scan(x, x, torch.zeros(2, 8, dtype=torch.bfloat16, device=DEVICE))
    with pytest.raises(ValueError, match=r"a_param must be \[d\] = \[8\]"):
        rg_lru(x, x, x, torch.zeros(7, device=DEVICE))
    with pytest.raises(ValueError, match="segment_pos must be"):
        conv1d(
            x, torch.zeros(4, 8, device=DEVICE), torch.zeros(8, device=DEVICE), torch.zeros(2, 4)
        )


def test_reference_models_work_without_triton():
    """Triton is an optional extra: without it the references run and the kernels say why not."""
    code = """
import sys
sys.modules["triton"] = None
import torch
from kernels.rglru import rg_lru, rg_lru_ref
from models.config import preset
from models.torch import Model
m = Model(preset("griffin-tiny"))
print(m(torch.zeros(1, 4, dtype=torch.long), torch.arange(4)[None]).shape)
x = torch.randn(1, 3, 4)
try:
    rg_lru(x, x, x, torch.zeros(4))
except ImportError as exc:
    print("ImportError:", exc)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "torch.Size([1, 4, 256])" in out
    assert "ImportError: Triton is not installed" in out
