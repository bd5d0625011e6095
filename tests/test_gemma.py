"""Our MQA model equals transformers' Gemma with one KV head (random weights, float32)."""

import pytest
import torch
from util import TOL, inputs, randomize_zeros_, rel_err

from bench.impls.transformers_gemma import call_with_cache
from models.config import preset
from models.torch import Model, from_gemma, to_gemma


def _gemma(**overrides):
    from transformers import GemmaConfig, GemmaForCausalLM

    kwargs = dict(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
    )
    kwargs.update(overrides)
    hf = GemmaForCausalLM(GemmaConfig(**kwargs)).eval()
    randomize_zeros_(hf)
    return hf


def _step(hf, tokens, cache):
    return call_with_cache(hf, tokens, cache)


def test_forward_and_decode_equal_transformers_gemma():
    hf = _gemma()
    ours = from_gemma(hf)
    assert ours.config.family == "mqa" and ours.config.attention_window is None
    assert ours.config.name == "gemma-tiny"  # this config is the preset's
    tokens, pos = inputs(2, 40, 256)  # 40 > 16 and 32 slots: the global cache grows twice
    with torch.no_grad():
        assert rel_err(ours(tokens, pos), hf(tokens).logits) <= TOL
        prompt = 12
        ref, hf_cache = _step(hf, tokens[:, :prompt], None)
        logits, cache = ours.prefill(tokens[:, :prompt], pos[:, :prompt])
        assert rel_err(logits, ref) <= TOL
        for t in range(prompt, tokens.shape[1]):
            ref, hf_cache = _step(hf, tokens[:, t : t + 1], hf_cache)
            logits, cache = ours.decode(tokens[:, t : t + 1], pos[:, t : t + 1], cache)
            assert rel_err(logits, ref) <= TOL, f"decode step {t}"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_key_value_heads=2, num_attention_heads=4), "num_key_value_heads=2"),
        (dict(attention_bias=True), "attention_bias"),
    ],
)
def test_unsupported_gemma_configs_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        from_gemma(_gemma(**overrides))


def test_to_gemma_round_trip():
    model = Model(preset("gemma-tiny")).eval()
    randomize_zeros_(model, std=0.2)
    hf = to_gemma(model)
    tokens, pos = inputs(2, 16, 256)
    with torch.no_grad():
        assert rel_err(hf(tokens).logits, model(tokens, pos)) <= TOL
    assert from_gemma(hf).config == preset("gemma-tiny")
