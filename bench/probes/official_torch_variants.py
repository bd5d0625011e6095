"""How the official recurrentgemma torch model's time depends on how it is called.

DESIGN.md's peer figures for the official torch code (prefill 3012 ms, train step 12.1 s at the
RecurrentGemma-2B shape, B=1 T=2048, bf16) do not say how they were taken. This probe times the
official model, built from the harness's weights, in the variants that plausibly differ:

- prefill under torch.no_grad() (what the harness does) vs with autograd recording;
- a training step with the package default gradient_checkpointing=True (what the harness does)
  vs gradient_checkpointing=False.

    python -m bench.probes.official_torch_variants [--model recurrentgemma-2b] [--out FILE]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def main() -> None:
    from bench.backends import TorchBackend
    from bench.impls.base import torch_train_step
    from bench.timing import TimingConfig
    from bench.worker import source_model
    from models.torch import to_recurrentgemma

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="recurrentgemma-2b")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--out")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    backend = TorchBackend(device)
    timer = backend.timer()
    tcfg = TimingConfig(warmup=1, min_reps=3, max_reps=3, budget_s=0.0)
    source = source_model(args.model, "bfloat16", device)
    rng = np.random.default_rng(0)
    tokens = backend.tokens(rng.integers(0, source.config.vocab_size, (1, args.seq + 1)))
    pos = backend.tokens(np.arange(args.seq)[None])
    x, y = tokens[:, :-1], tokens[:, 1:]
    results = {"model": args.model, "seq": args.seq, "device": backend.device_label()}

    for ckpt in (False, True):
        rg = to_recurrentgemma(source, gradient_checkpointing=ckpt)
        with torch.no_grad():
            t = timer.measure(lambda rg=rg: rg(x, pos, return_cache=True), cfg=tcfg)
        results[f"prefill_no_grad_ckpt={ckpt}_ms"] = t.median_ms
        with torch.enable_grad():
            t = timer.measure(lambda rg=rg: rg(x, pos, return_cache=True), cfg=tcfg)
        results[f"prefill_grad_ckpt={ckpt}_ms"] = t.median_ms
        step, restore = torch_train_step(rg, lambda a, b, rg=rg: rg(a, b, return_cache=False)[0])
        t = timer.measure(lambda step=step: step(x, pos, y), cfg=tcfg)
        results[f"train_step_ckpt={ckpt}_ms"] = t.median_ms
        restore()
        del rg, step
        backend.free()
        print(json.dumps(results), flush=True)
        if args.out:  # after each variant: a time limit loses only the variant in flight
            with open(args.out, "w") as f:
                json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
