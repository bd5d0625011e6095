"""Profiles the optimized torch model's prefill, eager decode step and training step (GPU).

Profile the optimized torch model on the GPU: prefill, one eager decode step and a training
step of a preset (at each of --train-batch, T=2048), random weights, bf16. Prints the kernels
that take the most GPU time.

    python tools/profile_model.py [--model recurrentgemma-2b] [--train-batch 1 8] [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, run as a script

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from bench.impls.base import torch_train_step
from models.config import preset
from models.torch import Model
from models.torch.optimized import chunked_loss


def run(name, fn, out: Path | None, rows: int = 30) -> None:
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        fn()
        torch.cuda.synchronize()
    table = prof.key_averages().table(
        sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=70
    )
    print(f"== {name}\n{table}", flush=True)
    if out:
        (out / f"{name}.txt").write_text(table)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="recurrentgemma-2b")
    parser.add_argument("--out")
    parser.add_argument(
        "--train-batch", type=int, nargs="+", default=[1], help="training step batch sizes"
    )
    args = parser.parse_args()
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    m = Model(preset(args.model), impl="optimized", device="cuda", dtype=torch.bfloat16).eval()
    tokens = torch.randint(0, m.config.vocab_size, (1, 2048), device="cuda")
    pos = torch.arange(2048, device="cuda")[None]
    with torch.no_grad():
        run(f"{args.model}-prefill", lambda: m.prefill(tokens, pos, logits="last"), out)
        _, cache = m.prefill(tokens, pos, logits="last")
        from models.torch.optimized import copy_cache

        run(
            f"{args.model}-decode-eager",
            lambda: m.decode(tokens[:, :1], pos[:, :1] + 2048, copy_cache(cache)),
            out,
        )
    # the training step as ours-torch-optimized's (its chunked loss: full float32 logits at B=8
    # would take 16 GB)
    step, restore = torch_train_step(m, m, lambda t, p, y: chunked_loss(m, t, p, y))
    for b in args.train_batch:
        tb = torch.randint(0, m.config.vocab_size, (b, 2048), device="cuda")
        pb, targets = pos.expand(b, -1), torch.roll(tb, -1, 1)
        run(f"{args.model}-train-b{b}", lambda: step(tb, pb, targets), out)  # noqa: B023
    restore()


if __name__ == "__main__":
    main()
