"""The ONE catalog: every model, implementation, workload and suite that can be benchmarked.

CLI choices, tests and report sections derive from it. Implementations are referenced by module
path and imported lazily, so this file imports without JAX, Triton or the peers; a missing
dependency is an explicit `unavailable` status, never a silent fallback.

Each model implementation's adapter (bench/impls/*.py) provides
    supports(cfg) -> str | None           why it cannot run this model (None: it can)
    build(source, dtype, backend) -> Handle   (see bench/impls/base.py)
where `source` is our torch reference Model holding the case's weights: every implementation is
built from the same weights, so all compute the same function. Kernel implementations (those with
`ops`) run one recurrent-block op on tensors instead (bench/impls/kernels.py).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from bench.workloads import WORKLOADS  # noqa: F401  (name -> Workload: part of the catalog)
from models.config import PRESETS


@dataclass(frozen=True)
class Implementation:
    name: str
    backend: str  # "torch" | "jax"
    module: str  # adapter module, imported lazily
    requires: tuple[str, ...]  # importable top-level modules
    role: str  # "reference" (the correctness oracle), "ours" or "peer"
    description: str
    ops: tuple[str, ...] = ()  # kernel implementations: the ops they run; () for models

    @property
    def kind(self) -> str:
        return "kernel" if self.ops else "model"


IMPLEMENTATIONS: tuple[Implementation, ...] = (
    Implementation(
        "ours-torch-reference",
        "torch",
        "bench.impls.ours_torch",
        ("torch",),
        "reference",
        "our PyTorch reference model (models.torch.Model, impl='reference')",
    ),
    Implementation(
        "ours-torch-optimized",
        "torch",
        "bench.impls.ours_torch_optimized",
        ("torch", "triton"),
        "ours",
        "our optimized PyTorch model (impl='optimized'): Triton RG-LRU / Conv1D kernels, fused "
        "SDPA attention, in-place decode caches",
    ),
    Implementation(
        "ours-jax-reference",
        "jax",
        "bench.impls.ours_jax",
        ("jax", "optax"),
        "ours",
        "our JAX reference model (models.jax.Model, impl='reference'), jitted",
    ),
    Implementation(
        "ours-jax-optimized",
        "jax",
        "bench.impls.ours_jax_optimized",
        ("jax", "optax"),
        "ours",
        "our optimized JAX model (impl='optimized'): Pallas RG-LRU kernel, causal "
        "dot_product_attention fast path, donated (in-place) decode caches, jitted",
    ),
    Implementation(
        "recurrentgemma-torch",
        "torch",
        "bench.impls.recurrentgemma_torch",
        ("recurrentgemma", "einops", "jaxtyping", "typeguard"),
        "peer",
        "the official recurrentgemma PyTorch Griffin (gradient checkpointing off: its fastest setting)",
    ),
    Implementation(
        "recurrentgemma-jax",
        "jax",
        "bench.impls.recurrentgemma_jax",
        ("recurrentgemma", "jax", "flax", "optax", "einops", "jaxtyping", "typeguard"),
        "peer",
        "the official recurrentgemma Flax Griffin (scan_type AUTO), jitted",
    ),
    Implementation(
        "transformers-gemma",
        "torch",
        "bench.impls.transformers_gemma",
        ("transformers",),
        "peer",
        "transformers GemmaForCausalLM with one KV head (SDPA attention, DynamicCache)",
    ),
)

KERNEL_OPS = ("scan", "rglru", "conv1d")
_ALL = KERNEL_OPS
_K = "bench.impls.kernels:"
IMPLEMENTATIONS += (
    Implementation("ours-triton", "torch", _K + "OursTriton", ("torch", "triton"), "ours",
                   "our Triton kernels (kernels.scan / rglru / conv1d), forward and backward", _ALL),
    # the model entry's name again: our optimized JAX, in kernel workloads its kernels
    Implementation("ours-jax-optimized", "jax", _K + "OursJaxPallas", ("jax",), "ours",
                   "our JAX Pallas kernels (kernels.pallas), the optimized JAX model's: scan and "
                   "fused RG-LRU, forward and backward, jitted; the scan forward in Mosaic GPU "
                   "where it applies, the rest Triton-lowered", ("scan", "rglru")),
    Implementation("ours-jax-pallas-triton", "jax", _K + "OursJaxPallasTriton", ("jax",), "ours",
                   "our JAX scan with its Triton-lowered forward (kernels.pallas, fwd_mosaic=False: "
                   "where Mosaic GPU does not apply), jitted", ("scan",)),
    Implementation("ours-torch-loop", "torch", _K + "OursReference", ("torch",), "ours",
                   "the kernels' _ref twins: plain torch, the scan a loop over time", _ALL),
    Implementation("torch-unfused-rglru", "torch", _K + "TorchUnfused", ("torch", "triton"), "peer",
                   "the RG-LRU as separate torch ops (float32 gates) around our Triton scan", ("rglru",)),
    Implementation("recurrentgemma-torch-loop", "torch", _K + "RecurrentGemmaTorch",
                   ("recurrentgemma", "einops", "jaxtyping", "typeguard"), "peer",
                   "the official torch rnn_scan (a loop over time) and Conv1D layer", ("scan", "conv1d")),
    Implementation("recurrentgemma-jax-linear", "jax", _K + "RecurrentGemmaJaxLinear",
                   ("recurrentgemma", "jax", "einops", "jaxtyping", "typeguard"), "peer",
                   "the official JAX scan, lax.scan over time (LINEAR_NATIVE), jitted", ("scan",)),
    Implementation("recurrentgemma-jax-associative", "jax", _K + "RecurrentGemmaJaxAssociative",
                   ("recurrentgemma", "jax", "einops", "jaxtyping", "typeguard"), "peer",
                   "the official JAX associative scan (ASSOCIATIVE_NATIVE), jitted", ("scan",)),
    Implementation("fla-fused-recurrent", "torch", _K + "FlaFusedRecurrent", ("fla", "triton"), "peer",
                   "fla fused_recurrent_hgrn with g = log a", ("scan",)),
    Implementation("fla-chunk", "torch", _K + "FlaChunk", ("fla", "triton"), "peer",
                   "fla chunk_hgrn with g = log a", ("scan",)),
    Implementation("accelerated-scan-scalar", "torch", _K + "AcceleratedScanScalar",
                   ("accelerated_scan", "triton"), "peer",
                   "accelerated-scan's Triton scan, [b, d, t] transposes included", ("scan",)),
    Implementation("accelerated-scan-warp", "torch", _K + "AcceleratedScanWarp", ("accelerated_scan",),
                   "peer", "accelerated-scan's CUDA warp scan, [b, d, t] transposes included", ("scan",)),
)  # fmt: skip

REFERENCE = "ours-torch-reference"
MODELS = PRESETS
SUITES_DIR = Path(__file__).parent / "suites"


def implementation(name: str, kind: str | None = None) -> Implementation:
    """The entry called name; of that kind ("model" or "kernel") where a name has one of each
    (ours-jax-optimized: the optimized JAX model, and its kernels)."""
    for impl in IMPLEMENTATIONS:
        if impl.name == name and kind in (None, impl.kind):
            return impl
    valid = ", ".join(dict.fromkeys(i.name for i in IMPLEMENTATIONS))
    raise ValueError(f"unknown implementation {name!r}; valid implementations: {valid}")


# names that run several suites one after another, each into its own records file
SUITE_GROUPS: dict[str, tuple[str, ...]] = {
    "paper-fig3": ("paper-fig3-400m", "paper-fig3-1b", "paper-fig3-7b"),
    "paper": ("paper-fig3-400m", "paper-fig3-1b", "paper-fig3-7b", "paper-fig4", "paper-fig1b"),
}


def suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def suite_group(name: str) -> tuple[str, ...]:
    """The suites a name runs: a group's members, or the name itself."""
    return SUITE_GROUPS.get(name, (name,))


def suite_path(name_or_path: str) -> Path:
    """A suite by name (bench/suites/NAME.toml) or by path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or "/" in name_or_path:
        if path.is_file():
            return path
        what = "is a folder, not a suite file" if path.is_dir() else "no such suite file"
        raise ValueError(
            f"{name_or_path}: {what} (a suite is a name from `list suites` or a .toml path)"
        )
    candidate = SUITES_DIR / f"{name_or_path}.toml"
    if candidate.exists():
        return candidate
    raise ValueError(
        f"unknown suite {name_or_path!r}; valid suites: {', '.join(suites())}, groups: "
        f"{', '.join(SUITE_GROUPS)} (or a path to a .toml file)"
    )


def missing_requirements(impl: Implementation) -> str | None:
    """Which of the implementation's modules cannot be imported here, or None."""
    missing = [m for m in impl.requires if importlib.util.find_spec(m) is None]
    return f"missing Python packages: {', '.join(missing)}" if missing else None


def adapter(impl: Implementation):
    """The implementation's adapter: a module, or "module:name" for a namespace inside one."""
    module, _, name = impl.module.partition(":")
    mod = importlib.import_module(module)
    return getattr(mod, name) if name else mod


def model_implementations() -> tuple[Implementation, ...]:
    return tuple(i for i in IMPLEMENTATIONS if i.kind == "model")


def kernel_implementations(op: str) -> tuple[Implementation, ...]:
    return tuple(i for i in IMPLEMENTATIONS if op in i.ops)
