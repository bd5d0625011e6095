"""Measures the decode step's attention kernel against SDPA at RG-2B and Gemma-2B shapes (GPU).

The decode step's attention alone, on the GPU: kernels.decode_attention against the SDPA call
the optimized model made before (models.torch.optimized._sdpa_mqa), at the RecurrentGemma-2B
(10 query heads, a 2049-slot ring buffer) and Gemma-2B (8 heads, 2304 global slots) shapes,
batch 1 and 16, bf16; and the kernel as the decoder calls it (the step's key and value written
into the cache and RoPE applied in the kernel: timed only, as it computes another function). Each timed as a CUDA-graph replay (triton.testing.do_bench_cudagraph),
with its error against float32 math and the cache's bytes over the time.

    python tools/decode_attention.py [--out FILE.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, run as a script

import argparse
import json

import torch
from triton.testing import do_bench_cudagraph

from kernels.decode_attention import mqa_decode, mqa_decode_ref
from models.torch.optimized import _sdpa_mqa

SHAPES = [("recurrentgemma-2b", 10, 256, 2049), ("gemma-2b", 8, 256, 2304)]


def case(name: str, n: int, h: int, s: int, b: int) -> dict:
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (
        torch.randn(*shape, generator=g, device="cuda", dtype=torch.bfloat16)
        for shape in [(b, n, h), (b, s, h), (b, s, h)]
    )
    mask = torch.ones(b, s, dtype=torch.bool, device="cuda")
    mask[:, : s // 8] = False  # slots outside the window / not yet written
    ref = mqa_decode_ref(q.float(), k.float(), v.float(), mask)

    def ours():
        return mqa_decode(q, k, v, mask)

    def sdpa():
        return _sdpa_mqa(q[:, None], k, v, mask[:, None]).view(b, n, h)

    k_new, v_new = k[:, -1].clone(), v[:, -1].clone()
    slot = torch.tensor([s - 1], device="cuda")
    positions = torch.full((b,), 2048, device="cuda")

    def fused():  # as the decoder calls it: the new key/value written, RoPE applied, in-kernel
        return mqa_decode(q, k, v, mask, new=(k_new, v_new, slot), rope=(positions, h, 1e4))

    row = dict(model=name, batch=b, heads=n, slots=s)
    for label, fn in (("ours", ours), ("sdpa", sdpa), ("fused", fused)):
        if label != "fused":  # (fused attends with RoPE applied: another function)
            row[f"{label}_err"] = float((fn().float() - ref).norm() / ref.norm())
        row[f"{label}_us"] = do_bench_cudagraph(fn) * 1e3
    row["ours_gb_s"] = 2 * k.numel() * k.element_size() / row["ours_us"] / 1e3
    print(
        f"{name:18s} b={b:2d}: ours {row['ours_us']:7.1f} us ({row['ours_gb_s']:5.0f} GB/s of "
        f"k+v, err {row['ours_err']:.1e}), SDPA {row['sdpa_us']:7.1f} us (err "
        f"{row['sdpa_err']:.1e}); with the cache write and RoPE in the kernel "
        f"{row['fused_us']:7.1f} us",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    args = parser.parse_args()
    rows = [case(name, n, h, s, b) for name, n, h, s in SHAPES for b in (1, 16)]
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
