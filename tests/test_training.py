"""The reference models train: gradients reach every parameter and a few steps lower the loss."""

import jax
import jax.numpy as jnp
import pytest
import torch
import torch.nn.functional as F
from util import inputs

import models.jax
from models.config import preset
from models.torch import Model

NAMES = ["hawk-tiny", "griffin-tiny", "mqa-tiny"]


@pytest.mark.parametrize("name", NAMES)
def test_torch_adamw_steps_lower_the_loss(name):
    model = Model(preset(name))
    tokens, pos = inputs(4, 16, model.config.vocab_size, {0: [8]})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)

    def loss_fn():
        logits = model(tokens[:, :-1], pos[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())

    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        if not losses:
            missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
            assert not missing, f"no gradient reaches {missing}"
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses


@pytest.mark.parametrize("name", NAMES)
def test_jax_sgd_steps_lower_the_loss(name):
    jm = models.jax.Model(preset(name))
    params = jm.init(jax.random.PRNGKey(0))
    tokens, pos = inputs(4, 16, jm.config.vocab_size, {0: [8]})
    tokens, pos = jnp.asarray(tokens.numpy()), jnp.asarray(pos.numpy())

    def loss_fn(p):
        logits = models.jax.model.run(jm.config, p, tokens[:, :-1], pos[:, :-1], None, 0, False)[0]
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1))

    step = jax.jit(lambda p: jax.value_and_grad(loss_fn)(p))
    losses = []
    for _ in range(6):
        loss, grads = step(params)
        params = jax.tree_util.tree_map(lambda p, g: p - 0.5 * g, params, grads)
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 0.3, losses


def test_sqrt_gradient_is_clipped_at_1000():
    from kernels.rglru import SqrtBoundDerivative
    from kernels.rglru_jax import sqrt_bound_derivative

    x = torch.tensor([0.0, 1e-12, 0.25], requires_grad=True)
    SqrtBoundDerivative.apply(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([1000.0, 1000.0, 1.0]))
    g = jax.grad(lambda v: sqrt_bound_derivative(v).sum())(jnp.array([0.0, 1e-12, 0.25]))
    assert jnp.allclose(g, jnp.array([1000.0, 1000.0, 1.0]))
