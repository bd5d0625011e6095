"""JAX Pallas (Triton lowering) kernels for the linear scan and the fused RG-LRU, forward and backward.

    h, h_last = linear_scan(a, x, h0=None)                                  # h_t = a_t h_{t-1} + x_t
    y, h_last = rg_lru(x, gate_x, gate_a, a_param, segment_pos=None, h0=None)

Same signatures and results as kernels.scan_jax.linear_scan_ref and kernels.rglru_jax.rg_lru_ref:
[b, t, d] arrays, float32 state, outputs in the input dtype, h_last float32; any t and d.
Differentiable (jax.custom_vjp) in every float input, with Pallas kernels for the backward too.

Layout: a grid of (batch, channel blocks of BLOCK_D). Each program owns BLOCK_D contiguous channels
of one batch row (so every row load / store is coalesced along the last axis) and walks the whole
sequence, carrying the float32 state in registers through a `lax.fori_loop` over chunks of BLOCK_T
time steps. Inside a chunk the BLOCK_T rows are unrolled: all the chunk's loads are independent of
the carry, so they can be issued ahead of the (serial, one FMA per step) recurrence. A time axis
that is not a multiple of BLOCK_T ends with a shorter, statically unrolled tail chunk (t is static
under jit, so there are no time masks); channels beyond d in the last block are masked.

Chained forward (linear_scan(..., fwd_chained=True); not the default: on the H100 it was no faster
than the walking forward, 0.441 ms at best against 0.414-0.504 ms, B=8 T=4096 D=2560 bf16;
docs/h100.md): one program
per tile of BLOCK_T steps x BLOCK_D channels. A program takes its
tile from a start-order counter (an atomic add; chunk-major, so the tiles before it in time have
all started), loads its rows, scans them from zero, publishes the tile's transform h -> A h + H
behind a flag, walks back over the earlier tiles' flags (composing transforms until one has
published its inclusive prefix), fixes up its rows with the entering state and publishes its own
prefix. Flags are written with atomic adds (acq_rel, GPU scope) after a CTA barrier, read with
atomic adds of 0, and the data they guard with volatile loads.

Mosaic GPU forward (the default where it applies; SCAN_FWD_MOSAIC, linear_scan(fwd_mosaic=...)):
a Mosaic GPU kernel (`plgpu.kernel`) with one warpgroup per (batch row, 128 channels), one
channel a thread. Time tiles of a, x (in) and h (out) stream through a ring of shared-memory
buffers by TMA (`plgpu.emit_pipeline`), and the float32 state is carried in registers from tile
to tile. It applies on a GPU to 16-bit inputs with d a multiple of the block and t of the time
tile. Elsewhere, and in the interpreter (which cannot run it), the Triton-lowered forward runs.
On the H100 at B=8 D=2560 bf16, in the kernels-scan suite (results/h100/kernels-scan.jsonl):
0.2069 ms at T=4096, 81% of the copy bandwidth measured in the same run (the Triton-lowered
forward 0.288 ms), and 0.7853 ms at 16384 (1.176 ms).

Backward: one reverse-time pass with carry c = a_{t+1} δ_{t+1} (δ = dL/dh through all paths,
c starts at dh_last): δ_t = dy_t + c, then dx_t = δ_t, da_t = δ_t h_{t-1}, c <- a_t δ_t, and
dh0 = the final c. h_{t-1} is read from the saved forward output (in the input dtype, as the Triton
kernels do). The RG-LRU backward recomputes its gates from x, gate_x, gate_a (one exp per element
for a, as forward) and applies the chain rule, with the sqrt gradient clipped at MAX_SQRT_GRADIENT
and resets (segment_pos == 0: a = 0, multiplier 1) cutting both; dsoftplus(Λ) is summed over time
per (batch row, channel) in the kernel and over batch rows after.

Block sizes and Triton's num_warps / num_stages are the module-level `*_CONFIG` constants and can be
overridden per call (keyword `fwd_config` / `bwd_config`) for sweeps. On a CPU backend (or with
GRIFFIN_BENCH_PALLAS_INTERPRET=1) the kernels run in Pallas's interpreter; =0 forces compilation.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

try:  # Mosaic GPU (the default scan forward on a GPU); jax 0.11 registers its lowering in this module
    import jax._src.pallas.mosaic_gpu.pallas_call_registration
    from jax.experimental.pallas import mosaic_gpu as plgpu
except ImportError:  # pragma: no cover - a jax without Mosaic GPU: the Triton-lowered forward
    plgpu = None

from kernels.rglru import MAX_SQRT_GRADIENT

_F32 = jnp.float32
_MIN_4Z = 1.0 / MAX_SQRT_GRADIENT**2


class Config(NamedTuple):
    """Launch parameters: time steps per loop iteration (unrolled), channels per program (a power
    of two), and Triton's num_warps / num_stages."""

    block_t: int
    block_d: int
    num_warps: int = 1
    num_stages: int = 2


# From tools/pallas_scan.py on an H100 (jax 0.11.2), B=8 T=4096 D=2560 bf16: narrow
# channel blocks (many programs of one warp) won; the forward scan 0.41 ms (jax associative scan
# 0.93 ms in the same run), scan fwd+bwd 0.97 ms (2.99), RG-LRU fwd+bwd 2.88 ms (XLA gates +
# associative scan 4.30). Longer unrolled chunks mainly cost compile time.
SCAN_FWD_CONFIG = Config(block_t=32, block_d=32, num_warps=1, num_stages=2)
SCAN_BWD_CONFIG = Config(block_t=32, block_d=32, num_warps=1, num_stages=2)
# The chained forward (_scan_fwd_chained: one program per block_t x block_d tile, decoupled
# look-back across time; num_stages unused) measured no faster on the H100, so not the default:
# linear_scan(..., fwd_chained=True) or SCAN_FWD_CHAINED = True selects it. A thread keeps its
# tile's rows in registers, about 4 per row: with block_t * block_d / (32 * num_warps) = 32 rows
# per thread ptxas (sm_90, Triton 3.9 on the CPU) used 124-128 registers, with 64 rows 248-254
# (no spills, but half the programs per SM); 128 would spill.
SCAN_FWD_CHAINED = False
SCAN_FWD_CHAINED_CONFIG = Config(block_t=32, block_d=64, num_warps=2, num_stages=1)
RGLRU_FWD_CONFIG = Config(block_t=8, block_d=32, num_warps=1, num_stages=2)
RGLRU_BWD_CONFIG = Config(block_t=8, block_d=32, num_warps=1, num_stages=2)


class MosaicConfig(NamedTuple):
    """The Mosaic GPU forward: time steps per tile, channels per block (a multiple of 128: one
    warpgroup, a channel or more a thread), shared-memory buffers per stream, and how many
    tiles ahead of the one in use a and x are prefetched into L2 (0: none; the Triton kernel's
    best was 2)."""

    block_t: int = 64
    block_d: int = 128
    stages: int = 2
    prefetch: int = 0


# The H100 sweep (tools/pallas_scan.py, docs/h100.md; B=8 D=2560 bf16): (64, 128, 2, 0)
# was best at T=4096 and 16384 (0.200 / 0.781 ms); an L2 prefetch 1 or 2 tiles ahead, more
# buffers with shorter tiles, and 256 channels a block were all 7-27% slower at T=4096.
SCAN_FWD_MOSAIC = True
SCAN_FWD_MOSAIC_CONFIG = MosaicConfig()

INTERPRET_ENV = "GRIFFIN_BENCH_PALLAS_INTERPRET"


def default_interpret() -> bool:
    """Interpret (no GPU compile) when the default backend is the CPU, or as the env var says."""
    env = os.environ.get(INTERPRET_ENV, "")
    if env in ("0", "1"):
        return env == "1"
    return jax.default_backend() == "cpu"


def _checked_config(cfg: Config) -> Config:
    cfg = Config(*cfg)
    if cfg.block_t < 1 or cfg.block_d < 1 or cfg.block_d & (cfg.block_d - 1):
        raise ValueError(f"block_t must be >= 1 and block_d a power of two; got {cfg}")
    return cfg


# ----------------------------------------------------------------------------- kernel helpers


class _Cols:
    """The channel block of one program: its slice and (when d is not a multiple) its mask. The
    batch row and channel block are the grid's (program ids 0 and 1) unless given."""

    def __init__(self, d: int, block_d: int, b=None, dblk=None):
        d0 = (pl.program_id(1) if dblk is None else dblk) * block_d
        self.b = pl.program_id(0) if b is None else b
        self.block_d = block_d
        self.sl = pl.ds(d0, block_d)
        self.mask = None if d % block_d == 0 else (d0 + lax.iota(jnp.int32, block_d)) < d

    def _view(self, ref, idx):
        # static indices as int32 scalars: the interpreter's load/store discharge wants arrays
        idx = tuple(jnp.int32(i) if isinstance(i, int) else i for i in idx)
        return ref.at[(*idx, self.sl)]

    def _mask(self, valid):
        """The channel mask and (if given) a scalar predicate for the whole row."""
        if valid is None:
            return self.mask
        row = lax.broadcast(valid, (self.block_d,))
        return row if self.mask is None else self.mask & row

    def load(self, ref, *idx, valid=None, other=0.0):
        view, mask = self._view(ref, idx), self._mask(valid)
        if mask is None:
            return view[...].astype(_F32)
        return plt.load(view, mask=mask, other=other).astype(_F32)

    def store(self, ref, value, *idx, valid=None):
        view, mask = self._view(ref, idx), self._mask(valid)
        value = value.astype(ref.dtype)
        if mask is None:
            view[...] = value
        else:
            plt.store(view, value, mask=mask)


def _forward_chunks(t: int, block_t: int, rows, carry):
    """rows(t0, n, carry) -> carry over [0, t): full chunks in a fori_loop, then the tail."""
    n_full, rem = divmod(t, block_t)
    if n_full:
        carry = lax.fori_loop(0, n_full, lambda c, k: rows(c * block_t, block_t, k), carry)
    if rem:
        carry = rows(n_full * block_t, rem, carry)
    return carry


def _reverse_chunks(t: int, block_t: int, rows, carry):
    """rows(t0, n, carry, first) -> carry over [0, t) backwards: the tail, the full chunks but the
    first in a fori_loop (descending), then the first chunk (`first`: its row 0 is t = 0)."""
    n_full, rem = divmod(t, block_t)
    if rem:
        carry = rows(n_full * block_t, rem, carry, n_full == 0)
    if n_full > 1:
        carry = lax.fori_loop(
            0,
            n_full - 1,
            lambda k, c: rows((n_full - 1 - k) * block_t, block_t, c, False),
            carry,
        )
    if n_full:
        carry = rows(0, block_t, carry, True)
    return carry


def _softplus(z):
    return jnp.maximum(z, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(z)))


def _gates(gx, ga, sp, reset):
    """r, i, e = exp(log a) before resets, a, z = 1 - e^2, the multiplier sqrt(z) (resets: a = 0,
    multiplier 1). 1 - e^2 as (1 - e)(1 + e): one exp, and accurate as a -> 1."""
    r = jax.nn.sigmoid(ga)
    e = jnp.exp(-8.0 * r * sp)
    z = (1.0 - e) * (1.0 + e)
    mult = jnp.sqrt(z)
    a = e
    if reset is not None:
        a = jnp.where(reset, 0.0, e)
        mult = jnp.where(reset, 1.0, mult)
    return r, jax.nn.sigmoid(gx), e, a, z, mult


# ----------------------------------------------------------------------------- scan kernels


def _scan_fwd_kernel(a_ref, x_ref, h0_ref, h_ref, hlast_ref, *, t, d, block_t, block_d):
    cols = _Cols(d, block_d)
    b = cols.b

    def rows(t0, n, h):
        a = [cols.load(a_ref, b, t0 + i) for i in range(n)]
        x = [cols.load(x_ref, b, t0 + i) for i in range(n)]
        for i in range(n):
            h = a[i] * h + x[i]
            cols.store(h_ref, h, b, t0 + i)
        return h

    h = _forward_chunks(t, block_t, rows, cols.load(h0_ref, b))
    cols.store(hlast_ref, h, b)


def _scan_bwd_kernel(
    a_ref, h_ref, h0_ref, dh_ref, dhlast_ref, da_ref, dx_ref, dh0_ref, *, t, d, block_t, block_d
):
    cols = _Cols(d, block_d)
    b = cols.b
    h0 = cols.load(h0_ref, b)

    def rows(t0, n, c, first):
        a = [cols.load(a_ref, b, t0 + i) for i in range(n)]
        g = [cols.load(dh_ref, b, t0 + i) for i in range(n)]
        hp = [h0 if first and i == 0 else cols.load(h_ref, b, t0 + i - 1) for i in range(n)]
        for i in reversed(range(n)):
            delta = g[i] + c  # c = a_{t+1} δ_{t+1}
            cols.store(dx_ref, delta, b, t0 + i)
            cols.store(da_ref, delta * hp[i], b, t0 + i)
            c = a[i] * delta
        return c

    c = _reverse_chunks(t, block_t, rows, cols.load(dhlast_ref, b))
    cols.store(dh0_ref, c, b)  # dh0 = a_0 δ_0


def mosaic_applies(x, cfg: MosaicConfig = SCAN_FWD_MOSAIC_CONFIG) -> bool:
    """Whether the Mosaic GPU forward can take x ([b, t, d]) with cfg: Mosaic GPU present,
    16-bit floats, d a multiple of cfg.block_d (itself a multiple of 128), t of cfg.block_t."""
    _, t, d = x.shape
    return (
        plgpu is not None
        and x.dtype in (jnp.bfloat16, jnp.float16)
        and cfg.block_d % 128 == 0
        and d % cfg.block_d == 0
        and t % cfg.block_t == 0
    )


@functools.partial(jax.jit, static_argnames=("cfg",))
def _scan_fwd_mosaic(a, x, h0, cfg: MosaicConfig):
    """The forward pass as a Mosaic GPU kernel (`mosaic_applies` inputs; see the module doc)."""
    b, t, d = x.shape
    block_t, block_d = cfg.block_t, cfg.block_d

    def kernel(a_gmem, x_gmem, h0_gmem, h_gmem, hlast_gmem):
        row, blk = lax.axis_index("b"), lax.axis_index("d")
        cols = pl.ds(blk * block_d, block_d)

        def load_h0(smem, barrier):  # global -> shared (TMA) -> registers
            plgpu.copy_gmem_to_smem(h0_gmem.at[row, cols], smem, barrier)
            plgpu.barrier_wait(barrier)
            return smem[...]

        h = pl.run_scoped(load_h0, plgpu.SMEM((block_d,), _F32), plgpu.Barrier(num_arrivals=1))

        n_tiles = t // block_t

        def tile(idx, a_s, x_s, h_s, h):  # one time tile in shared memory; h: the state before it
            if cfg.prefetch:  # a later tile (clamped to the last) on its way into L2
                ahead = pl.ds(jnp.minimum(idx[0] + cfg.prefetch, n_tiles - 1) * block_t, block_t)
                plgpu.async_prefetch(a_gmem.at[row, ahead, cols])
                plgpu.async_prefetch(x_gmem.at[row, ahead, cols])
            for i in range(block_t):
                h = a_s[i].astype(_F32) * h + x_s[i].astype(_F32)
                h_s[i] = h.astype(h_s.dtype)
            return h

        spec = pl.BlockSpec((block_t, block_d), lambda k: (k, blk))
        h = plgpu.emit_pipeline(
            tile, grid=(n_tiles,), in_specs=[spec, spec], out_specs=[spec],
            max_concurrent_steps=cfg.stages, init_carry=h,
        )(a_gmem.at[row], x_gmem.at[row], h_gmem.at[row])  # fmt: skip

        def store_h_last(smem):  # registers -> shared -> global
            smem[...] = h
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(smem, hlast_gmem.at[row, cols])
            plgpu.wait_smem_to_gmem(0)

        pl.run_scoped(store_h_last, plgpu.SMEM((block_d,), _F32))

    return plgpu.kernel(
        kernel,
        out_type=(jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct((b, d), _F32)),
        grid=(b, d // block_d),
        grid_names=("b", "d"),
    )(a, x, h0)


# Each kernel call is its own jitted function (static launch parameters): JAX traces it once per
# shape and lowers the identical calls of a model's blocks once, where each bare pallas_call was
# lowered to Triton IR again (0.26 s each; griffin-400m's training step has 16).
def _params(cfg: Config, interpret: bool) -> dict:
    return dict(
        compiler_params=plt.CompilerParams(num_warps=cfg.num_warps, num_stages=cfg.num_stages),
        interpret=interpret,
    )


@functools.partial(jax.jit, static_argnames=("cfg", "interpret"))
def _scan_fwd(a, x, h0, cfg: Config, interpret: bool):
    b, t, d = x.shape
    kernel = functools.partial(_scan_fwd_kernel, t=t, d=d, block_t=cfg.block_t, block_d=cfg.block_d)
    return pl.pallas_call(
        kernel,
        out_shape=(jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct((b, d), _F32)),
        grid=(b, pl.cdiv(d, cfg.block_d)),
        name="griffin_scan_fwd",
        **_params(cfg, interpret),
    )(a, x, h0)


# The chained forward: one program per tile of block_t steps x block_d channels of one batch row,
# chained across time by decoupled look-back. Flags (int32, zero at launch), one per tile, and the
# start-order counter after them: 0 nothing yet, 1 the tile's transform h -> A h + H published,
# 2 its inclusive prefix (the state leaving it) published. Flags only ever grow (atomic adds).
_PUBLISHED_AGG, _PUBLISHED_INC = 1, 2


def _scan_fwd_chained_kernel(
    a_ref, x_ref, h0_ref, _flags_in, h_ref, hlast_ref, flags_ref, agg_ref, inc_ref,
    *, t, d, block_t, block_d, n_dblk, rows, n_chunks, publish_inclusive, interpret,
):  # fmt: skip
    # flags_ref is _flags_in's buffer (input_output_aliases); only the output ref is used, as
    # the interpreter keeps the two apart.
    n_tiles = rows * n_chunks

    def barrier():  # every thread's writes before the flag / the flag before every read
        if not interpret:  # the interpreter runs one program at a time (and has no barrier rule)
            plt.debug_barrier()

    # the tile, in start order (chunk-major): a tile's predecessors in time have all started
    # before it, so waiting on them cannot deadlock whatever the order programs are scheduled in
    vid = plt.atomic_add(flags_ref, (jnp.int32(n_tiles),), jnp.int32(1))
    chunk, row = lax.div(vid, jnp.int32(rows)), lax.rem(vid, jnp.int32(rows))
    cols = _Cols(
        d, block_d, b=lax.div(row, jnp.int32(n_dblk)), dblk=lax.rem(row, jnp.int32(n_dblk))
    )
    b, t0, me = cols.b, chunk * block_t, row * n_chunks + chunk
    rem = t % block_t  # rows i < rem (or all, when rem == 0) are in range in every tile

    def valid(i):
        return None if rem == 0 or i < rem else t0 + i < t

    # all the tile's loads first (padding rows: a = 1, x = 0 carry the state through unchanged)
    a = [cols.load(a_ref, b, t0 + i, valid=valid(i), other=1.0) for i in range(block_t)]
    x = [cols.load(x_ref, b, t0 + i, valid=valid(i)) for i in range(block_t)]
    h0 = cols.load(h0_ref, b)

    # the scan from zero: H_i (local state), A_i (product of a up to row i)
    big_a, big_h = [a[0]], [x[0]]
    for i in range(1, block_t):
        big_a.append(a[i] * big_a[-1])
        big_h.append(a[i] * big_h[-1] + x[i])

    # publish the transform (tile 0 adds 0: it goes straight to its inclusive prefix)
    agg_ref[me, jnp.int32(0), :] = big_a[-1]
    agg_ref[me, jnp.int32(1), :] = big_h[-1]
    barrier()
    plt.atomic_add(flags_ref, (me,), (chunk > 0).astype(jnp.int32))

    def spin(prev):
        """The flag of tile `prev` once it is not 0 (an atomic read: never a cached value)."""
        if interpret:
            # earlier tiles have all run: a 0 here is a bug, and fails (not hangs). A plain
            # read: the interpreter's discharge of an atomic inside a loop is not implemented.
            return flags_ref[prev]
        first = plt.atomic_add(flags_ref, (prev,), jnp.int32(0))
        return lax.while_loop(
            lambda st: st == 0, lambda st: plt.atomic_add(flags_ref, (prev,), jnp.int32(0)), first
        )

    def step(carry):
        j, acc_a, acc_h, h_in = carry  # acc: the state leaving tile j -> the state entering ours
        prev = row * n_chunks + j
        st = spin(prev)
        barrier()

        def inclusive(_):  # the walk ends here
            inc = plt.load(inc_ref.at[prev, :], volatile=True)
            return acc_a, acc_h, acc_a * inc + acc_h

        def transform(_):  # composed in; tile 0 always publishes its prefix: the walk ends there
            pa = plt.load(agg_ref.at[prev, jnp.int32(0), :], volatile=True)
            ph = plt.load(agg_ref.at[prev, jnp.int32(1), :], volatile=True)
            return acc_a * pa, acc_a * ph + acc_h, h_in

        done = st == _PUBLISHED_INC
        acc_a, acc_h, h_in = lax.cond(done, inclusive, transform, None)
        return jnp.where(done, -1, j - 1), acc_a, acc_h, h_in

    ones = jnp.ones((block_d,), _F32)
    _, _, _, h_in = lax.while_loop(
        lambda c: c[0] >= 0, step, (chunk - 1, ones, jnp.zeros((block_d,), _F32), h0)
    )  # tile 0: no walk, h_in = h0

    # the state leaving the tile published first (the tiles after it wait on it), then the kept
    # rows fixed up with the entering state
    h_out = big_h[-1] + big_a[-1] * h_in
    inc_ref[me, :] = h_out
    barrier()
    # flag -> 2 (tile 0 from 0, the others from 1); arithmetic, not jnp.where: the Triton
    # lowering (jax 0.10.2) gives a where of two Python ints the condition's type (i1)
    is_first = (chunk == 0).astype(jnp.int32)
    if publish_inclusive:
        add = is_first * _PUBLISHED_AGG + (_PUBLISHED_INC - _PUBLISHED_AGG)
    else:  # tests: only tile 0 publishes its prefix, so every walk goes back to it
        add = is_first * _PUBLISHED_INC
    plt.atomic_add(flags_ref, (me,), add)
    for i in range(block_t):
        cols.store(h_ref, big_h[i] + big_a[i] * h_in, b, t0 + i, valid=valid(i))
    cols.store(hlast_ref, h_out, b, valid=chunk == n_chunks - 1)


@functools.partial(
    jax.jit, static_argnames=("cfg", "interpret", "publish_inclusive", "all_outputs")
)
def _scan_fwd_chained(
    a, x, h0, cfg: Config, interpret: bool, publish_inclusive: bool = True, all_outputs=False
):
    """The forward pass as b * cdiv(t, block_t) * cdiv(d, block_d) programs chained across time
    (`_scan_fwd_chained_kernel`) instead of b * cdiv(d, block_d) programs that walk all of t.
    The flags and counter are fresh zeros per call (aliased into the kernel's outputs); the
    published transforms and prefixes are outputs written before they are read (12 bytes per
    channel per tile) and dropped. Tests: `publish_inclusive=False` (only tile 0 publishes its
    prefix), `all_outputs` (h, h_last, flags + counter, transforms, prefixes)."""
    b, t, d = x.shape
    n_dblk, n_chunks = pl.cdiv(d, cfg.block_d), pl.cdiv(t, cfg.block_t)
    rows = b * n_dblk
    n_tiles = rows * n_chunks
    kernel = functools.partial(
        _scan_fwd_chained_kernel, t=t, d=d, block_t=cfg.block_t, block_d=cfg.block_d,
        n_dblk=n_dblk, rows=rows, n_chunks=n_chunks, publish_inclusive=publish_inclusive,
        interpret=interpret,
    )  # fmt: skip
    outs = pl.pallas_call(
        kernel,
        out_shape=(
            jax.ShapeDtypeStruct(x.shape, x.dtype),
            jax.ShapeDtypeStruct((b, d), _F32),
            jax.ShapeDtypeStruct((n_tiles + 1,), jnp.int32),  # flags, then the counter
            jax.ShapeDtypeStruct((n_tiles, 2, cfg.block_d), _F32),  # transforms (A, H)
            jax.ShapeDtypeStruct((n_tiles, cfg.block_d), _F32),  # inclusive prefixes
        ),
        grid=(n_tiles,),
        input_output_aliases={3: 2},
        name="griffin_scan_fwd_chained",
        **_params(cfg, interpret),
    )(a, x, h0, jnp.zeros((n_tiles + 1,), jnp.int32))
    return outs if all_outputs else outs[:2]


@functools.partial(jax.jit, static_argnames=("x_dtype", "cfg", "interpret"))
def _scan_bwd(a, h, h0, dh, dh_last, x_dtype, cfg: Config, interpret: bool):
    b, t, d = h.shape
    kernel = functools.partial(_scan_bwd_kernel, t=t, d=d, block_t=cfg.block_t, block_d=cfg.block_d)
    return pl.pallas_call(
        kernel,
        out_shape=(
            jax.ShapeDtypeStruct(a.shape, a.dtype),
            jax.ShapeDtypeStruct(h.shape, x_dtype),
            jax.ShapeDtypeStruct((b, d), _F32),
        ),
        grid=(b, pl.cdiv(d, cfg.block_d)),
        name="griffin_scan_bwd",
        **_params(cfg, interpret),
    )(a, h, h0, dh, dh_last)


def _scan_fwd_any(a, x, h0, cfg, chained: bool, interpret: bool):
    """The forward pass: cfg a MosaicConfig (the Mosaic GPU kernel) or a Config (the
    Triton-lowered kernels, chained or walking)."""
    if isinstance(cfg, MosaicConfig):
        return _scan_fwd_mosaic(a, x, h0, cfg)
    if chained:
        return _scan_fwd_chained(a, x, h0, cfg, interpret)
    return _scan_fwd(a, x, h0, cfg, interpret)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _linear_scan(a, x, h0, fwd_cfg, bwd_cfg, chained, interpret):
    return _scan_fwd_any(a, x, h0, fwd_cfg, chained, interpret)


def _linear_scan_vjp_fwd(a, x, h0, fwd_cfg, bwd_cfg, chained, interpret):
    h, h_last = _scan_fwd_any(a, x, h0, fwd_cfg, chained, interpret)
    return (h, h_last), (a, h, h0)


def _linear_scan_vjp_bwd(fwd_cfg, bwd_cfg, chained, interpret, res, cotangents):
    a, h, h0 = res
    dh, dh_last = cotangents
    da, dx, dh0 = _scan_bwd(a, h, h0, dh, dh_last.astype(_F32), h.dtype, bwd_cfg, interpret)
    return da, dx, dh0.astype(h0.dtype)


_linear_scan.defvjp(_linear_scan_vjp_fwd, _linear_scan_vjp_bwd)


def _state0(h0, b: int, d: int) -> jax.Array:
    if h0 is None:
        return jnp.zeros((b, d), _F32)
    if h0.shape != (b, d):
        raise ValueError(f"h0 must be float32 [b, d] = [{b}, {d}]; got {h0.shape}")
    return h0.astype(_F32)


def linear_scan(
    a: jax.Array,
    x: jax.Array,
    h0: jax.Array | None = None,
    *,
    fwd_config: Config | None = None,
    bwd_config: Config | None = None,
    fwd_chained: bool | None = None,
    fwd_mosaic: bool | None = None,
    mosaic_config: MosaicConfig | None = None,
    interpret: bool | None = None,
):
    """`h_t = a_t h_{t-1} + x_t` with Pallas kernels (forward and backward); as linear_scan_ref.

    Args:
      a, x: [b, t, d] (any float dtypes). h0: float32 [b, d] or None (zeros).
      fwd_config / bwd_config: launch parameters (default SCAN_FWD_CONFIG, or
        SCAN_FWD_CHAINED_CONFIG for the chained forward / SCAN_BWD_CONFIG).
      fwd_chained: the forward as tiles chained across time (`_scan_fwd_chained`) instead of one
        program per channel block walking all of t (default SCAN_FWD_CHAINED, off).
      fwd_mosaic: the Mosaic GPU forward (`_scan_fwd_mosaic`) where it applies: compiled (not
        interpreted), not chained, `mosaic_applies(x, mosaic_config)`; elsewhere the
        Triton-lowered forward (default SCAN_FWD_MOSAIC, on).
      mosaic_config: its tile, block, buffers and L2 prefetch (default SCAN_FWD_MOSAIC_CONFIG).
      interpret: run in Pallas's interpreter (default: default_interpret()).
    Returns:
      h: [b, t, d] in x.dtype; h_last: float32 [b, d]. Differentiable in a, x and h0.
    """
    if x.ndim != 3 or a.shape != x.shape:
        raise ValueError(f"a and x must both be [b, t, d]; got a {a.shape}, x {x.shape}")
    b, t, d = x.shape
    state = _state0(h0, b, d)
    if t == 0:
        return jnp.zeros(x.shape, x.dtype), state
    chained = SCAN_FWD_CHAINED if fwd_chained is None else bool(fwd_chained)
    interpret = default_interpret() if interpret is None else bool(interpret)
    fwd_cfg = _checked_config(
        fwd_config or (SCAN_FWD_CHAINED_CONFIG if chained else SCAN_FWD_CONFIG)
    )
    mosaic = SCAN_FWD_MOSAIC if fwd_mosaic is None else bool(fwd_mosaic)
    mosaic_cfg = MosaicConfig(*(mosaic_config or SCAN_FWD_MOSAIC_CONFIG))
    if (
        mosaic
        and not interpret
        and not chained
        and a.dtype == x.dtype
        and mosaic_applies(x, mosaic_cfg)
    ):
        fwd_cfg = mosaic_cfg
    return _linear_scan(
        a, x, state, fwd_cfg, _checked_config(bwd_config or SCAN_BWD_CONFIG), chained, interpret
    )


# ----------------------------------------------------------------------------- RG-LRU kernels


def _rglru_fwd_kernel(
    x_ref, gx_ref, ga_ref, ap_ref, seg_ref, h0_ref, y_ref, hlast_ref,
    *, t, d, block_t, block_d, has_seg,
):  # fmt: skip
    cols = _Cols(d, block_d)
    b = cols.b
    sp = _softplus(cols.load(ap_ref))

    def rows(t0, n, h):
        x = [cols.load(x_ref, b, t0 + i) for i in range(n)]
        gx = [cols.load(gx_ref, b, t0 + i) for i in range(n)]
        ga = [cols.load(ga_ref, b, t0 + i) for i in range(n)]
        reset = [seg_ref[b, t0 + i] == 0 if has_seg else None for i in range(n)]
        for i in range(n):
            _, gate_i, _, a, _, mult = _gates(gx[i], ga[i], sp, reset[i])
            h = a * h + x[i] * gate_i * mult
            cols.store(y_ref, h, b, t0 + i)
        return h

    h = _forward_chunks(t, block_t, rows, cols.load(h0_ref, b))
    cols.store(hlast_ref, h, b)


def _rglru_bwd_kernel(
    x_ref, gx_ref, ga_ref, ap_ref, seg_ref, h0_ref, y_ref, dy_ref, dhlast_ref,
    dx_ref, dgx_ref, dga_ref, dsp_ref, dh0_ref,
    *, t, d, block_t, block_d, has_seg,
):  # fmt: skip
    cols = _Cols(d, block_d)
    b = cols.b
    sp = _softplus(cols.load(ap_ref))
    h0 = cols.load(h0_ref, b)

    def rows(t0, n, carry, first):
        c, dsp = carry
        x = [cols.load(x_ref, b, t0 + i) for i in range(n)]
        gx = [cols.load(gx_ref, b, t0 + i) for i in range(n)]
        ga = [cols.load(ga_ref, b, t0 + i) for i in range(n)]
        g = [cols.load(dy_ref, b, t0 + i) for i in range(n)]
        hp = [h0 if first and i == 0 else cols.load(y_ref, b, t0 + i - 1) for i in range(n)]
        reset = [seg_ref[b, t0 + i] == 0 if has_seg else None for i in range(n)]
        for i in reversed(range(n)):
            r, gate_i, e, a, z, mult = _gates(gx[i], ga[i], sp, reset[i])
            delta = g[i] + c  # c = a_{t+1} δ_{t+1}
            d_a = delta * hp[i]
            d_mult = delta * x[i] * gate_i
            if reset[i] is not None:
                d_a = jnp.where(reset[i], 0.0, d_a)
                d_mult = jnp.where(reset[i], 0.0, d_mult)
            d_z = d_mult * lax.rsqrt(jnp.maximum(4.0 * z, _MIN_4Z))  # clipped sqrt gradient
            d_log_a = d_a * e - 2.0 * d_z * (e * e)
            cols.store(dx_ref, delta * gate_i * mult, b, t0 + i)
            cols.store(dgx_ref, delta * x[i] * mult * gate_i * (1.0 - gate_i), b, t0 + i)
            cols.store(dga_ref, d_log_a * (-8.0 * sp) * r * (1.0 - r), b, t0 + i)
            dsp = dsp + d_log_a * (-8.0 * r)
            c = a * delta
        return c, dsp

    c, dsp = _reverse_chunks(
        t, block_t, rows, (cols.load(dhlast_ref, b), jnp.zeros((block_d,), _F32))
    )
    cols.store(dsp_ref, dsp, b)
    cols.store(dh0_ref, c, b)  # dh0 = a_0 δ_0


def _seg(segment_pos, b: int, t: int):
    """int32 [b, t] (a dummy [1, 1] when there are no resets: never read)."""
    if segment_pos is None:
        return jnp.ones((1, 1), jnp.int32)
    return segment_pos.astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("has_seg", "cfg", "interpret"))
def _rglru_fwd(x, gx, ga, a_param, seg, h0, has_seg, cfg: Config, interpret: bool):
    b, t, d = x.shape
    kernel = functools.partial(
        _rglru_fwd_kernel, t=t, d=d, block_t=cfg.block_t, block_d=cfg.block_d, has_seg=has_seg
    )
    return pl.pallas_call(
        kernel,
        out_shape=(jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct((b, d), _F32)),
        grid=(b, pl.cdiv(d, cfg.block_d)),
        name="griffin_rglru_fwd",
        **_params(cfg, interpret),
    )(x, gx, ga, a_param, seg, h0)


@functools.partial(jax.jit, static_argnames=("has_seg", "cfg", "interpret"))
def _rglru_bwd(x, gx, ga, a_param, seg, h0, y, dy, dh_last, has_seg, cfg, interpret):
    b, t, d = x.shape
    kernel = functools.partial(
        _rglru_bwd_kernel, t=t, d=d, block_t=cfg.block_t, block_d=cfg.block_d, has_seg=has_seg
    )
    return pl.pallas_call(
        kernel,
        out_shape=(
            jax.ShapeDtypeStruct(x.shape, x.dtype),
            jax.ShapeDtypeStruct(gx.shape, gx.dtype),
            jax.ShapeDtypeStruct(ga.shape, ga.dtype),
            jax.ShapeDtypeStruct((b, d), _F32),
            jax.ShapeDtypeStruct((b, d), _F32),
        ),
        grid=(b, pl.cdiv(d, cfg.block_d)),
        name="griffin_rglru_bwd",
        **_params(cfg, interpret),
    )(x, gx, ga, a_param, seg, h0, y, dy, dh_last)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9))
def _rg_lru(x, gx, ga, a_param, seg, h0, has_seg, fwd_cfg, bwd_cfg, interpret):
    return _rglru_fwd(x, gx, ga, a_param, seg, h0, has_seg, fwd_cfg, interpret)


def _rg_lru_vjp_fwd(x, gx, ga, a_param, seg, h0, has_seg, fwd_cfg, bwd_cfg, interpret):
    y, h_last = _rglru_fwd(x, gx, ga, a_param, seg, h0, has_seg, fwd_cfg, interpret)
    return (y, h_last), (x, gx, ga, a_param, seg, h0, y)


def _rg_lru_vjp_bwd(has_seg, fwd_cfg, bwd_cfg, interpret, res, cotangents):
    x, gx, ga, a_param, seg, h0, y = res
    dy, dh_last = cotangents
    dx, dgx, dga, dsp, dh0 = _rglru_bwd(
        x, gx, ga, a_param, seg, h0, y, dy, dh_last.astype(_F32), has_seg, bwd_cfg, interpret
    )
    d_a_param = (dsp.sum(0) * jax.nn.sigmoid(a_param.astype(_F32))).astype(a_param.dtype)
    return dx, dgx, dga, d_a_param, None, dh0.astype(h0.dtype)


_rg_lru.defvjp(_rg_lru_vjp_fwd, _rg_lru_vjp_bwd)


def rg_lru(
    x: jax.Array,
    gate_x: jax.Array,
    gate_a: jax.Array,
    a_param: jax.Array,
    segment_pos: jax.Array | None = None,
    h0: jax.Array | None = None,
    *,
    fwd_config: Config | None = None,
    bwd_config: Config | None = None,
    interpret: bool | None = None,
):
    """The fused RG-LRU with Pallas kernels (forward and backward); as rg_lru_ref.

    Args:
      x, gate_x, gate_a: [b, t, d] (the gates pre-sigmoid). a_param: [d] (Λ).
      segment_pos: int [b, t] or None (0 = document start: the state resets). h0: float32 [b, d]
        or None.
      fwd_config / bwd_config: launch parameters (default RGLRU_FWD_CONFIG / RGLRU_BWD_CONFIG).
      interpret: run in Pallas's interpreter (default: default_interpret()).
    Returns:
      y: [b, t, d] in x.dtype; h_last: float32 [b, d]. Differentiable in x, gate_x, gate_a,
      a_param and h0.
    """
    if x.ndim != 3 or gate_x.shape != x.shape or gate_a.shape != x.shape:
        raise ValueError(
            f"x, gate_x, gate_a must be [b, t, d]; got {x.shape}, {gate_x.shape}, {gate_a.shape}"
        )
    b, t, d = x.shape
    if a_param.shape != (d,):
        raise ValueError(f"a_param must be [d] = [{d}], got {a_param.shape}")
    if segment_pos is not None and segment_pos.shape != (b, t):
        raise ValueError(f"segment_pos must be [b, t] = [{b}, {t}], got {segment_pos.shape}")
    state = _state0(h0, b, d)
    if t == 0:
        return jnp.zeros(x.shape, x.dtype), state
    return _rg_lru(
        x,
        gate_x,
        gate_a,
        a_param,
        _seg(segment_pos, b, t),
        state,
        segment_pos is not None,
        _checked_config(fwd_config or RGLRU_FWD_CONFIG),
        _checked_config(bwd_config or RGLRU_BWD_CONFIG),
        default_interpret() if interpret is None else bool(interpret),
    )
