"""Measures the batch-1 Pallas GEMVs of kernels/gemv_jax.py against XLA's dots (GPU).

Time the batch-1 Pallas GEMVs of kernels/gemv_jax.py against XLA at the RecurrentGemma-2B decode
shapes, bf16, for a few block configurations: the JAX twin of tools/gemv.py (same output
format: ms, GB/s, fraction of the copy bandwidth). Every variant is checked against the `_ref`
(float32 inputs, highest matmul precision, on the GPU) before it is timed; one whose relative
error passes MAX_REL_ERR is reported and not timed.

    python tools/gemv_jax.py --out FILE.json [--reps 100] [--rounds 5] [--cold]
                                    [--shapes NAME ...] [--quick]

Variants per shape: "xla_ref" (the `_ref` jitted: the model's own ops, norm / bias / cap /
residual / gelu included, as XLA compiles them in the decode step), "xla_dot" (the bare products
x @ w.T, or x @ w[0] and x @ w[1]: XLA's GEMV alone) and ours for each config (None = the module's
default). The up-projection is timed in the model's [2, K, N] layout and as rows=True on a
transposed copy ([2, N, K], what a decoder would make once).

Timing: one jitted function makes `reps` calls, each on its own x (distinct inputs: no CSE), and
returns every output; time per call = wall time of one such call (block_until_ready) / reps,
median of `rounds` after a warm-up call (compilation excluded). One dispatch per round, so the
host's share is small, and the kernels run back to back in one XLA program as in the decode
step. XLA's dot-merger pass is disabled (XLA_FLAGS, set before the backend starts), as it would
otherwise merge the `reps` products that share a weight into one matrix-matrix product. GB/s
counts the weights' and vectors' bytes and is compared with bench.ceilings' 1 GiB copy (torch),
measured in the same run before JAX takes the GPU. Weights smaller than L2 (50 MB on the H100)
stay in it across calls, so their fraction of copy can pass 100%; `--cold` rotates each shape's
calls through copies of its weights (at least COLD_BYTES in all) so that none finds them in L2,
as in the decode step.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, run as a script

import argparse
import json
import math
import os
import statistics
import time
import zlib

DT_NAME = "bfloat16"
# name -> (K, [N_i], kind, norm, residual, cap): "rows" = the model's linear weights [N, K];
# "up" = the MLP's ffw_up.w [2, K, N]
SHAPES = {
    "rg2b xy (2560 -> 2x2560, norm)": (2560, [2560, 2560], "rows", True, False, None),
    "rg2b out (2560 -> 2560, +res)": (2560, [2560], "rows", False, True, None),
    "rg2b up (2560 -> 2x7680, norm, gelu)": (2560, [7680], "up", True, False, None),
    "rg2b down (7680 -> 2560, +res)": (7680, [2560], "rows", False, True, None),
    "rg2b qkv (2560 -> 2560+256+256, norm)": (2560, [2560, 256, 256], "rows", True, False, None),
    "rg2b logits (2560 -> 256000, norm, cap)": (2560, [256000], "rows", True, False, 30.0),
}
# (block_n, block_k, num_warps, num_stages); None = the module default
ROW_CONFIGS = [
    None,
    (2, 2048, 4, 3),
    (4, 1024, 4, 3),
    (4, 1024, 4, 2),
    (8, 512, 4, 3),
    (8, 1024, 8, 3),
    (16, 256, 4, 3),
    (32, 128, 4, 3),
]
UP_CONFIGS = [None, (16, 64, 4, 3), (32, 64, 4, 3), (16, 128, 8, 3), (8, 256, 4, 3), (64, 32, 4, 3)]
QUICK_ROW_CONFIGS = [None, (8, 512, 4, 3)]
QUICK_UP_CONFIGS = [None, (32, 64, 4, 3)]
COLD_BYTES = 256 << 20  # --cold: five times the H100's 50 MB L2
MAX_REL_ERR = 2e-2  # bf16 outputs against the float32 reference
EPS = 1e-6


def timed(fn, args, reps: int, rounds: int) -> float:
    """ms per call: `fn(*args)` makes `reps` calls; median of `rounds` after a warm-up."""
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - t) * 1e3 / reps)
    return statistics.median(times)


def rel(a, b) -> float:
    import jax.numpy as jnp

    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    if not bool(jnp.all(jnp.isfinite(a))):
        return math.inf
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def one_shape(name, spec, args, copy) -> dict:
    import jax
    import jax.numpy as jnp

    from kernels import gemv_jax as G

    k, ns, kind, has_norm, has_res, cap = spec
    dt = jnp.dtype(DT_NAME)
    key = jax.random.PRNGKey(zlib.crc32(name.encode()))
    kx, ks, kr, kw = jax.random.split(key, 4)
    reps = args.reps
    xs = list(jax.random.normal(kx, (reps, 1, k), jnp.float32).astype(dt))
    scale = (0.1 * jax.random.normal(ks, (k,), jnp.float32)).astype(dt)
    norm = (scale, EPS) if has_norm else None
    weight_bytes = 2 * k * ns[0] * dt.itemsize if kind == "up" else k * sum(ns) * dt.itemsize
    copies = max(1, math.ceil(COLD_BYTES / weight_bytes)) if args.cold else 1
    copies = min(copies, reps)
    nbytes = weight_bytes + (k + (ns[0] if kind == "up" else sum(ns))) * dt.itemsize
    wkeys = jax.random.split(kw, copies)
    f32 = jnp.float32

    def f32norm():
        return None if norm is None else (scale.astype(f32), EPS)

    if kind == "up":
        n = ns[0]
        wc = [(jax.random.normal(wk, (2, k, n), f32) * k**-0.5).astype(dt) for wk in wkeys]
        with jax.default_matmul_precision("highest"):
            want = G.gemv_gated_up_ref(xs[0].astype(f32), wc[0].astype(f32), None, f32norm())
        res = None

        def ref_one(x, w):
            return G.gemv_gated_up_ref(x, w, None, norm)

        def dot_one(x, w):
            return [x @ w[0], x @ w[1]]

        rows_c = [jnp.swapaxes(w, 1, 2).copy() for w in wc]  # [2, N, K]
        ours = {}
        for cfg in QUICK_UP_CONFIGS if args.quick else UP_CONFIGS:
            ours[str(cfg)] = (
                lambda x, w, c=cfg: G.gemv_gated_up(x, w, None, norm, config=c),
                wc,
                cfg,
            )
        for cfg in QUICK_ROW_CONFIGS if args.quick else ROW_CONFIGS:
            ours[f"rows {cfg}"] = (
                lambda x, w, c=cfg: G.gemv_gated_up(x, w, None, norm, rows=True, config=c),
                rows_c,
                ("rows", cfg),
            )
    else:
        wc = [
            [(jax.random.normal(jax.random.fold_in(wk, i), (n_i, k), f32) * k**-0.5).astype(dt)
             for i, n_i in enumerate(ns)]
            for wk in wkeys
        ]  # fmt: skip
        res = jax.random.normal(kr, (1, ns[0]), f32).astype(dt) if has_res else None
        with jax.default_matmul_precision("highest"):
            want = G.gemv_ref(
                xs[0].astype(f32), [w.astype(f32) for w in wc[0]], None,
                None if res is None else res.astype(f32), f32norm(), cap,
            )[0]  # fmt: skip

        def ref_one(x, ws):
            return G.gemv_ref(x, ws, None, res, norm, cap)

        def dot_one(x, ws):
            return [x @ w.T for w in ws]

        ours = {
            str(cfg): (lambda x, ws, c=cfg: G.gemv(x, ws, None, res, norm, cap, config=c), wc, cfg)
            for cfg in (QUICK_ROW_CONFIGS if args.quick else ROW_CONFIGS)
        }

    def many(one, weights):
        """reps calls, call i on xs[i] and weight copy i % copies, every output returned."""

        def f(xs, weights):
            return [one(x, weights[i % len(weights)]) for i, x in enumerate(xs)]

        return jax.jit(f), (xs, weights)

    def first(out):
        return out[0] if isinstance(out, list) else out

    row = {"shape": name, "bytes": nbytes, "weight_copies": copies}
    for label, one in (("xla_ref", ref_one), ("xla_dot", dot_one)):
        fn, fargs = many(one, wc)
        try:
            out = fn(*fargs)
            err = rel(first(out[0]), want) if label == "xla_ref" else None
            ms = timed(fn, fargs, reps, args.rounds)
            row[f"{label}_ms"] = ms
            row[f"{label}_frac_copy"] = nbytes / ms / 1e6 / copy
            row[f"{label}_rel_err"] = err
        except Exception as exc:
            row[f"{label}_error"] = repr(exc)[:300]
        del fn
    row["ours"] = []
    for one, weights, cfg in ours.values():
        entry = {"config": cfg}
        try:
            fn, fargs = many(one, weights)
            out = fn(*fargs)
            entry["rel_err"] = err = rel(first(out[0]), want)  # call 0: x 0, weight copy 0
            if not err <= MAX_REL_ERR:
                entry["error"] = f"rel err {err:.3g} > {MAX_REL_ERR}: not timed"
            else:
                entry["ms"] = ms = timed(fn, fargs, reps, args.rounds)
                entry["frac_copy"] = nbytes / ms / 1e6 / copy
        except Exception as exc:  # a config Triton cannot build: say so, go on
            entry["error"] = repr(exc)[:300]
        row["ours"].append(entry)
    timed_ours = [o for o in row["ours"] if "ms" in o]
    xla = (
        f"XLA ref {row['xla_ref_ms'] * 1e3:7.1f} us ({row['xla_ref_frac_copy']:.0%})"
        if "xla_ref_ms" in row
        else f"XLA ref failed: {row.get('xla_ref_error', '')[:80]}"
    )
    if "xla_dot_ms" in row:
        xla += f"  dot {row['xla_dot_ms'] * 1e3:7.1f} us ({row['xla_dot_frac_copy']:.0%})"
    if timed_ours:
        best = min(timed_ours, key=lambda o: o["ms"])
        row["best"] = best
        ours_s = (
            f"ours best {best['ms'] * 1e3:7.1f} us ({best['frac_copy']:.0%}, {best['config']}, "
            f"err {best['rel_err']:.1e})"
        )
    else:
        ours_s = "ours: none timed"
    print(f"{name:42s} {xla}  {ours_s}", flush=True)
    for o in row["ours"]:
        detail = (
            f"{o['ms'] * 1e3:7.1f} us ({o['frac_copy']:.0%}) err {o['rel_err']:.1e}"
            if "ms" in o
            else o["error"][:160]
        )
        print(f"    {o['config']!s:32s} {detail}", flush=True)
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description="Pallas GEMVs (kernels/gemv_jax.py) against XLA at RG-2B batch-1 shapes"
    )
    parser.add_argument("--out", required=True, help="JSON file for the results")
    parser.add_argument("--reps", type=int, default=100, help="calls per timed jitted function")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (median)")
    parser.add_argument(
        "--cold", action="store_true", help="rotate each shape's weights through copies > L2"
    )
    parser.add_argument(
        "--shapes", nargs="*", default=None, help="substrings of shape names (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="two configs per kernel only")
    args = parser.parse_args(argv)

    flags = os.environ.get("XLA_FLAGS", "")
    if "dot-merger" not in flags:  # before JAX starts its backend (see the module docstring)
        os.environ["XLA_FLAGS"] = f"{flags} --xla_disable_hlo_passes=dot-merger".strip()
    # tools/gemv.py (beside this file): the harness's copy ceiling, before JAX takes the GPU
    from gemv import copy_gbps

    copy, copy_method = copy_gbps(), "bench.ceilings"
    import jax

    if jax.default_backend() != "gpu":
        raise SystemExit(f"needs a CUDA JAX backend, got {jax.default_backend()!r}")
    print(f"copy {copy:.0f} GB/s ({copy_method}); jax {jax.__version__}", flush=True)
    t0 = time.perf_counter()
    doc = {
        "copy_gbps": copy,
        "copy_method": copy_method,
        "device": str(jax.devices()[0].device_kind),
        "jax": jax.__version__,
        "cold": args.cold,
        "reps": args.reps,
        "rounds": args.rounds,
        "xla_flags": os.environ["XLA_FLAGS"],
        "shapes": [],
    }
    for name, spec in SHAPES.items():
        if args.shapes and not any(s in name for s in args.shapes):
            continue
        doc["shapes"].append(one_shape(name, spec, args, copy))
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
        jax.clear_caches()
    doc["wall_s"] = time.perf_counter() - t0
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"total {doc['wall_s']:.1f} s on {doc['device']}", flush=True)


if __name__ == "__main__":
    main()
