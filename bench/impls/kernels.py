"""Kernel implementations: ours (Triton, and JAX Pallas), our `_ref` loops, an unfused torch
RG-LRU, and the peers (official recurrentgemma torch and jax scans, fla's HGRN scans,
accelerated-scan).

Each is a namespace with `supports(op, device)` and `build(op, dtype, backend)`; the handle offers
    handle.prepare(inputs, backward) -> fn  or  (fn, setup)   the timed call
    handle.collect(inputs, backward) -> {name: array [b, t, d] (or [d], [W, d])}   for the gate
Outputs are named like the reference's: h (scan) or y, and d<input> for gradients. Conversions a
caller would need (JAX arrays, log a for fla, [b, d, t] layout for accelerated-scan) are inside the
timed call; only converting results back for the gate is outside.
"""

from __future__ import annotations

import numpy as np
import torch

_DIFF = {
    "scan": ("a", "x"),
    "rglru": ("x", "gate_x", "gate_a", "a_param"),
    "conv1d": ("x", "w", "b"),
}


class _TorchHandle:
    """A torch op `run(op_inputs) -> y`, differentiated with torch.autograd.grad for backward."""

    out_name = "y"

    def __init__(self, op: str, backend, run):
        self.op, self.backend, self.run = op, backend, run

    def _leaves(self, inputs, backward):
        leaves = {k: (v.detach().requires_grad_() if backward and k in _DIFF[self.op] else v)
                  for k, v in inputs.items() if k != "dy"}  # fmt: skip
        return leaves

    def prepare(self, inputs, backward):
        leaves = self._leaves(inputs, backward)
        dy = inputs["dy"]
        if not backward:
            return torch.no_grad()(lambda: self.run(leaves))
        names = [k for k in _DIFF[self.op] if k in leaves]

        def fwd_bwd():
            y = self.run(leaves)
            return torch.autograd.grad(y, [leaves[k] for k in names], dy)

        return fwd_bwd

    def collect(self, inputs, backward):
        leaves = self._leaves(inputs, backward)
        out = {}
        with torch.enable_grad():
            y = self.run(leaves)
            out[self.out_name] = y.detach()
            if backward:
                names = [k for k in _DIFF[self.op] if k in leaves]
                grads = torch.autograd.grad(y, [leaves[k] for k in names], inputs["dy"])
                out.update({f"d{k}": g for k, g in zip(names, grads, strict=True)})
        return {k: v.float().cpu().numpy() for k, v in out.items()}


def _on_gpu(device: str, who: str) -> str | None:
    return None if device.startswith("cuda") else f"{who} runs on a GPU only"


class OursTriton:
    """kernels.scan.linear_scan, kernels.rglru.rg_lru, kernels.conv1d.conv1d."""

    @staticmethod
    def supports(op, device):
        from kernels._triton import AVAILABLE

        return None if AVAILABLE else "Triton is not installed"

    @staticmethod
    def build(op, dtype, backend):
        from kernels.conv1d import conv1d
        from kernels.rglru import rg_lru
        from kernels.scan import linear_scan

        runs = {
            "scan": lambda i: linear_scan(i["a"], i["x"])[0],
            "rglru": lambda i: rg_lru(
                i["x"], i["gate_x"], i["gate_a"], i["a_param"], i["segment_pos"]
            )[0],
            "conv1d": lambda i: conv1d(i["x"], i["w"], i["b"], i["segment_pos"])[0],
        }
        handle = _TorchHandle(op, backend, runs[op])
        handle.out_name = "h" if op == "scan" else "y"
        return handle


class OursReference:
    """The `_ref` twins: plain torch, the scans as a loop over time (float32 state)."""

    @staticmethod
    def supports(op, device):
        return None

    @staticmethod
    def build(op, dtype, backend):
        from kernels.conv1d import conv1d_ref
        from kernels.rglru import rg_lru_ref
        from kernels.scan import linear_scan_ref

        runs = {
            "scan": lambda i: linear_scan_ref(i["a"], i["x"])[0],
            "rglru": lambda i: rg_lru_ref(
                i["x"], i["gate_x"], i["gate_a"], i["a_param"], i["segment_pos"]
            )[0],
            "conv1d": lambda i: conv1d_ref(i["x"], i["w"], i["b"], i["segment_pos"])[0],
        }
        handle = _TorchHandle(op, backend, runs[op])
        handle.out_name = "h" if op == "scan" else "y"
        return handle


def rg_lru_unfused(x, gate_x, gate_a, a_param, segment_pos):
    """The RG-LRU as separate torch ops (gates in float32) around our Triton scan."""
    import torch.nn.functional as F

    from kernels.rglru import SqrtBoundDerivative
    from kernels.scan import linear_scan

    log_a = -8.0 * torch.sigmoid(gate_a.float()) * F.softplus(a_param.float())
    a = torch.exp(log_a)
    multiplier = SqrtBoundDerivative.apply(1.0 - torch.exp(2.0 * log_a))
    reset = (segment_pos == 0)[..., None]
    a = torch.where(reset, 0.0, a)
    multiplier = torch.where(reset, 1.0, multiplier)
    normalized = x.float() * torch.sigmoid(gate_x.float()) * multiplier
    return linear_scan(a, normalized)[0].to(x.dtype)


class TorchUnfused:
    """RG-LRU only: torch elementwise gates (float32) + our Triton scan: what fusion saves."""

    @staticmethod
    def supports(op, device):
        from kernels._triton import AVAILABLE

        if op != "rglru":
            return f"only the RG-LRU (asked for {op})"
        return None if AVAILABLE else "Triton is not installed"

    @staticmethod
    def build(op, dtype, backend):
        return _TorchHandle(
            op, backend,
            lambda i: rg_lru_unfused(i["x"], i["gate_x"], i["gate_a"], i["a_param"], i["segment_pos"]),
        )  # fmt: skip


class RecurrentGemmaTorch:
    """The official torch code: rnn_scan (a loop over time) and the Conv1D layer."""

    @staticmethod
    def supports(op, device):
        return None if op in ("scan", "conv1d") else f"the official code has no separate {op} op"

    @staticmethod
    def build(op, dtype, backend):
        from recurrentgemma.torch import layers

        if op == "scan":

            def run(i):
                reset = torch.zeros(i["x"].shape[:2], dtype=torch.bool, device=i["x"].device)
                return layers.rnn_scan(i["x"], i["a"], reset, None)[0]

            handle = _TorchHandle(op, backend, run)
            handle.out_name = "h"
            return handle
        modules = {}

        def run_conv(i):
            x, w = i["x"], i["w"]
            key = (x.shape[-1], w.shape[0], x.device, x.dtype)
            if key not in modules:  # the layer once; its parameters are swapped for ours per call
                modules[key] = layers.Conv1D(
                    width=key[0], temporal_width=key[1], device=x.device, dtype=x.dtype
                )
            # the official conv masks its input in place: give it a copy
            args = (x.clone(), i["segment_pos"])
            return torch.func.functional_call(
                modules[key], {"w": w, "b": i["b"]}, args, {"return_cache": False}
            )[0]

        return _TorchHandle(op, backend, run_conv)


class _JaxScan:
    scan_type = None

    @classmethod
    def supports(cls, op, device):
        if op != "scan":
            return f"only the scan (asked for {op})"
        import jax

        if device.startswith("cuda") and jax.default_backend() != "gpu":
            return f"JAX has no GPU backend here ({jax.default_backend()})"
        return None

    @classmethod
    def build(cls, op, dtype, backend):
        import jax
        from recurrentgemma import common
        from recurrentgemma.jax import scan as rg_scan

        scan_type = getattr(common.ScanType, cls.scan_type)

        def f(a, x):
            return rg_scan.linear_scan(x, a, scan_type=scan_type)[0]

        return _JaxHandle(backend, jax.jit(f), jax.jit(lambda a, x, dy: jax.vjp(f, a, x)[1](dy)))


class _JaxHandle:
    def __init__(self, backend, fwd, bwd):
        from bench.backends import JaxBackend

        self.backend = JaxBackend(backend.device)
        self.fwd, self.bwd = fwd, bwd

    @staticmethod
    def _arrays(inputs):
        import jax.numpy as jnp

        def conv(t):
            return jnp.asarray(t.float().cpu().numpy()).astype(
                jnp.bfloat16
                if t.dtype == torch.bfloat16
                else jnp.dtype(str(t.dtype).removeprefix("torch."))
            )

        return conv(inputs["a"]), conv(inputs["x"]), conv(inputs["dy"])

    def prepare(self, inputs, backward):
        a, x, dy = self._arrays(inputs)
        return (
            (lambda: (self.fwd(a, x), self.bwd(a, x, dy))) if backward else (lambda: self.fwd(a, x))
        )

    def collect(self, inputs, backward):
        a, x, dy = self._arrays(inputs)
        out = {"h": np.asarray(self.fwd(a, x), dtype=np.float32)}
        if backward:
            da, dx = self.bwd(a, x, dy)
            out.update(da=np.asarray(da, dtype=np.float32), dx=np.asarray(dx, dtype=np.float32))
        return out


class _JaxOpHandle:
    """A JAX op on the named inputs, jitted; backward is one jitted jax.vjp (forward + backward)
    to the op's float inputs. Torch inputs are converted (to the same dtype) outside the timed
    call, results back to numpy only for the gate."""

    def __init__(self, op: str, backend, run):
        import jax

        from bench.backends import JaxBackend

        self.backend = JaxBackend(backend.device)
        self.op, self.out_name = op, "h" if op == "scan" else "y"
        self.diff = _DIFF[op]
        self.extra = () if op == "scan" else ("segment_pos",)
        n = len(self.diff)

        def fwd(*args):
            return run(dict(zip(self.diff + self.extra, args, strict=True)))

        def fwd_bwd(*args):
            primals, extra, dy = args[:n], args[n:-1], args[-1]
            y, vjp = jax.vjp(lambda *p: fwd(*p, *extra), *primals)
            return y, vjp(dy)

        self.fwd, self.fwd_bwd = jax.jit(fwd), jax.jit(fwd_bwd)

    def _arrays(self, inputs):
        import jax.numpy as jnp

        def conv(t):
            if not t.dtype.is_floating_point:
                return jnp.asarray(t.cpu().numpy().astype(np.int32))
            dtype = (
                jnp.bfloat16
                if t.dtype == torch.bfloat16
                else jnp.dtype(str(t.dtype).removeprefix("torch."))
            )
            return jnp.asarray(t.float().cpu().numpy()).astype(dtype)

        return [conv(inputs[k]) for k in (*self.diff, *self.extra, "dy")]

    def prepare(self, inputs, backward):
        args = self._arrays(inputs)
        if backward:
            return lambda: self.fwd_bwd(*args)
        return lambda: self.fwd(*args[:-1])

    def collect(self, inputs, backward):
        args = self._arrays(inputs)
        if not backward:
            return {self.out_name: np.asarray(self.fwd(*args[:-1]), dtype=np.float32)}
        y, grads = self.fwd_bwd(*args)
        out = {self.out_name: np.asarray(y, dtype=np.float32)}
        out.update(
            {
                f"d{k}": np.asarray(g, dtype=np.float32)
                for k, g in zip(self.diff, grads, strict=True)
            }
        )
        return out


class OursJaxPallas:
    """kernels.pallas.linear_scan and rg_lru: JAX Pallas kernels, jitted (the scan's forward in
    Mosaic GPU where it applies, the rest Triton-lowered); on a CPU they run in Pallas's
    interpreter (correct, not fast)."""

    @staticmethod
    def supports(op, device):
        if op not in ("scan", "rglru"):
            return f"no Pallas kernel for {op} (kernels.pallas has the scan and the RG-LRU)"
        import jax

        if device.startswith("cuda") and jax.default_backend() != "gpu":
            return f"JAX has no GPU backend here ({jax.default_backend()})"
        return None

    @staticmethod
    def build(op, dtype, backend):
        from kernels import pallas

        runs = {
            "scan": lambda i: pallas.linear_scan(i["a"], i["x"])[0],
            "rglru": lambda i: pallas.rg_lru(
                i["x"], i["gate_x"], i["gate_a"], i["a_param"], i["segment_pos"]
            )[0],
        }
        return _JaxOpHandle(op, backend, runs[op])


class OursJaxPallasTriton:
    """kernels.pallas.linear_scan with the Triton-lowered forward (fwd_mosaic=False): the
    forward ours-jax-optimized takes where the Mosaic GPU one does not apply (a jax without Mosaic
    GPU, float32, d not a multiple of 128), measured beside it on the same shapes."""

    @staticmethod
    def supports(op, device):
        if op != "scan":
            return f"only the scan (asked for {op})"
        return OursJaxPallas.supports(op, device)

    @staticmethod
    def build(op, dtype, backend):
        from kernels import pallas

        return _JaxOpHandle(
            op, backend, lambda i: pallas.linear_scan(i["a"], i["x"], fwd_mosaic=False)[0]
        )


class RecurrentGemmaJaxLinear(_JaxScan):
    """The official JAX scan as used on GPUs: lax.scan over time (LINEAR_NATIVE)."""

    scan_type = "LINEAR_NATIVE"


class RecurrentGemmaJaxAssociative(_JaxScan):
    """The official JAX associative scan (ASSOCIATIVE_NATIVE): the fastest peer in DESIGN.md."""

    scan_type = "ASSOCIATIVE_NATIVE"


class _Fla:
    fn_name = None

    @classmethod
    def supports(cls, op, device):
        if op != "scan":
            return f"only the scan (asked for {op})"
        return _on_gpu(device, "fla")

    @classmethod
    def build(cls, op, dtype, backend):
        from fla.ops import hgrn

        fn = getattr(hgrn, cls.fn_name)

        def run(i):  # fla takes g = log a: computing it is part of using fla with a
            return fn(i["x"], torch.log(i["a"]))[0]

        handle = _TorchHandle(op, backend, run)
        handle.out_name = "h"
        return handle


class FlaFusedRecurrent(_Fla):
    """fla's fused_recurrent_hgrn (x, g = log a)."""

    fn_name = "fused_recurrent_hgrn"


class FlaChunk(_Fla):
    """fla's chunk_hgrn (x, g = log a)."""

    fn_name = "chunk_hgrn"


class _AcceleratedScan:
    module = None

    @classmethod
    def supports(cls, op, device):
        if op != "scan":
            return f"only the scan (asked for {op})"
        return _on_gpu(device, "accelerated-scan")

    @classmethod
    def build(cls, op, dtype, backend):
        import importlib

        scan = importlib.import_module(f"accelerated_scan.{cls.module}").scan

        def run(i):  # its layout is [b, d, t]: our callers hold [b, t, d], so the transposes count
            h = scan(i["a"].transpose(1, 2).contiguous(), i["x"].transpose(1, 2).contiguous())
            return h.transpose(1, 2).contiguous()

        handle = _TorchHandle(op, backend, run)
        handle.out_name = "h"
        return handle


class AcceleratedScanScalar(_AcceleratedScan):
    """accelerated-scan's Triton scan (accelerated_scan.scalar), transposes included."""

    module = "scalar"


class AcceleratedScanWarp(_AcceleratedScan):
    """accelerated-scan's CUDA warp scan (accelerated_scan.warp), transposes included."""

    module = "warp"
