"""Bad input gets a clear error naming what is wrong and what is valid."""

import jax
import jax.numpy as jnp
import pytest
from util import inputs

import models.jax
from models.config import preset
from models.torch import Model

CFG = preset("griffin-tiny")


@pytest.fixture(scope="module")
def torch_model():
    return Model(CFG)


@pytest.fixture(scope="module")
def jax_model():
    jm = models.jax.Model(CFG)
    return jm, jm.init(jax.random.PRNGKey(0))


def test_unknown_impl():
    with pytest.raises(ValueError, match="unknown impl 'fast'; valid impls: reference"):
        Model(CFG, impl="fast")
    with pytest.raises(ValueError, match="unknown impl 'fast'; valid impls: reference"):
        models.jax.Model(CFG, impl="fast")


def test_torch_bad_tokens(torch_model):
    tokens, pos = inputs(2, 6, 256)
    with pytest.raises(TypeError, match=r"tokens must be an integer tensor.*float32"):
        torch_model(tokens.float(), pos)
    with pytest.raises(
        ValueError, match=r"tokens must have rank 2 \[batch, time\], got shape \[6\]"
    ):
        torch_model(tokens[0], pos[0])
    with pytest.raises(ValueError, match="must have the same shape"):
        torch_model(tokens, pos[:, :3])
    with pytest.raises(TypeError, match="segment_pos must be an integer tensor"):
        torch_model(tokens, pos.float())


def test_torch_decode_errors(torch_model):
    tokens, pos = inputs(2, 6, 256)
    _, cache = torch_model.prefill(tokens, pos)
    other_batch, other_pos = inputs(3, 1, 256)
    with pytest.raises(ValueError, match="batch of 3 but the cache holds a batch of 2"):
        torch_model.decode(other_batch, other_pos, cache)
    with pytest.raises(ValueError, match=r"one token per row \(\[b, 1\]\), got shape \[2, 2\]"):
        torch_model.decode(tokens[:, :2], pos[:, :2], cache)
    with pytest.raises(TypeError, match="cache must be the Cache"):
        torch_model.decode(tokens[:, :1], pos[:, :1], {"blocks": []})


def test_jax_bad_tokens_and_decode(jax_model):
    jm, params = jax_model
    tokens, pos = (jnp.asarray(x.numpy()) for x in inputs(2, 6, 256))
    with pytest.raises(TypeError, match=r"tokens must be an integer array.*float32"):
        jm.forward(params, tokens.astype(jnp.float32), pos)
    with pytest.raises(ValueError, match="tokens must have rank 2"):
        jm.forward(params, tokens[0], pos[0])
    _, cache = jm.prefill(params, tokens, pos)
    with pytest.raises(ValueError, match="batch of 1 but the cache holds a batch of 2"):
        jm.decode(params, tokens[:1, :1], pos[:1, :1], cache)
    with pytest.raises(ValueError, match=r"one token per row"):
        jm.decode(params, tokens[:, :3], pos[:, :3], cache)
