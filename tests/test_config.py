"""Presets, parameter counts and config validation."""

import jax
import pytest
import torch

import models.jax
from models.config import PRESETS, ModelConfig, param_count, preset
from models.torch import Model

SIZES = ["100m", "200m", "400m", "1b", "3b", "7b", "14b"]


def test_every_family_has_every_paper_size_and_tiny():
    for family in ("hawk", "griffin", "mqa"):
        for size in [*SIZES, "tiny"]:
            assert f"{family}-{size}" in PRESETS
    assert {"recurrentgemma-2b", "recurrentgemma-9b", "recurrentgemma-tiny"} <= set(PRESETS)


def test_block_patterns():
    assert set(preset("hawk-1b").block_types) == {"recurrent"}
    assert set(preset("mqa-1b").block_types) == {"attention"}
    assert preset("mqa-1b").attention_window is None
    g = preset("griffin-1b").block_types
    assert g[:6] == ("recurrent", "recurrent", "attention") * 2 and len(g) == 24
    rg = preset("recurrentgemma-2b")
    assert (rg.width, rg.depth, rg.num_heads, rg.head_dim, rg.attention_window) == (
        2560,
        26,
        10,
        256,
        2048,
    )
    assert (rg.logits_soft_cap, rg.embed_scale, rg.vocab_size) == (30.0, "sqrt_bf16", 256_000)


def test_paper_table2_sizes():
    expected = {"100m": (768, 1024, 12), "1b": (2048, 2560, 24), "14b": (5120, 8192, 40)}
    for size, (d, e, depth) in expected.items():
        for family in ("hawk", "griffin", "mqa"):
            cfg = preset(f"{family}-{size}")
            assert (cfg.width, cfg.lru_width, cfg.depth, cfg.mlp_width) == (d, e, depth, 3 * d)
            assert cfg.num_heads == d // 128 and cfg.head_dim == 128
            assert cfg.lru_width % cfg.lru_heads == 0


def test_recurrentgemma_parameter_counts():
    assert round(param_count(preset("recurrentgemma-2b")) / 1e9, 2) == 2.68
    assert round(param_count(preset("recurrentgemma-9b")) / 1e9, 2) == 8.58


@pytest.mark.parametrize("name", PRESETS)
def test_param_count_matches_both_models(name):
    cfg = preset(name)
    torch_count = sum(p.numel() for p in Model(cfg, device="meta").parameters())
    shapes = jax.eval_shape(lambda k: models.jax.init(cfg, k), jax.random.PRNGKey(0))
    jax_count = sum(x.size for x in jax.tree_util.tree_leaves(shapes))
    assert param_count(cfg) == torch_count == jax_count


def test_unknown_preset_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown preset 'griffin-2b'") as err:
        preset("griffin-2b")
    assert "griffin-1b" in str(err.value) and "recurrentgemma-9b" in str(err.value)


def test_invalid_configs_are_refused():
    base = preset("griffin-tiny")
    with pytest.raises(ValueError, match="lru_heads"):
        base.replace(lru_heads=5)
    with pytest.raises(ValueError, match="block_pattern"):
        base.replace(block_pattern=("recurrent", "transformer"))
    with pytest.raises(ValueError, match="embed_scale"):
        base.replace(embed_scale="sqrt2")
    with pytest.raises(ValueError, match="rope_fraction"):
        base.replace(rope_fraction=0.3)
    with pytest.raises(ValueError, match="width"):
        ModelConfig(
            name="x",
            vocab_size=8,
            width=0,
            depth=1,
            block_pattern=("attention",),
            num_heads=1,
            head_dim=8,
            lru_width=0,
            lru_heads=1,
            mlp_width=8,
        )


def test_configs_are_frozen():
    with pytest.raises(AttributeError):
        preset("hawk-tiny").width = 3  # type: ignore[misc]


def test_model_exposes_its_config():
    cfg = preset("griffin-tiny")
    assert Model(cfg).config is cfg
    assert models.jax.Model(cfg).config is cfg
    assert torch.float32 == next(Model(cfg).parameters()).dtype
