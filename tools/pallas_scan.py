"""Measures the Pallas scan and RG-LRU kernels per block configuration beside the associative scan (GPU).

Time the Pallas (Triton lowering) scan and RG-LRU of kernels/pallas.py on a CUDA JAX backend at
the benchmark shape (B=8, T=4096, D=2560, bf16), for a few block configurations, beside
`jax.lax.associative_scan` (the fastest JAX peer); every variant is checked against the JAX
references (relative Frobenius error of outputs and gradients) before it is timed.

    python tools/pallas_scan.py --out FILE.json [--t 4096] [--reps 20] [--scan-fwd-only]
        [--kernel-times]

The chained scan forward (linear_scan(fwd_chained=True): one program per time tile x channel
block, decoupled look-back) is swept over CHAINED_FWD_CONFIGS, and the Mosaic GPU forward
(linear_scan(fwd_mosaic=True)) over MOSAIC_FWD_CONFIGS, beside the default forward kernel;
--scan-fwd-only times just the scan forwards (default kernel, chained and Mosaic sweeps,
associative scan) and one forward+backward each with the Mosaic and the chained forward.

Timing: jitted, compilation excluded; the median a call as the suite's JaxTimer takes it (rounds
of back-to-back calls, one block_until_ready a round), beside the median of --reps calls synced
one at a time (the host's round trip included) and, with --kernel-times, the kernels' GPU time a
call from a CUPTI trace.
Forward+backward is one jitted call of jax.vjp (the forward kernel and the backward kernel).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, run as a script

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bench.timing import JaxTimer, TimingConfig
from kernels import pallas as P
from kernels.rglru_jax import rg_lru_ref, sqrt_bound_derivative
from kernels.scan_jax import linear_scan_ref

B, D = 8, 2560
DTYPE = jnp.bfloat16
# [b, t, d] tensors moved (the floor): forward; forward + backward (as bench/kernel_workloads.py)
TENSORS = {"scan": (3, 8), "rglru": (4, 12)}

# (block_t, block_d, num_warps, num_stages); long unrolled backward chunks compile slowly
SCAN_FWD_CONFIGS = [
    P.Config(32, 32, 1, 2),
    P.Config(16, 32, 1, 2),
    P.Config(64, 32, 1, 2),
    P.Config(32, 32, 1, 3),
    P.Config(16, 64, 1, 2),
]
SCAN_BWD_CONFIGS = [P.Config(32, 32, 1, 2), P.Config(16, 32, 1, 2), P.Config(16, 64, 1, 2)]
# the chained forward: (time tile, channels, warps, stages unused). Rows per thread
# (block_t * block_d / (32 * warps)) of 32 used ~128 registers (ptxas, sm_90), 64 ~250 (no
# spills) and compile slower; 128 would spill, so no tile of 128 steps on one thread's channel.
CHAINED_FWD_CONFIGS = [
    P.Config(16, 32, 1, 1),
    P.Config(32, 32, 1, 1),
    P.Config(64, 32, 1, 1),
    P.Config(32, 64, 1, 1),
    P.Config(32, 64, 2, 1),
    P.Config(64, 64, 2, 1),
    P.Config(32, 128, 4, 1),
    P.Config(64, 128, 4, 1),
]
# the Mosaic GPU forward (linear_scan(fwd_mosaic=True)): (time tile, channels, shared-memory
# buffers, L2 prefetch distance in tiles). The H100 sweep (docs/h100.md): (64, 128,
# 2, 0) best at T=4096 and 16384; the others 7-27% slower at 4096.
MOSAIC_FWD_CONFIGS = [
    P.MosaicConfig(64, 128, 2, 0),
    P.MosaicConfig(64, 128, 2, 1),
    P.MosaicConfig(64, 128, 2, 2),
    P.MosaicConfig(32, 128, 3, 0),
    P.MosaicConfig(32, 128, 3, 2),
    P.MosaicConfig(32, 128, 4, 2),
    P.MosaicConfig(16, 128, 6, 2),
    P.MosaicConfig(32, 256, 2, 0),
    P.MosaicConfig(32, 256, 2, 2),
]
RGLRU_FWD_CONFIGS = [
    P.Config(8, 32, 1, 2),
    P.Config(4, 32, 1, 2),
    P.Config(16, 32, 1, 2),
    P.Config(8, 64, 1, 2),
]
RGLRU_BWD_CONFIGS = [P.Config(8, 32, 1, 2), P.Config(4, 32, 1, 2), P.Config(8, 64, 1, 2)]


def time_ms(fn, *args, reps: int, warmup: int = 3) -> tuple[float, list[float], float]:
    """(median ms a call as the suite's JaxTimer takes it: rounds of back-to-back calls, one
    sync a round; its samples; median ms of calls synced one at a time, the host's round trip
    to the device included)."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    synced = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        synced.append((time.perf_counter() - t0) * 1e3)
    timing = JaxTimer().measure(
        lambda: fn(*args), cfg=TimingConfig(warmup=1, min_reps=reps, max_reps=reps * 100)
    )
    return timing.median_ms, timing.samples_ms, statistics.median(synced)


def kernel_us(fn, *args, calls: int = 20) -> dict | None:
    """GPU time of `calls` back-to-back calls as torch.profiler's CUPTI trace sees it (it is
    process-wide, so it sees XLA's and Pallas's kernels): busy µs a call and each kernel's
    µs a call. None without torch's CUDA."""
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.cuda.init()
    jax.block_until_ready(fn(*args))
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)
    with tempfile.TemporaryDirectory() as tmp:  # the trace's kernel events (as .gpu scripts read)
        prof.export_chrome_trace(f"{tmp}/trace.json")
        events = json.loads(Path(f"{tmp}/trace.json").read_text())["traceEvents"]
    by_name: dict[str, float] = {}
    for e in events:
        if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset"):
            by_name[e["name"][:80]] = by_name.get(e["name"][:80], 0.0) + e["dur"] / calls
    return {"busy_us": sum(by_name.values()), "kernels_us": by_name}


@jax.jit
def _rel(out, ref):
    o, r = out.astype(jnp.float32), ref.astype(jnp.float32)
    err = jnp.linalg.norm((o - r).ravel()) / jnp.maximum(jnp.linalg.norm(r.ravel()), 1e-30)
    return jnp.where(jnp.all(jnp.isfinite(o)), err, jnp.inf)


def rel(out, ref) -> float:
    """Relative Frobenius error (inf if any element is not finite), computed on the device."""
    return float(_rel(out, ref))


def assoc_scan(a, x):
    def combine(left, right):
        (a1, x1), (a2, x2) = left, right
        return a1 * a2, a2 * x1 + x2

    _, h = jax.lax.associative_scan(combine, (a.astype(jnp.float32), x.astype(jnp.float32)), axis=1)
    return h.astype(x.dtype)


def rg_lru_assoc(x, gx, ga, a_param, seg):
    """rg_lru_ref's math with the scan as jax.lax.associative_scan (unfused XLA)."""
    log_a = (
        -8.0 * jax.nn.sigmoid(ga.astype(jnp.float32)) * jax.nn.softplus(a_param.astype(jnp.float32))
    )
    a = jnp.exp(log_a)
    mult = sqrt_bound_derivative(1.0 - jnp.exp(2.0 * log_a))
    reset = (seg == 0)[..., None]
    a, mult = jnp.where(reset, 0.0, a), jnp.where(reset, 1.0, mult)
    xn = x.astype(jnp.float32) * jax.nn.sigmoid(gx.astype(jnp.float32)) * mult
    return assoc_scan(a, xn.astype(jnp.float32)).astype(x.dtype)


def fwd_bwd(f, n_diff):
    """jit(primals, dy) -> (y, grads of the first n_diff primals)."""

    def run(*args):
        *primals, dy = args
        diff, rest = primals[:n_diff], primals[n_diff:]
        y, vjp = jax.vjp(lambda *d: f(*d, *rest), *diff)
        return y, vjp(dy)

    return jax.jit(run)


def inputs(t: int, seed: int = 0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 8)
    shape = (B, t, D)
    a = (0.5 + 0.5 * jax.random.uniform(ks[0], shape)).astype(DTYPE)
    x = jax.random.normal(ks[1], shape).astype(DTYPE)
    gx = jax.random.normal(ks[2], shape).astype(DTYPE)
    ga = jax.random.normal(ks[3], shape).astype(DTYPE)
    radius = jnp.sqrt(jax.random.uniform(ks[4], (D,)) * (0.999**2 - 0.9**2) + 0.9**2)
    a_param = jnp.log(jnp.expm1(-jnp.log(radius))).astype(DTYPE)
    dy = jax.random.normal(ks[5], shape).astype(DTYPE)
    pos = np.tile(np.arange(t), (B, 1))
    rng = np.random.default_rng(seed)
    for row in range(B):
        for s in sorted(rng.integers(1, t, 3)):
            pos[row, s:] = np.arange(t - s)
    return dict(a=a, x=x, gx=gx, ga=ga, a_param=a_param, dy=dy, seg=jnp.asarray(pos, jnp.int32))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--t", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument(
        "--scan-fwd-only",
        action="store_true",
        help="only the scan forwards (and Mosaic / chained fwd+bwd)",
    )
    ap.add_argument(
        "--kernel-times",
        action="store_true",
        help="also each variant's GPU kernel time a call, from a torch.profiler (CUPTI) trace",
    )
    args = ap.parse_args()
    if jax.default_backend() != "gpu":
        raise SystemExit(f"needs a CUDA JAX backend; this one is {jax.default_backend()!r}")
    t, reps = args.t, args.reps
    n = B * t * D
    inp = inputs(t)
    a, x, gx, ga, a_param, dy, seg = (
        inp[k] for k in ("a", "x", "gx", "ga", "a_param", "dy", "seg")
    )
    rows: list[dict] = []
    start = time.perf_counter()

    def record(op, mode, impl, cfg, ms, samples, errs, compile_s, synced_ms=None, kernels=None):
        tensors = TENSORS[op][mode == "fwdbwd"]
        row = {
            "op": op,
            "mode": mode,
            "impl": impl,
            "config": None if cfg is None else cfg._asdict(),
            "median_ms": ms,
            "samples_ms": samples,
            "gbps": tensors * n * 2 / (ms * 1e-3) / 1e9,
            "rel_err": errs,
            "compile_s": compile_s,
            "synced_ms": synced_ms,
            "kernels": kernels,
        }
        rows.append(row)
        worst = max(errs.values()) if errs else float("nan")
        busy = f" kernels {kernels['busy_us'] / 1e3:.3f} ms" if kernels else ""
        print(
            f"{op:6s} {mode:7s} {impl:22s} {tuple(cfg) if cfg else ''!s:18s} "
            f"{ms:8.3f} ms {row['gbps']:7.0f} GB/s (synced {synced_ms:.3f} ms{busy})  "
            f"max rel err {worst:.2e}  (compile {compile_s:.1f} s)",
            flush=True,
        )

    def run_variant(op, mode, impl, cfg, fn, fargs, ref):
        try:
            t0 = time.perf_counter()
            out = jax.block_until_ready(fn(*fargs))
            compile_s = time.perf_counter() - t0
            flat_out = jax.tree_util.tree_leaves(out)
            errs = {name: rel(o, r) for (name, r), o in zip(ref.items(), flat_out, strict=True)}
            ms, samples, synced_ms = time_ms(fn, *fargs, reps=reps)
            kernels = kernel_us(fn, *fargs) if args.kernel_times else None
            record(op, mode, impl, cfg, ms, samples, errs, compile_s, synced_ms, kernels)
        except Exception as exc:  # a config that does not compile is recorded, the sweep goes on
            rows.append({"op": op, "mode": mode, "impl": impl, "config": cfg and cfg._asdict(),
                         "error": f"{type(exc).__name__}: {exc}"[:2000]})  # fmt: skip
            print(f"{op} {mode} {impl} {cfg}: {type(exc).__name__}: {str(exc)[:300]}", flush=True)

    # --- scan: references (float32 lax.scan), then the variants
    ref_f = jax.jit(lambda a, x: linear_scan_ref(a, x)[0])
    ref_fb = fwd_bwd(lambda a, x: linear_scan_ref(a, x)[0], 2)
    h_ref = ref_f(a, x)
    hr, (dar, dxr) = ref_fb(a, x, dy)
    scan_fwd_ref = {"h": h_ref}
    scan_fb_ref = {"h": hr, "da": dar, "dx": dxr}
    for cfg in [P.SCAN_FWD_CONFIG] if args.scan_fwd_only else SCAN_FWD_CONFIGS:
        f = jax.jit(lambda a, x, cfg=cfg: P.linear_scan(a, x, fwd_config=cfg)[0])
        run_variant("scan", "fwd", "pallas", cfg, f, (a, x), scan_fwd_ref)
    for cfg in CHAINED_FWD_CONFIGS:
        f = jax.jit(lambda a, x, cfg=cfg: P.linear_scan(a, x, fwd_config=cfg, fwd_chained=True)[0])
        run_variant("scan", "fwd", "pallas-chained", cfg, f, (a, x), scan_fwd_ref)
    for cfg in MOSAIC_FWD_CONFIGS:
        f = jax.jit(
            lambda a, x, cfg=cfg: P.linear_scan(a, x, fwd_mosaic=True, mosaic_config=cfg)[0]
        )
        run_variant("scan", "fwd", "pallas-mosaic", cfg, f, (a, x), scan_fwd_ref)
    fb = fwd_bwd(lambda a, x: P.linear_scan(a, x, fwd_mosaic=True)[0], 2)
    run_variant("scan", "fwdbwd", "pallas-mosaic(fwd)", P.SCAN_FWD_MOSAIC_CONFIG, fb, (a, x, dy),
                scan_fb_ref)  # fmt: skip
    fb = fwd_bwd(lambda a, x: P.linear_scan(a, x, fwd_chained=True)[0], 2)
    run_variant("scan", "fwdbwd", "pallas-chained(fwd)", P.SCAN_FWD_CHAINED_CONFIG, fb,
                (a, x, dy), scan_fb_ref)  # fmt: skip
    if not args.scan_fwd_only:
        for cfg in SCAN_BWD_CONFIGS:
            fb = fwd_bwd(lambda a, x, cfg=cfg: P.linear_scan(a, x, bwd_config=cfg)[0], 2)
            run_variant("scan", "fwdbwd", "pallas(bwd cfg)", cfg, fb, (a, x, dy), scan_fb_ref)
    run_variant("scan", "fwd", "jax-associative", None, jax.jit(assoc_scan), (a, x), scan_fwd_ref)
    if not args.scan_fwd_only:
        run_variant("scan", "fwdbwd", "jax-associative", None, fwd_bwd(assoc_scan, 2),
                    (a, x, dy), scan_fb_ref)  # fmt: skip

        # --- RG-LRU, with document resets
        def ref_rg(x, gx, ga, ap, seg):
            return rg_lru_ref(x, gx, ga, ap, seg)[0]

        yr = jax.jit(ref_rg)(x, gx, ga, a_param, seg)
        yr2, grads_r = fwd_bwd(ref_rg, 4)(x, gx, ga, a_param, seg, dy)
        rg_fwd_ref = {"y": yr}
        rg_fb_ref = dict(
            zip(("y", "dx", "dgate_x", "dgate_a", "da_param"), (yr2, *grads_r), strict=True)
        )
        for cfg in RGLRU_FWD_CONFIGS:
            f = jax.jit(lambda *v, cfg=cfg: P.rg_lru(*v, fwd_config=cfg)[0])
            run_variant("rglru", "fwd", "pallas", cfg, f, (x, gx, ga, a_param, seg), rg_fwd_ref)
        for cfg in RGLRU_BWD_CONFIGS:
            fb = fwd_bwd(lambda *v, cfg=cfg: P.rg_lru(*v, bwd_config=cfg)[0], 4)
            run_variant("rglru", "fwdbwd", "pallas(bwd cfg)", cfg, fb, (x, gx, ga, a_param, seg, dy),
                        rg_fb_ref)  # fmt: skip
        run_variant("rglru", "fwd", "xla+jax-associative", None, jax.jit(rg_lru_assoc),
                    (x, gx, ga, a_param, seg), rg_fwd_ref)  # fmt: skip
        run_variant("rglru", "fwdbwd", "xla+jax-associative", None, fwd_bwd(rg_lru_assoc, 4),
                    (x, gx, ga, a_param, seg, dy), rg_fb_ref)  # fmt: skip

    result = {
        "probe": "pallas_scan",
        "shape": {"batch": B, "seq_len": t, "width": D, "dtype": "bfloat16"},
        "device": str(jax.devices()[0].device_kind),
        "jax": jax.__version__,
        "defaults": {
            "SCAN_FWD_CONFIG": P.SCAN_FWD_CONFIG._asdict(),
            "SCAN_BWD_CONFIG": P.SCAN_BWD_CONFIG._asdict(),
            "SCAN_FWD_CHAINED_CONFIG": P.SCAN_FWD_CHAINED_CONFIG._asdict(),
            "SCAN_FWD_MOSAIC_CONFIG": P.SCAN_FWD_MOSAIC_CONFIG._asdict(),
            "RGLRU_FWD_CONFIG": P.RGLRU_FWD_CONFIG._asdict(),
            "RGLRU_BWD_CONFIG": P.RGLRU_BWD_CONFIG._asdict(),
        },
        "scan_fwd_only": args.scan_fwd_only,
        "timing": f"jit, block_until_ready, median of {reps} after 3 warm-up calls",
        "rows": rows,
        "wall_s": time.perf_counter() - start,
    }
    print(f"total {result['wall_s']:.1f} s on {result['device']}, jax {jax.__version__}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
