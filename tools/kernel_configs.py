"""Sweeps the Triton scan / RG-LRU / Conv1D block configurations at B=8 D=2560 (GPU).

Sweep the block shapes of our Triton kernels on the GPU at the benchmark shape, check every
variant against the reference, and time the fastest peer (JAX associative scan) in the same run.

    python tools/kernel_configs.py [--out FILE.json] [--quick]

Prints GB/s against the copy bandwidth measured first; the chosen defaults go into the kernels'
FWD_CONFIG / BWD_CONFIG, with the numbers in docs/h100.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, run as a script

import argparse
import itertools
import json
import time

import torch
import triton.testing

from kernels import conv1d as conv_mod
from kernels import rglru as rglru_mod
from kernels import scan as scan_mod

B, D = 8, 2560


def bench_ms(fn) -> float:
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def copy_gbps() -> float:
    n = 1 << 30
    src = torch.empty(n // 4, device="cuda").uniform_()
    dst = torch.empty_like(src)
    return 2 * n / (bench_ms(lambda: dst.copy_(src)) * 1e-3) / 1e9


def rel(a, b) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


_COMPILED: dict = {}


def compiled_info(kernels, cfg, before: dict) -> dict:
    """Registers and spills of each kernel's variant for `cfg` (the compiler's report), read from
    Triton's cache when the call compiled it and remembered for later lengths."""
    info = {}
    for k in kernels:
        name = k.fn.__name__
        try:
            cache = next(iter(k.device_caches.values()))[0]
            if len(cache) > before.get(name, 0):
                c = list(cache.values())[-1]
                _COMPILED[(name, tuple(cfg))] = {"regs": c.n_regs, "spills": c.n_spills}
        except Exception:  # another Triton layout: the report is optional
            pass
        if (name, tuple(cfg)) in _COMPILED:
            info[name] = _COMPILED[(name, tuple(cfg))]
    return info


def cache_sizes(kernels) -> dict:
    sizes = {}
    for k in kernels:
        try:
            sizes[k.fn.__name__] = len(next(iter(k.device_caches.values()))[0])
        except Exception:
            sizes[k.fn.__name__] = 0
    return sizes


def sweep(name, make_call, check, configs, n_bytes, results, ceiling, kernels=()):
    rows = []
    for cfg in configs:
        try:
            call = make_call(cfg)
            before = cache_sizes(kernels)
            out = call()
            torch.cuda.synchronize()
            err = check(out)
            ms = bench_ms(call)
            gbps = n_bytes / (ms * 1e-3) / 1e9
            rows.append(
                {"config": cfg, "ms": ms, "gbps": gbps, "pct_copy": gbps / ceiling, "rel_err": err,
                 "compiled": compiled_info(kernels, cfg, before)}
            )  # fmt: skip
        except Exception as exc:  # a config that does not compile or fit
            rows.append({"config": cfg, "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
    rows.sort(key=lambda r: r.get("ms", float("inf")))
    results[name] = rows
    for r in rows[:5]:
        if "ms" in r:
            print(f"{name:28s} {r['config']!s:28s} {r['ms']:.4f} ms {r['gbps']:7.0f} GB/s "
                  f"{100 * r['pct_copy']:5.1f}% err {r['rel_err']:.1e} {r['compiled']}", flush=True)  # fmt: skip
    bad = [r for r in rows if "error" in r]
    if bad:
        print(f"{name}: {len(bad)} configs failed, e.g. {bad[0]}", flush=True)
    return rows[0]["config"]


def measure_length(T, results, ceiling, grids):
    n = B * T * D
    a = (0.5 + 0.5 * torch.rand(B, T, D, device="cuda")).bfloat16()
    x = torch.randn(B, T, D, device="cuda").bfloat16()
    sub = slice(0, D, 40)  # reference on a channel subset (channels are independent)
    h_ref, _ = scan_mod.linear_scan_ref(a[..., sub].float(), x[..., sub].float())
    if "scan fwd" in grids:
        sweep(
            f"scan fwd T={T}",
            lambda cfg: lambda: scan_mod._forward_walking(a, x, None, cfg),
            lambda out: rel(out[0][..., sub], h_ref),
            grids["scan fwd"],
            3 * n * 2,
            results,
            ceiling,
            (scan_mod._scan_fwd_kernel,),
        )
    if "scan fwd packed" in grids:  # 2 or 4 channels a word, register and L2 prefetch
        sweep(
            f"scan fwd packed T={T}",
            lambda cfg: lambda: scan_mod._forward_packed(a, x, None, cfg),
            lambda out: rel(out[0][..., sub], h_ref),
            grids["scan fwd packed"],
            3 * n * 2,
            results,
            ceiling,
            (scan_mod._scan_fwd_packed_kernel,),
        )
    if "scan bwd" in grids:
        _scan_bwd(a, x, sub, n, results, ceiling, grids)
    if "jax associative" in grids:
        _jax_associative(a, x, T, n, results)
    if any(k in grids for k in ("rglru fwd", "rglru bwd", "conv fwd")):
        _rglru_conv(T, sub, n, results, ceiling, grids)


def _scan_bwd(a, x, sub, n, results, ceiling, grids):
    T = x.shape[1]
    h, _ = scan_mod._forward(a, x, None)
    dh = torch.randn_like(x)
    sweep(
        f"scan bwd T={T}",
        lambda cfg: lambda: scan_mod._backward(a, h, None, dh, None, cfg),
        lambda out: 0.0 if torch.isfinite(out[0]).all() else float("nan"),
        grids["scan bwd"],
        5 * n * 2,
        results,
        ceiling,
        (scan_mod._scan_bwd_kernel,),
    )


def _jax_associative(a, x, T, n, results):
    """The fastest peer: JAX's associative scan (bf16 in/out, float32 combine)."""
    try:
        import jax
        import jax.numpy as jnp

        ja, jx = (
            jnp.asarray(a.float().cpu().numpy()).astype(jnp.bfloat16),
            jnp.asarray(x.float().cpu().numpy()).astype(jnp.bfloat16),
        )

        def combine(l, r):
            return l[0] * r[0], r[0] * l[1] + r[1]

        @jax.jit
        def assoc(a_, x_):
            _, h_ = jax.lax.associative_scan(
                combine, (a_.astype(jnp.float32), x_.astype(jnp.float32)), axis=1
            )
            return h_.astype(jnp.bfloat16)

        jax.block_until_ready(assoc(ja, jx))
        samples = []
        for _ in range(20):
            t0 = time.perf_counter()
            jax.block_until_ready(assoc(ja, jx))
            samples.append((time.perf_counter() - t0) * 1e3)
        ms = sorted(samples)[len(samples) // 2]
        results[f"jax associative T={T}"] = ms
        print(f"jax associative T={T}: {ms:.4f} ms {3 * n * 2 / ms / 1e6:.0f} GB/s", flush=True)
    except Exception as exc:
        print(f"jax associative: {exc}", flush=True)


def _rglru_conv(T, sub, n, results, ceiling, grids):
    """RG-LRU and Conv1D at this length."""
    xs = [torch.randn(B, T, D, device="cuda").bfloat16() for _ in range(3)]
    a_param = torch.randn(D, device="cuda").bfloat16()
    pos = torch.arange(T, device="cuda").repeat(B, 1)
    pos[:, T // 2 :] -= T // 2
    y_ref, _ = rglru_mod.rg_lru_ref(*(v[..., sub] for v in xs), a_param[sub], pos)
    best_rf = rglru_mod.FWD_CONFIG
    if "rglru fwd" in grids:
        best_rf = sweep(
            f"rglru fwd T={T}",
            lambda cfg: lambda: rglru_mod._rglru_forward(*xs, a_param, pos, None, cfg),
            lambda out: rel(out[0][..., sub], y_ref),
            grids["rglru fwd"],
            4 * n * 2,
            results,
            ceiling,
            (rglru_mod._rglru_fwd_kernel,),
        )
    y, _ = rglru_mod._rglru_forward(*xs, a_param, pos, None, best_rf)
    dy = torch.randn_like(y)
    if "rglru bwd" in grids:
        sweep(
            f"rglru bwd T={T}",
            lambda cfg: (
                lambda: rglru_mod._rglru_backward(*xs, a_param, pos, None, y, dy, None, cfg)
            ),
            lambda out: 0.0 if torch.isfinite(out[0]).all() else float("nan"),
            grids["rglru bwd"],
            8 * n * 2,
            results,
            ceiling,
            (rglru_mod._rglru_bwd_kernel,),
        )
    w, bias = (
        torch.randn(4, D, device="cuda").bfloat16(),
        torch.randn(D, device="cuda").bfloat16(),
    )
    c_ref, _ = conv_mod.conv1d_ref(
        xs[0][..., sub].float(), w[:, sub].float(), bias[sub].float(), pos
    )

    def conv_call(cfg):
        conv_mod.FWD_CONFIG = cfg
        return lambda: conv_mod._Conv1D.apply(xs[0], w, bias, pos, None)[0]

    if "conv fwd" in grids:
        sweep(f"conv fwd T={T}", conv_call, lambda out: rel(out[..., sub], c_ref), grids["conv fwd"],
              2 * n * 2, results, ceiling, (conv_mod._conv_fwd_kernel,))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    parser.add_argument("--quick", action="store_true", help="fewer configurations")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="only these sweeps (e.g. 'scan fwd' 'scan fwd packed' 'jax associative')",
    )
    parser.add_argument(
        "--grid", choices=("full", "top"), default="full",
        help="top: only the best configurations of the last full sweep (for A/B runs)",
    )  # fmt: skip
    parser.add_argument(
        "--plain-gates", action="store_true",
        help="the RG-LRU kernels with the former gates (IEEE-path exp/sigmoid/sqrt, masked tiles): "
        "the baseline of an A/B run in one call",
    )  # fmt: skip
    parser.add_argument(
        "--stages", nargs="+", type=int, metavar="N",
        help="the walking sweeps' NUM_STAGES values instead of the grid's (e.g. 4 5 6)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.plain_gates:  # before any kernel compiles: the kernels read these when compiled
        rglru_mod._FAST_MATH = rglru_mod.tl.constexpr(False)
        rglru_mod.EVEN_TILES = False
    torch.manual_seed(0)
    results: dict = {"device": torch.cuda.get_device_name()}
    ceiling = copy_gbps()
    results["copy_gbps"] = ceiling
    print(f"copy {ceiling:.0f} GB/s", flush=True)
    # (BLOCK_T, BLOCK_D, num_warps, CONTIG_D, NUM_STAGES). Earlier sweeps (docs/h100.md) found vector loads (CONTIG_D) and software
    # pipelining (NUM_STAGES 3) faster everywhere, and register spills behind the slow corners;
    # this grid adds narrower channel blocks (more programs, fewer registers per thread).
    P = itertools.product
    grids = {
        "scan fwd": list(P([64, 128, 256], [8, 16, 32], [1, 2], [True], [3, 4])),
        "scan bwd": list(P([32, 64, 128], [16, 32], [1, 2, 4], [True], [3, 4])),
        # (BLOCK_T, BLOCK_P words, num_warps, L2_TILES, PACK); 64-step tiles spill
        "scan fwd packed": [
            (t, p, p // 32, l2, k) for t, p, l2, k in P([16, 32], [32, 64], [0, 1, 2, 3, 4], [2, 4])
        ],
        "rglru fwd": list(P([32, 64, 128], [8, 16, 32], [1, 2, 4], [True], [3])),
        "rglru bwd": list(P([16, 32, 64], [8, 16, 32], [1, 2, 4], [True], [3])),
        "conv fwd": list(P([32, 64, 128], [32, 64], [1, 2, 4], [True], [1])),
        "jax associative": [None],
    }
    if args.grid == "top":  # the best of the last full sweep (docs/h100.md)
        grids = {
            "scan fwd": [(128, 32, 1, True, 3), (64, 32, 1, True, 3), (64, 32, 2, True, 3)],
            "scan fwd packed": [
                (32, 32, 1, 2, 4),
                (32, 64, 2, 2, 4),
                (32, 32, 1, 2, 2),
                (16, 32, 1, 3, 2),
            ],
            "scan bwd": [(32, 32, 1, True, 3), (64, 32, 2, True, 3), (32, 32, 1, True, 4)],
            "rglru fwd": [(32, 32, 1, True, 3), (32, 16, 2, True, 3), (32, 32, 2, True, 3)],
            "rglru bwd": [(16, 16, 1, True, 3), (16, 32, 2, True, 3), (32, 16, 2, True, 3)],
            "conv fwd": [(64, 32, 2, True, 1), (32, 32, 4, True, 1)],
            "jax associative": [None],
        }
    if args.stages:  # (BLOCK_T, BLOCK_D, num_warps, CONTIG_D, NUM_STAGES) grids only
        grids = {
            k: sorted({(*c[:4], n) for c in v for n in args.stages})
            if v and len(v[0] or ()) == 5 and k != "scan fwd packed"
            else v
            for k, v in grids.items()
        }
    if args.only:
        unknown = sorted(set(args.only) - set(grids))
        if unknown:
            raise SystemExit(f"--only {unknown}: valid names are {sorted(grids)}")
        grids = {k: v for k, v in grids.items() if k in args.only}
    if args.quick:
        grids = {k: v[:2] for k, v in grids.items()}

    for T in (4096, 16384):
        # the full sweep at T=4096; at 16384 the two best of each
        g = (
            grids
            if T == 4096
            else {
                k: [r["config"] for r in results[f"{k} T=4096"][:2]]
                if k != "jax associative"
                else v
                for k, v in grids.items()
            }
        )
        measure_length(T, results, ceiling, g)
        torch.cuda.empty_cache()
        if args.out:  # after each length: a cut-off run keeps what it measured
            with open(args.out, "w") as f:
                json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
