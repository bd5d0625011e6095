"""Measures the batch-1 GEMV kernels against cuBLAS, per shape and in the whole decode step (GPU).

Time the batch-1 GEMVs of kernels/gemv.py against cuBLAS (F.linear / matmul) at the
RecurrentGemma-2B and Gemma-2B decode shapes, bf16, for a few block configurations, and the
whole decode step (StaticDecoder, CUDA graph) with and without them, and with them launched
with programmatic dependent launch (`pdl`). Every variant is checked against the `_ref`
(float32 on the GPU) before it is timed.

    python tools/gemv.py --out FILE.json [--reps 200] [--no-shapes] [--cold]
                                [--models M ...]

Timing: CUDA events around `reps` back-to-back calls captured in one CUDA graph (no launch gaps
from the host), median of 5 such rounds, per call; GB/s counts the weights' and vectors' bytes
and is compared with a 1 GiB device copy measured in the same run. Weights smaller than the L2
cache (50 MB on the H100) stay in it across the repeated calls, so their "fraction of copy" can
pass 100%: compare those shapes with cuBLAS under the same conditions, not with the floor. The
decode step (5 GB of weights per step) has no such effect: there every weight comes from DRAM.
`--cold` times the shapes that way too: each call takes the next of as many copies of the
weights as make at least COLD_BYTES, so no call finds its weights in L2 (the regime of the decode
step, where an H100 profile of the step put the small GEMVs at 69% of copy and the up-projections at 77%
while this probe, L2-hot, read 86-138%).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, run as a script

import argparse
import itertools
import json
import math
import statistics

import torch
import torch.nn.functional as F

from kernels.gemv import gemv, gemv_gated_up, gemv_gated_up_ref, gemv_ref

DT = torch.bfloat16
# name -> (K, [N_i], kind): "rows" = nn.Linear weights [N, K]; "up" = the MLP's [2, K, N]
SHAPES = {
    "rg2b xy (2560 -> 2x2560, norm)": (2560, [2560, 2560], "rows"),
    "rg2b out (2560 -> 2560, +res)": (2560, [2560], "rows"),
    "rg2b up (2560 -> 2x7680, norm, gelu)": (2560, [7680], "up"),
    "rg2b down (7680 -> 2560, +res)": (7680, [2560], "rows"),
    "rg2b qkv (2560 -> 2560+256+256)": (2560, [2560, 256, 256], "rows"),
    "rg2b logits (2560 -> 256000, cap)": (2560, [256000], "rows"),
    "gemma qkv (2048 -> 2048+256+256)": (2048, [2048, 256, 256], "rows"),
    "gemma up (2048 -> 2x16384)": (2048, [16384], "up"),
    "gemma down (16384 -> 2048)": (16384, [2048], "rows"),
}
ROW_CONFIGS = [None, (2, 2048, 4), (4, 1024, 4), (8, 512, 4), (8, 1024, 8), (16, 256, 4)]
COLD_BYTES = 256 << 20  # --cold: five times the H100's 50 MB L2
UP_CONFIGS = [None, (16, 64, 4), (32, 64, 4), (16, 128, 8), (8, 256, 4)]


def graph_time(fn, reps: int) -> float:
    """ms per call: `reps` calls in one CUDA graph, median of 5 replays."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    times = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / reps)
    return statistics.median(times)


def copy_gbps() -> float:
    """The harness's copy ceiling (bench.ceilings). The first runs of this probe timed an int16
    copy in a CUDA graph instead, which read ~19% lower on the H100 (2432 vs 3002 GB/s)."""
    from bench.ceilings import measure

    return measure("cuda")["copy_gbps"]


def rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def shapes(reps: int, copy: float, cold: bool = False) -> list[dict]:
    g = torch.Generator(device="cuda").manual_seed(0)
    return [one_shape(name, *spec, reps, copy, g, cold) for name, spec in SHAPES.items()]


def _rotating(fns):
    """One callable that calls `fns` in turn (under graph capture: the graph holds each in
    turn, so its replays read one weight copy after another)."""
    if len(fns) == 1:
        return fns[0]
    turn = itertools.cycle(fns)
    return lambda: next(turn)()


def one_shape(name, k, ns, kind, reps, copy, g, cold: bool = False) -> dict:
    x = torch.randn(1, k, device="cuda", dtype=DT, generator=g)
    scale = 0.1 * torch.randn(k, device="cuda", dtype=DT, generator=g)
    weight_bytes = 2 * k * ns[0] * 2 if kind == "up" else k * sum(ns) * 2
    copies = max(1, math.ceil(COLD_BYTES / weight_bytes)) if cold else 1
    if kind == "up":
        nbytes = weight_bytes + (k + ns[0]) * 2
        wc = [torch.randn(2, k, ns[0], device="cuda", dtype=DT, generator=g) * k**-0.5
              for _ in range(copies)]  # fmt: skip
        want = gemv_gated_up_ref(x.float(), wc[0].float(), None, (scale.float(), 1e-6))
        ours = {cfg: _rotating([lambda c=cfg, w=w: gemv_gated_up(x, w, None, (scale, 1e-6),
                                                                   config=c) for w in wc])
                for cfg in UP_CONFIGS}  # fmt: skip
        rows_c = [w.transpose(1, 2).contiguous() for w in wc]  # the decoder's copy: [2, N, K]
        for cfg in ROW_CONFIGS:
            ours[("rows", cfg)] = _rotating([
                lambda c=cfg, w=w: gemv_gated_up(x, w, None, (scale, 1e-6), rows=True, config=c)
                for w in rows_c
            ])  # fmt: skip

        def cublas_one(w):
            h = x * 1.0  # the norm is a separate kernel in the cuBLAS path
            return F.gelu(h @ w[0], approximate="tanh") * (h @ w[1])
    else:
        nbytes = weight_bytes + (k + sum(ns)) * 2
        wc = [[torch.randn(n, k, device="cuda", dtype=DT, generator=g) * k**-0.5 for n in ns]
              for _ in range(copies)]  # fmt: skip
        norm = (scale, 1e-6) if len(ns) > 1 or "logits" in name else None
        cap = 30.0 if "logits" in name else None
        res = torch.randn(1, ns[0], device="cuda", dtype=DT, generator=g) if "res" in name else None
        want = gemv_ref(x.float(), [w.float() for w in wc[0]], None,
                        None if res is None else res.float(),
                        None if norm is None else (scale.float(), 1e-6), cap)[0]  # fmt: skip
        ours = {cfg: _rotating([lambda c=cfg, ws=ws: gemv(x, ws, None, res, norm, cap, config=c)[0]
                                for ws in wc])
                for cfg in ROW_CONFIGS}  # fmt: skip

        def cublas_one(ws):
            return [F.linear(x, w) for w in ws]

    cublas = _rotating([lambda w=w: cublas_one(w) for w in wc])
    row = {"shape": name, "bytes": nbytes, "weight_copies": copies}
    row["cublas_ms"] = graph_time(cublas, reps)
    row["cublas_frac_copy"] = nbytes / row["cublas_ms"] / 1e6 / copy
    row["ours"] = []
    for cfg, fn in ours.items():
        try:
            err = rel(fn(), want)  # a rotation's first call reads copy 0, the one `want` is of
            ms = graph_time(fn, reps)
            row["ours"].append({"config": cfg, "ms": ms, "rel_err": err,
                                "frac_copy": nbytes / ms / 1e6 / copy})  # fmt: skip
        except Exception as e:  # a config Triton cannot build: say so, go on
            row["ours"].append({"config": cfg, "error": repr(e)[:300]})
    best = min((o for o in row["ours"] if "ms" in o), key=lambda o: o["ms"])
    print(f"{name:40s} cuBLAS {row['cublas_ms'] * 1e3:7.1f} us "
          f"({row['cublas_frac_copy']:.0%})  ours best {best['ms'] * 1e3:7.1f} us "
          f"({best['frac_copy']:.0%}, {best['config']}, err {best['rel_err']:.1e})",
          flush=True)  # fmt: skip
    return row


def decode_steps(models: list[str], reps: int) -> list[dict]:
    from models.config import preset
    from models.torch import Model
    from models.torch.optimized import StaticDecoder

    out = []
    for name in models:
        torch.manual_seed(0)
        m = Model(preset(name), impl="optimized", device="cuda", dtype=DT).eval()
        tokens = torch.randint(0, m.config.vocab_size, (1, 2048), device="cuda")
        pos = torch.arange(2048, device="cuda")[None]
        with torch.no_grad():
            _, cache = m.prefill(tokens, pos, logits="last")
        row = {"model": name}
        logits = {}
        variants = {"gemv=False": {"gemv": False}, "gemv=True": {"gemv": True, "pdl": False},
                    "gemv+pdl": {"gemv": True, "pdl": True}}  # fmt: skip
        for key, kwargs in variants.items():
            try:
                dec = StaticDecoder(m, cache, capacity=2048 + reps + 16, **kwargs)
                tok, p = tokens[:, :1], pos[:, :1] + 2048
                logits[key] = dec.step(tok, p).float().clone()
                times = []
                for _ in range(3):
                    dec.load(cache)
                    torch.cuda.synchronize()
                    a = torch.cuda.Event(enable_timing=True)
                    b = torch.cuda.Event(enable_timing=True)
                    a.record()
                    for _ in range(reps // 3):
                        dec.step(tok, p)
                    b.record()
                    torch.cuda.synchronize()
                    times.append(a.elapsed_time(b) / (reps // 3))
                row[key] = {"ms": statistics.median(times), "rounds_ms": times}
                if key != "gemv=False":
                    row[key]["rel_err_logits"] = rel(logits[key], logits["gemv=False"])
                del dec
            except Exception as exc:  # a variant that fails (e.g. PDL under graph capture)
                row[key] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            torch._dynamo.reset()
        row["rel_err_logits"] = row["gemv=True"].get("rel_err_logits")
        print(f"{name}: decode step " + ", ".join(
            f"{k} {v['ms']:.3f} ms" if "ms" in v else f"{k} {v['error']}" for k, v in row.items()
            if isinstance(v, dict)) + f" (logits rel diff {row['rel_err_logits']})", flush=True)  # fmt: skip
        out.append(row)
        del m
        torch.cuda.empty_cache()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--models", nargs="*", default=["recurrentgemma-2b", "gemma-2b"])
    parser.add_argument("--no-shapes", action="store_true", help="only the decode steps")
    parser.add_argument(
        "--cold", action="store_true", help="rotate each shape's weights through copies > L2"
    )
    args = parser.parse_args()
    copy = copy_gbps()
    print(f"copy {copy:.0f} GB/s", flush=True)
    doc = {"copy_gbps": copy, "device": torch.cuda.get_device_name(), "cold": args.cold}
    if not args.no_shapes:
        doc["shapes"] = shapes(args.reps, copy, args.cold)
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
    doc["decode"] = decode_steps(args.models, 60)
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
