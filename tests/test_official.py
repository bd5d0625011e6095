"""Our Hawk and Griffin equal the official recurrentgemma code (torch and jax), float32.

The official models are built with random weights (zero-initialised norm scales and biases
randomised too) and converted to ours. Sequences carry a document reset in the middle. Decode is
compared with the official *full forward*: the official decode ignores a reset that falls inside
decoding, its full forward does not (DESIGN.md).
"""

import jax.numpy as jnp
import pytest
import torch
from util import TOL, inputs, randomize_zeros_, randomize_zeros_jax, rel_err

import models.jax
from models.config import preset, recurrentgemma_config
from models.torch import Model, from_recurrentgemma, to_recurrentgemma

PRESETS = ["hawk-tiny", "griffin-tiny", "recurrentgemma-tiny"]
T, PROMPT = 24, 10  # window 8: decode runs past the window; resets at 5 (prompt) and 15 (decode)
RESETS = {0: [5, 15], 1: [PROMPT]}


def _official_torch(name):
    from recurrentgemma import torch as rgt

    rg = rgt.Griffin(recurrentgemma_config(preset(name)), gradient_checkpointing=False)
    randomize_zeros_(rg)
    return rg.eval()


@pytest.mark.parametrize("name", PRESETS)
def test_torch_forward_and_decode_equal_official(name):
    rg = _official_torch(name)
    ours = from_recurrentgemma(rg)
    assert ours.config.block_types == preset(name).block_types
    tokens, pos = inputs(2, T, ours.config.vocab_size, RESETS)
    with torch.no_grad():
        ref, _ = rg(tokens, pos, return_cache=False)
        assert rel_err(ours(tokens, pos), ref) <= TOL

        logits, cache = ours.prefill(tokens[:, :PROMPT], pos[:, :PROMPT])
        assert rel_err(logits, ref[:, :PROMPT]) <= TOL
        for t in range(PROMPT, T):
            logits, cache = ours.decode(tokens[:, t : t + 1], pos[:, t : t + 1], cache)
            assert rel_err(logits, ref[:, t : t + 1]) <= TOL, f"decode step {t}"


def test_official_converted_config_is_the_preset():
    rg = _official_torch("recurrentgemma-tiny")
    assert from_recurrentgemma(rg).config == preset("recurrentgemma-tiny")


@pytest.mark.parametrize("name", PRESETS)
def test_jax_forward_and_decode_equal_official(name):
    import jax
    from recurrentgemma import jax as rgj

    rg = rgj.Griffin(recurrentgemma_config(preset(name)), gradient_checkpointing=False)
    tokens, pos = inputs(2, T, preset(name).vocab_size, RESETS)
    tokens, pos = jnp.asarray(tokens.numpy()), jnp.asarray(pos.numpy())
    rg_params = randomize_zeros_jax(rg.init(jax.random.PRNGKey(0), tokens, pos))
    ref, _ = rg.apply(rg_params, tokens, pos, return_cache=False)

    jm, params = models.jax.from_recurrentgemma(rg, rg_params)
    assert jm.config.block_types == preset(name).block_types
    assert rel_err(jm.forward(params, tokens, pos), ref) <= TOL
    logits, cache = jm.prefill(params, tokens[:, :PROMPT], pos[:, :PROMPT])
    assert rel_err(logits, ref[:, :PROMPT]) <= TOL
    for t in range(PROMPT, T):
        logits, cache = jm.decode(params, tokens[:, t : t + 1], pos[:, t : t + 1], cache)
        assert rel_err(logits, ref[:, t : t + 1]) <= TOL, f"decode step {t}"


def test_layers_equal_official_layers():
    """The kernels' reference twins compute the official layers' functions."""
    from recurrentgemma import torch as rgt

    from kernels.conv1d import conv1d_ref
    from kernels.rglru import rg_lru_ref

    b, t, e = 2, 19, 32
    x = torch.randn(b, t, e)
    _, pos = inputs(b, t, 2, {0: [7], 1: [1, 2, 18]})
    conv = rgt.Conv1D(width=e, temporal_width=4)
    randomize_zeros_(conv)
    y_off, _ = conv(x.clone(), pos, return_cache=False)  # the official conv masks x in place
    y, _ = conv1d_ref(x, conv.w, conv.b, pos)
    assert rel_err(y, y_off) <= 1e-6

    lru = rgt.RGLRU(width=e, num_heads=4)
    randomize_zeros_(lru)
    h0 = torch.randn(b, e)
    with torch.no_grad():
        y_off, h_off = lru(x, pos, cache=h0)
        y, h = rg_lru_ref(x, lru.input_gate(x), lru.a_gate(x), lru.a_param, pos, h0)
    assert rel_err(y, y_off) <= 1e-6 and rel_err(h, h_off) <= 1e-6


@pytest.mark.parametrize("name", PRESETS)
def test_our_weights_run_in_the_official_code(name):
    """to_recurrentgemma (torch and jax): the official models compute what ours compute."""
    model = Model(preset(name)).eval()
    randomize_zeros_(model, std=0.2)
    tokens, pos = inputs(2, 20, model.config.vocab_size, {0: [7]})
    with torch.no_grad():
        ours = model(tokens, pos)
        official, _ = to_recurrentgemma(model, gradient_checkpointing=False)(
            tokens, pos, return_cache=False
        )
    assert rel_err(official, ours) <= TOL
    jm, params = models.jax.from_torch(model)
    module, variables = models.jax.to_recurrentgemma(jm.config, params)
    official_jax, _ = module.apply(
        variables, jnp.asarray(tokens.numpy()), jnp.asarray(pos.numpy()), return_cache=False
    )
    assert rel_err(official_jax, ours) <= TOL


def test_configs_the_official_code_cannot_express_are_refused():
    with pytest.raises(ValueError, match="lru_heads 4 != num_heads 6"):
        recurrentgemma_config(preset("griffin-100m"))
    with pytest.raises(ValueError, match="global attention"):
        recurrentgemma_config(preset("mqa-tiny"))
