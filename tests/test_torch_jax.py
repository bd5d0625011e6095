"""torch <-> JAX parity through the weight converters, forward and decode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from util import TOL, inputs, randomize_zeros_, rel_err

import models.jax
from models.config import preset
from models.params import flatten
from models.torch import Model, from_jax

NAMES = ["hawk-tiny", "griffin-tiny", "mqa-tiny", "recurrentgemma-tiny"]


@pytest.mark.parametrize("name", NAMES)
def test_torch_to_jax_forward_and_decode(name):
    model = Model(preset(name)).eval()
    randomize_zeros_(model, std=0.2)
    jm, params = models.jax.from_torch(model)
    tokens, pos = inputs(2, 20, model.config.vocab_size, {0: [7], 1: [14]})
    jt, jp = jnp.asarray(tokens.numpy()), jnp.asarray(pos.numpy())
    with torch.no_grad():
        assert rel_err(jm.forward(params, jt, jp), model(tokens, pos)) <= TOL
        _, cache = model.prefill(tokens[:, :9], pos[:, :9])
        _, jcache = jm.prefill(params, jt[:, :9], jp[:, :9])
        for t in range(9, 20):
            lt, cache = model.decode(tokens[:, t : t + 1], pos[:, t : t + 1], cache)
            lj, jcache = jm.decode(params, jt[:, t : t + 1], jp[:, t : t + 1], jcache)
            assert rel_err(lj, lt) <= TOL, f"decode step {t}"


@pytest.mark.parametrize("name", NAMES)
def test_jax_to_torch_round_trip(name):
    jm = models.jax.Model(preset(name))
    params = jm.init(jax.random.PRNGKey(0))
    model = from_jax(jm.config, params)
    assert set(model.state_dict()) == set(flatten(params))
    tokens, pos = inputs(2, 12, jm.config.vocab_size, {1: [6]})
    with torch.no_grad():
        assert rel_err(model(tokens, pos), jm.forward(params, tokens.numpy(), pos.numpy())) <= TOL
    _, back = models.jax.from_torch(model)
    for key, value in flatten(params).items():
        np.testing.assert_array_equal(np.asarray(flatten(back)[key]), np.asarray(value))


def test_bfloat16_weights_convert_exactly():
    model = Model(preset("griffin-tiny"), dtype=torch.bfloat16)
    _, params = models.jax.from_torch(model)
    assert all(v.dtype == jnp.bfloat16 for v in flatten(params).values())
    back = from_jax(model.config, params)
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
