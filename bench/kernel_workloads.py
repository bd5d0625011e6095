"""Kernel workloads: one recurrent-block op (scan, fused RG-LRU, Conv1D) on [b, t, d] tensors,
forward or forward + backward, for every kernel implementation of the catalog.

    kernel_scan    h_t = a_t h_{t-1} + x_t
    kernel_rglru   the RG-LRU after its gate layers (kernels.rglru), with document resets
    kernel_conv1d  the causal depthwise conv (kernels.conv1d), with document resets

Parameters: seq_len (required), batch (8), width (2560), backward (0: forward, 1: forward +
backward). Inputs are random (never zeros), made on the device from the case's seed. The gate
compares every output and input gradient an implementation returns with the `_ref` twin run in
float64 on a subset of channels (channels are independent), so the reference stays cheap at any
size. Declared bytes: each input read once, each output written once (the floor).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from bench.timing import TimingConfig
from bench.workloads import Measurement, Workload

SUBSET_CHANNELS = 64

# tensors of [b, t, d] elements moved: forward; forward + backward
TENSORS = {"scan": (3, 8), "rglru": (4, 12), "conv1d": (2, 5)}
# arithmetic per element, forward (backward about twice): counted for completeness
FLOPS = {"scan": 2, "rglru": 30, "conv1d": 8}


def subset(width: int) -> np.ndarray:
    step = max(1, width // SUBSET_CHANNELS)
    return np.arange(0, width, step)


def make_inputs(op: str, p: dict, seed: int, device: str, dtype: str) -> dict:
    """Full-size inputs (torch, on the device) and the output cotangent `dy`."""
    import torch

    # [b, t, d] tensors from a generator on the device (fast at any size; the same seed gives the
    # same inputs on the same kind of device), small ones from a CPU generator
    dev_g = torch.Generator(device=device).manual_seed(seed)
    g = torch.Generator(device="cpu").manual_seed(seed)
    b, t, d = p["batch"], p["seq_len"], p["width"]
    tdtype = getattr(torch, dtype)

    def randn(*shape, scale=1.0):
        if len(shape) == 3:
            return (torch.randn(*shape, generator=dev_g, device=device) * scale).to(tdtype)
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=tdtype)

    out = {}
    if op == "scan":
        a = 0.5 + 0.5 * torch.rand(b, t, d, generator=dev_g, device=device)
        out["a"] = a.to(tdtype)
        out["x"] = randn(b, t, d)
    else:
        # documents of random lengths: a reset at t = 0 and about every t/4 steps
        pos = torch.zeros(b, t, dtype=torch.long)
        for row in range(b):
            starts = sorted({0, *torch.randint(1, max(t, 2), (3,), generator=g).tolist()})
            for s in starts:
                if s < t:
                    pos[row, s:] = torch.arange(t - s)
        out["segment_pos"] = pos.to(device)
        out["x"] = randn(b, t, d)
        if op == "rglru":
            out["gate_x"], out["gate_a"] = randn(b, t, d), randn(b, t, d)
            radius = torch.sqrt(torch.rand(d, generator=g) * (0.999**2 - 0.9**2) + 0.9**2)
            out["a_param"] = torch.log(torch.expm1(-torch.log(radius))).to(
                device=device, dtype=tdtype
            )
        else:
            out["w"], out["b"] = randn(4, d, scale=0.5), randn(d, scale=0.1)
    out["dy"] = randn(b, t, d)
    return out


def reference(op: str, inputs: dict, backward: bool) -> dict[str, np.ndarray]:
    """The `_ref` twin in float64 on the channel subset, on the CPU (a loop over time of small
    ops runs faster there than as GPU launches): outputs and (if backward) gradients."""
    import torch

    d = inputs["x"].shape[-1]
    idx = torch.as_tensor(subset(d), device=inputs["x"].device)
    sub = {
        k: (v.index_select(-1, idx).double() if k not in ("segment_pos",) else v).cpu()
        for k, v in inputs.items()
    }
    grads = {k: sub[k].requires_grad_() for k in _DIFF[op]} if backward else {}
    if op == "scan":
        from kernels.scan import linear_scan_ref

        y, _ = linear_scan_ref(sub["a"], sub["x"])
        names = {"h": y}
    elif op == "rglru":
        from kernels.rglru import rg_lru_ref

        y, _ = rg_lru_ref(
            sub["x"], sub["gate_x"], sub["gate_a"], sub["a_param"], sub["segment_pos"]
        )
        names = {"y": y}
    else:
        from kernels.conv1d import conv1d_ref

        y, _ = conv1d_ref(sub["x"], sub["w"], sub["b"], sub["segment_pos"])
        names = {"y": y}
    out = {k: v.detach().cpu().numpy() for k, v in names.items()}
    if backward:
        (y * sub["dy"]).sum().backward()
        out.update({f"d{k}": v.grad.detach().cpu().numpy() for k, v in grads.items()})
    return out


_DIFF = {
    "scan": ("a", "x"),
    "rglru": ("x", "gate_x", "gate_a", "a_param"),
    "conv1d": ("x", "w", "b"),
}


class KernelWorkload(Workload):
    kind = "kernel"
    required = ("seq_len",)
    defaults: ClassVar[dict] = {"batch": 8, "width": 2560}
    flags: ClassVar[dict] = {"backward": 0}  # 0 or 1

    DESCRIPTIONS: ClassVar[dict] = {
        "scan": "the linear scan h_t = a_t h_(t-1) + x_t over [batch, seq_len, width]",
        "rglru": "the fused RG-LRU (gates, scan, output) over [batch, seq_len, width]",
        "conv1d": "the temporal Conv1D (width 4) over [batch, seq_len, width]",
    }

    def __init__(self, op: str):
        self.op = op
        self.name = f"kernel_{op}"
        self.description = self.DESCRIPTIONS[op] + "; forward, or forward + backward"

    def normalize(self, params: dict) -> dict:
        p = dict(params)
        backward = p.pop("backward", self.flags["backward"])
        if backward not in (0, 1) or isinstance(backward, bool):
            raise ValueError(f"workload {self.name!r}: backward must be 0 or 1, got {backward!r}")
        p = super().normalize(p)
        p["backward"] = backward
        return p

    def gate_outputs(self, handle, p: dict, dtype: str, seed: int) -> dict[str, np.ndarray]:
        """The implementation's outputs and gradients on the reference's channel subset."""
        inputs = make_inputs(self.op, p, seed, handle.backend.device, dtype)
        result = handle.collect(inputs, bool(p["backward"]))
        idx = subset(p["width"])
        return {k: np.asarray(v, dtype=np.float64)[..., idx] for k, v in result.items()}

    def reference(self, p: dict, dtype: str, seed: int, device: str) -> dict[str, np.ndarray]:
        return reference(self.op, make_inputs(self.op, p, seed, device, dtype), bool(p["backward"]))

    def measure(self, handle, p: dict, dtype: str, seed: int, tcfg: TimingConfig) -> Measurement:
        inputs = make_inputs(self.op, p, seed, handle.backend.device, dtype)
        fn = handle.prepare(inputs, bool(p["backward"]))
        fn, timer, capture_error = graphed(fn, handle.backend)
        timing = handle.backend.timer().measure(fn, cfg=tcfg)
        n = p["batch"] * p["seq_len"] * p["width"]
        itemsize = {"float32": 4, "bfloat16": 2, "float16": 2}[dtype]
        tensors = TENSORS[self.op][p["backward"]]
        work = {
            "flops": float(FLOPS[self.op] * n * (3 if p["backward"] else 1)),
            "bytes": float(tensors * n * itemsize),
            "tokens": p["batch"] * p["seq_len"],
        }
        floor_ms = None
        extra = {"elements": n, "tensors_moved": tensors, "floor_ms": floor_ms}
        if capture_error:
            extra["graph_capture_error"] = capture_error
        return Measurement(timing, work, extra=extra, timer=timer)


def graphed(fn, backend):
    """(the function to time, the timer's name or None, the capture's error or None).

    torch on a GPU: `fn` captured once as a CUDA graph and timed as its replay ("cuda_graph"),
    as the regression gate does (bench.regress.capture_round): an eager fwd+bwd call goes
    through autograd's Python and allocations, and below T=8192 on the H100 those host steps,
    not the kernels, set its time (docs/h100.md). A call that cannot be captured (a
    peer that syncs with the host) is timed eagerly, with the capture's error in the record.
    Elsewhere: `fn` as it is."""
    if getattr(backend, "name", None) != "torch" or not getattr(backend, "on_gpu", False):
        return fn, None, None
    from bench.regress import capture_round

    try:
        return capture_round(fn, calls=1, sync=False), "cuda_graph", None
    except Exception as e:
        return fn, None, f"{type(e).__name__}: {e}"[:500]


KERNEL_WORKLOADS = tuple(KernelWorkload(op) for op in ("scan", "rglru", "conv1d"))


def rel_errors(out: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, float]:
    """Relative Frobenius error of every output both sides have."""
    errs = {}
    for k in sorted(set(out) & set(ref)):
        o, r = out[k], ref[k]
        if o.shape != r.shape:
            raise ValueError(f"{k}: shape {o.shape} differs from the reference's {r.shape}")
        if not np.all(np.isfinite(o)):
            errs[k] = math.inf
            continue
        errs[k] = float(np.linalg.norm(o - r) / max(np.linalg.norm(r), 1e-30))
    if not errs:
        raise ValueError(
            f"no output in common with the reference (got {sorted(out)}, ref {sorted(ref)})"
        )
    return errs
