"""Model configuration and named presets for Hawk, Griffin and the MQA Transformer baseline.

The three families are one block-stack builder: a config says which temporal-mixing block each
residual block uses (`block_types`, built from a repeating `block_pattern`), and the rest of the
architecture is shared.

- Hawk: every block recurrent (RG-LRU).
- Griffin: (recurrent, recurrent, attention) repeated, local MQA with a sliding window.
- MQA: every block attention (global by default, or local with `attention_window`).

Sizes follow the Griffin paper's Table 2 (De et al. 2024, arXiv 2402.19427); RecurrentGemma follows
the official `recurrentgemma` package's `Preset` enum.

Shape letters used across the project: b batch, t time, d model width, e RG-LRU width,
n query heads, h head dim, s cache slots, w conv width, v vocab, m MLP width.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import struct
from dataclasses import dataclass
from typing import Literal

RECURRENT = "recurrent"
ATTENTION = "attention"
BLOCK_TYPES = (RECURRENT, ATTENTION)
EMBED_SCALES = ("none", "sqrt", "sqrt_bf16")

BlockType = Literal["recurrent", "attention"]


@dataclass(frozen=True)
class ModelConfig:
    """A frozen description of one model.

    Attributes:
      name: preset name (or "custom").
      vocab_size: v.
      width: d, the residual stream width.
      depth: number of residual blocks.
      block_pattern: repeated (cycled) over `depth` blocks to give `block_types`.
      num_heads: n, query heads of the attention blocks.
      head_dim: h, per-head width (one shared key/value head: multi-query attention).
      lru_width: e, width of the recurrent branch.
      lru_heads: number of diagonal blocks of the RG-LRU gate layers (must divide e).
      mlp_width: m, hidden width of the gated MLP (3 * d in the paper).
      attention_window: sliding-window size of local attention (a query sees itself and the
        `attention_window` tokens before it); None means global causal attention.
      conv_width: temporal width of the recurrent block's causal depthwise Conv1D.
      logits_soft_cap: if > 0, logits = cap * tanh(logits / cap).
      embed_scale: "none"; "sqrt" multiplies embeddings by sqrt(d) in the parameter dtype
        (transformers' Gemma); "sqrt_bf16" by sqrt(d) rounded to bfloat16 (official RecurrentGemma).
      rope_fraction: fraction of the head dim that RoPE rotates (0.5 in Griffin, 1.0 in Gemma).
      rope_base: RoPE maximum wavelength.
      bias: whether the MLP and the attention output projection carry biases (official Griffin
        does; Gemma does not). The recurrent block always has its biases.
      norm_eps: RMSNorm epsilon.
    """

    name: str
    vocab_size: int
    width: int
    depth: int
    block_pattern: tuple[BlockType, ...]
    num_heads: int
    head_dim: int
    lru_width: int
    lru_heads: int
    mlp_width: int
    attention_window: int | None = 1024
    conv_width: int = 4
    logits_soft_cap: float = 0.0
    embed_scale: str = "none"
    rope_fraction: float = 0.5
    rope_base: float = 10_000.0
    bias: bool = True
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        problems = []
        for field in ("vocab_size", "width", "depth", "num_heads", "head_dim", "mlp_width"):
            if not isinstance(getattr(self, field), int) or getattr(self, field) <= 0:
                problems.append(f"{field} must be a positive int, got {getattr(self, field)!r}")
        if not self.block_pattern or any(b not in BLOCK_TYPES for b in self.block_pattern):
            problems.append(
                f"block_pattern must be a non-empty tuple of {BLOCK_TYPES}, got {self.block_pattern!r}"
            )
        if RECURRENT in self.block_types:
            if self.lru_width <= 0 or self.lru_heads <= 0 or self.lru_width % self.lru_heads:
                problems.append(
                    f"lru_heads ({self.lru_heads}) must divide lru_width ({self.lru_width})"
                )
            if self.conv_width < 1:
                problems.append(f"conv_width must be >= 1, got {self.conv_width}")
        if self.attention_window is not None and self.attention_window < 1:
            problems.append(f"attention_window must be None or >= 1, got {self.attention_window}")
        if self.embed_scale not in EMBED_SCALES:
            problems.append(f"embed_scale must be one of {EMBED_SCALES}, got {self.embed_scale!r}")
        rope_dims = int(self.head_dim * self.rope_fraction)
        if not 0.0 < self.rope_fraction <= 1.0 or rope_dims % 2:
            problems.append(
                f"rope_fraction ({self.rope_fraction}) must be in (0, 1] and rotate an even number"
                f" of dims of head_dim {self.head_dim}"
            )
        if problems:
            raise ValueError(f"invalid ModelConfig {self.name!r}: " + "; ".join(problems))

    @property
    def block_types(self) -> tuple[BlockType, ...]:
        """The temporal block of every residual block, in order."""
        return tuple(itertools.islice(itertools.cycle(self.block_pattern), self.depth))

    @property
    def family(self) -> str:
        kinds = set(self.block_types)
        if kinds == {RECURRENT}:
            return "hawk"
        if kinds == {ATTENTION}:
            return "mqa"
        return "griffin"

    @property
    def rope_dims(self) -> int:
        return int(self.head_dim * self.rope_fraction)

    def replace(self, **changes) -> ModelConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def param_count(cfg: ModelConfig, *, embedding: bool = True) -> int:
    """Number of parameters of the model `cfg` describes (the output layer is tied)."""
    d, e, m, n, h = cfg.width, cfg.lru_width, cfg.mlp_width, cfg.num_heads, cfg.head_dim
    bias = int(cfg.bias)
    mlp = 2 * d * m + m * d + bias * (2 * m + d)
    norms = 2 * d
    recurrent = (
        2 * (d * e + e)  # linear_x, linear_y
        + e * d
        + d  # linear_out
        + cfg.conv_width * e
        + e  # conv1d
        + e  # a_param
        + 2 * (e * e // cfg.lru_heads + e)  # block-diagonal input and a gates
    )
    attention = d * n * h + 2 * d * h + n * h * d + bias * d
    total = d  # final norm
    for kind in cfg.block_types:
        total += norms + mlp + (recurrent if kind == RECURRENT else attention)
    if embedding:
        total += cfg.vocab_size * d
    return total


# --- presets ---------------------------------------------------------------------------------

# Griffin paper, Table 2: name -> (d, e, depth). M = 3, heads = d / 128.
_PAPER_SIZES = {
    "100m": (768, 1024, 12),
    "200m": (1024, 1536, 12),
    "400m": (1536, 2048, 12),
    "1b": (2048, 2560, 24),
    "3b": (3072, 4096, 24),
    "7b": (4096, 5632, 32),
    "14b": (5120, 8192, 40),
}
_PATTERNS: dict[str, tuple[BlockType, ...]] = {
    "hawk": (RECURRENT,),
    "griffin": (RECURRENT, RECURRENT, ATTENTION),
    "mqa": (ATTENTION,),
}
PAPER_VOCAB = 256_000
PAPER_WINDOW = 1024


def _lru_heads(lru_width: int, num_heads: int) -> int:
    """Gate blocks: the attention head count where it divides e (as the official code ties them);
    otherwise the largest divisor of e below it (100m, 400m, 3b and 14b have e % n != 0)."""
    return max(k for k in range(1, num_heads + 1) if lru_width % k == 0)


def _paper(family: str, size: str) -> ModelConfig:
    d, e, depth = _PAPER_SIZES[size]
    heads = d // 128
    return ModelConfig(
        name=f"{family}-{size}",
        vocab_size=PAPER_VOCAB,
        width=d,
        depth=depth,
        block_pattern=_PATTERNS[family],
        num_heads=heads,
        head_dim=128,
        lru_width=e,
        lru_heads=_lru_heads(e, heads),
        mlp_width=3 * d,
        attention_window=None if family == "mqa" else PAPER_WINDOW,
    )


def _recurrentgemma(name: str, d: int, depth: int, heads: int) -> ModelConfig:
    return ModelConfig(
        name=name,
        vocab_size=256_000,
        width=d,
        depth=depth,
        block_pattern=_PATTERNS["griffin"],
        num_heads=heads,
        head_dim=d // heads,
        lru_width=d,
        lru_heads=heads,
        mlp_width=3 * d,
        attention_window=2048,
        logits_soft_cap=30.0,
        embed_scale="sqrt_bf16",
    )


def _gemma(name: str, d: int, depth: int, heads: int, head_dim: int, mlp: int) -> ModelConfig:
    """Gemma-shaped MQA (transformers' GemmaForCausalLM with one KV head): no biases, RoPE on the
    whole head, embeddings scaled by sqrt(d) in the parameter dtype, global attention."""
    return ModelConfig(
        name=name,
        vocab_size=256_000,
        width=d,
        depth=depth,
        block_pattern=_PATTERNS["mqa"],
        num_heads=heads,
        head_dim=head_dim,
        lru_width=0,
        lru_heads=1,
        mlp_width=mlp,
        attention_window=None,
        embed_scale="sqrt",
        rope_fraction=1.0,
        bias=False,
    )


def _tiny(family: str) -> ModelConfig:
    # Small enough for float32 CPU tests; window 8 so decode wraps the ring buffer quickly.
    return ModelConfig(
        name=f"{family}-tiny",
        vocab_size=256,
        width=64,
        depth={"hawk": 3, "griffin": 4, "mqa": 3}[family],
        block_pattern=_PATTERNS[family],
        num_heads=2,
        head_dim=32,
        lru_width=96,
        lru_heads=2,
        mlp_width=192,
        attention_window=None if family == "mqa" else 8,
    )


def _build_presets() -> dict[str, ModelConfig]:
    presets = {}
    for family in _PATTERNS:
        for size in _PAPER_SIZES:
            cfg = _paper(family, size)
            presets[cfg.name] = cfg
    presets["recurrentgemma-2b"] = _recurrentgemma("recurrentgemma-2b", 2560, 26, 10)
    presets["gemma-2b"] = _gemma("gemma-2b", 2048, 18, 8, 256, 16384)
    presets["recurrentgemma-9b"] = _recurrentgemma("recurrentgemma-9b", 4096, 38, 16)
    for family in _PATTERNS:
        presets[f"{family}-tiny"] = _tiny(family)
    presets["recurrentgemma-tiny"] = _recurrentgemma("recurrentgemma-tiny", 64, 3, 2).replace(
        vocab_size=256, attention_window=8
    )
    presets["gemma-tiny"] = _gemma("gemma-tiny", 64, 3, 4, 16, 160).replace(vocab_size=256)
    return presets


_PRESETS = _build_presets()
PRESETS: tuple[str, ...] = tuple(_PRESETS)


def preset(name: str) -> ModelConfig:
    """The named preset; an unknown name raises with the list of valid names."""
    if name not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return _PRESETS[name]


def embed_multiplier(cfg: ModelConfig, param_dtype: str) -> float | None:
    """The factor the embeddings are multiplied by, or None.

    "sqrt_bf16" rounds sqrt(d) to bfloat16 (the official code casts it so, to match training);
    "sqrt" rounds it to the parameter dtype (transformers' Gemma). `param_dtype` is a dtype name
    such as "float32" or "bfloat16" (torch's "torch.bfloat16" is accepted too).
    """
    if cfg.embed_scale == "none":
        return None
    value = math.sqrt(cfg.width)
    dtype = "bfloat16" if cfg.embed_scale == "sqrt_bf16" else param_dtype.removeprefix("torch.")
    if dtype == "bfloat16":
        bits = struct.unpack("<I", struct.pack("<f", value))[0]
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000  # round to nearest even
        return struct.unpack("<f", struct.pack("<I", bits))[0]
    if dtype == "float16":
        return struct.unpack("<e", struct.pack("<e", value))[0]
    if dtype == "float32":
        return struct.unpack("<f", struct.pack("<f", value))[0]
    return value


def count(n: float) -> str:
    """A parameter count as people write it: 1.83B, 295M, 215k."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def attention_kind(cfg: ModelConfig) -> str:
    if ATTENTION not in cfg.block_types:
        return "no attention"
    return "global" if cfg.attention_window is None else f"window {cfg.attention_window}"


def describe_fields(cfg: ModelConfig) -> dict[str, str]:
    """The columns of a model's line in `bench list`."""
    return {
        "name": cfg.name,
        "family": cfg.family,
        "d": str(cfg.width),
        "e": str(cfg.lru_width),
        "depth": str(cfg.depth),
        "heads": f"{cfg.num_heads}x{cfg.head_dim}",
        "attention": attention_kind(cfg),
        "params": count(param_count(cfg)),
        "without embeddings": count(param_count(cfg, embedding=False)),
    }


def describe(cfg: ModelConfig) -> str:
    """One line: family, sizes and parameter count."""
    f = describe_fields(cfg)
    return (
        f"{cfg.name}: {cfg.family}, d={f['d']} e={f['e']} depth={f['depth']} heads={f['heads']} "
        f"{f['attention']}, {f['params']} params ({f['without embeddings']} without embeddings)"
    )


# --- configs of the official code and of transformers' Gemma ------------------------------


def _named_like_preset(cfg: ModelConfig) -> ModelConfig:
    """Give a converted config its preset's name when it is one."""
    for name in PRESETS:
        if preset(name).replace(name=cfg.name) == cfg:
            return cfg.replace(name=name)
    return cfg


def config_from_recurrentgemma(rg_config) -> ModelConfig:
    """Our ModelConfig for a recurrentgemma GriffinConfig (torch or jax side: they share it)."""
    kinds = {"RECURRENT": RECURRENT, "ATTENTION": ATTENTION}
    cfg = ModelConfig(
        name="recurrentgemma-converted",
        vocab_size=rg_config.vocab_size,
        width=rg_config.width,
        depth=len(rg_config.block_types),
        block_pattern=tuple(kinds[b.name] for b in rg_config.block_types),
        num_heads=rg_config.num_heads,
        head_dim=rg_config.width // rg_config.num_heads,
        lru_width=rg_config.lru_width or rg_config.width,
        lru_heads=rg_config.num_heads,
        mlp_width=rg_config.mlp_expanded_width,
        attention_window=rg_config.attention_window_size,
        logits_soft_cap=float(rg_config.logits_soft_cap),
        embed_scale="sqrt_bf16" if rg_config.embeddings_scale_by_sqrt_dim else "none",
    )
    return _named_like_preset(_compact_pattern(cfg))


def _compact_pattern(cfg: ModelConfig) -> ModelConfig:
    """Replace a full block list by its shortest repeating pattern (r, r, a) when there is one."""
    types = cfg.block_types
    for p in range(1, len(types) + 1):
        pattern = types[:p]
        if cfg.replace(block_pattern=pattern).block_types == types:
            return cfg.replace(block_pattern=pattern)
    return cfg


def config_from_gemma(hf_config) -> ModelConfig:
    """Our MQA ModelConfig for a transformers GemmaConfig; unsupported settings raise."""
    problems = []
    if hf_config.num_key_value_heads != 1:
        problems.append(f"num_key_value_heads={hf_config.num_key_value_heads} (MQA needs 1)")
    act = getattr(hf_config, "hidden_activation", None) or hf_config.hidden_act
    if act not in (
        "gelu_pytorch_tanh",
        "gelu",
    ):  # Gemma maps legacy "gelu" to the tanh approximation
        problems.append(f"activation {act!r} (needs gelu_pytorch_tanh)")
    if getattr(hf_config, "attention_bias", False):
        problems.append("attention_bias=True")
    if not getattr(hf_config, "tie_word_embeddings", True):
        problems.append("untied output layer")
    rope = getattr(hf_config, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(hf_config, "rope_theta", 10_000.0))
    if rope.get("rope_type", "default") != "default":
        problems.append(f"rope_type {rope.get('rope_type')!r}")
    if problems:
        raise ValueError("cannot convert this Gemma config: " + "; ".join(problems))
    return _named_like_preset(
        ModelConfig(
            name="gemma-converted",
            vocab_size=hf_config.vocab_size,
            width=hf_config.hidden_size,
            depth=hf_config.num_hidden_layers,
            block_pattern=(ATTENTION,),
            num_heads=hf_config.num_attention_heads,
            head_dim=hf_config.head_dim,
            lru_width=0,
            lru_heads=1,
            mlp_width=hf_config.intermediate_size,
            attention_window=None,
            embed_scale="sqrt",
            rope_fraction=1.0,
            rope_base=float(theta),
            bias=False,
            norm_eps=hf_config.rms_norm_eps,
        )
    )


def recurrentgemma_incompatibility(cfg: ModelConfig) -> str | None:
    """Why the official recurrentgemma code cannot express `cfg`, or None if it can."""
    reasons = []
    if cfg.lru_heads != cfg.num_heads and RECURRENT in cfg.block_types:
        reasons.append(f"lru_heads {cfg.lru_heads} != num_heads {cfg.num_heads}")
    if cfg.head_dim * cfg.num_heads != cfg.width:
        reasons.append(
            f"head_dim * num_heads = {cfg.head_dim * cfg.num_heads} != width {cfg.width}"
        )
    if cfg.attention_window is None and ATTENTION in cfg.block_types:
        reasons.append("global attention (the official code only has local attention)")
    if (cfg.rope_fraction, cfg.rope_base, cfg.bias, cfg.conv_width, cfg.norm_eps) != (
        0.5,
        10_000.0,
        True,
        4,
        1e-6,
    ):
        reasons.append(
            "rope_fraction/rope_base/bias/conv_width/norm_eps differ from the official ones"
        )
    if cfg.embed_scale == "sqrt":
        reasons.append("embed_scale 'sqrt' (official: 'none' or 'sqrt_bf16')")
    return "; ".join(reasons) or None


def recurrentgemma_config(cfg: ModelConfig):
    """The official `recurrentgemma.common.GriffinConfig` for `cfg` (shared by its torch and jax)."""
    reason = recurrentgemma_incompatibility(cfg)
    if reason:
        raise ValueError(f"{cfg.name} cannot be expressed by recurrentgemma: {reason}")
    from recurrentgemma import common

    kinds = {
        RECURRENT: common.TemporalBlockType.RECURRENT,
        ATTENTION: common.TemporalBlockType.ATTENTION,
    }
    return common.GriffinConfig(
        vocab_size=cfg.vocab_size,
        width=cfg.width,
        mlp_expanded_width=cfg.mlp_width,
        num_heads=cfg.num_heads,
        block_types=tuple(kinds[k] for k in cfg.block_types),
        embeddings_scale_by_sqrt_dim=cfg.embed_scale == "sqrt_bf16",
        attention_window_size=cfg.attention_window or 1,
        logits_soft_cap=cfg.logits_soft_cap,
        lru_width=cfg.lru_width or None,
    )


def gemma_incompatibility(cfg: ModelConfig) -> str | None:
    """Why transformers' Gemma cannot express `cfg`, or None if it can."""
    reasons = []
    if RECURRENT in cfg.block_types:
        reasons.append("recurrent blocks (Gemma is attention only)")
    if cfg.attention_window is not None:
        reasons.append("local attention (Gemma attention is global)")
    if cfg.bias or cfg.rope_fraction != 1.0 or cfg.embed_scale != "sqrt" or cfg.logits_soft_cap:
        reasons.append("needs bias=False, rope_fraction=1.0, embed_scale='sqrt', no logit soft-cap")
    return "; ".join(reasons) or None


def gemma_config(cfg: ModelConfig):
    """A transformers `GemmaConfig` (one KV head) for a Gemma-flavoured MQA `cfg`."""
    reason = gemma_incompatibility(cfg)
    if reason:
        raise ValueError(f"{cfg.name} cannot be expressed by transformers' Gemma: {reason}")
    from transformers import GemmaConfig

    return GemmaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.width,
        intermediate_size=cfg.mlp_width,
        num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=1,
        head_dim=cfg.head_dim,
        hidden_activation="gelu_pytorch_tanh",
        rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_base,
        max_position_embeddings=max(8192, 2 * cfg.head_dim),
    )
