"""Every optimizer actually trains: softmax regression on scikit-learn's bundled digits data.

Full-batch training for a fixed number of steps inside one jitted `lax.scan` (one compile per
optimizer); each must reach a held-out accuracy well above chance (0.1) and cut the loss.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

import gradxform

STEPS = 150


@functools.lru_cache(maxsize=1)
def _data():
  digits = load_digits()
  x = (digits.data / 16.0).astype(np.float32)
  y = digits.target.astype(np.int32)
  order = np.random.default_rng(0).permutation(len(x))
  x, y = x[order], y[order]
  split = int(0.8 * len(x))
  return (jnp.asarray(x[:split]), jnp.asarray(y[:split])), (jnp.asarray(x[split:]), jnp.asarray(y[split:]))


def _loss(params, x, y):
  logits = x @ params["w"] + params["b"]
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def _train(tx):
  (x, y), (x_test, y_test) = _data()
  params = {"w": jnp.zeros((64, 10), jnp.float32), "b": jnp.zeros((10,), jnp.float32)}

  @jax.jit
  def run(params):
    def step(carry, _):
      params, state = carry
      loss, grads = jax.value_and_grad(_loss)(params, x, y)
      updates, state = tx.update(grads, state, params)
      return (gradxform.apply_updates(params, updates), state), loss
    (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), None, length=STEPS)
    return params, losses

  params, losses = run(params)
  accuracy = jnp.mean(jnp.argmax(x_test @ params["w"] + params["b"], axis=1) == y_test)
  return float(losses[0]), float(losses[-1]), float(accuracy)


OPTIMIZERS = {
    "sgd": lambda: gradxform.sgd(1.0),
    "sgd_momentum": lambda: gradxform.sgd(0.2, momentum=0.9),
    "sgd_nesterov": lambda: gradxform.sgd(0.2, momentum=0.9, nesterov=True),
    "adagrad": lambda: gradxform.adagrad(0.5),
    "rmsprop": lambda: gradxform.rmsprop(0.01),
    "rmsprop_centered_momentum": lambda: gradxform.rmsprop(0.005, centered=True, momentum=0.5),
    "adadelta": lambda: gradxform.adadelta(10.0),
    "adam": lambda: gradxform.adam(0.05),
    "adamw": lambda: gradxform.adamw(gradxform.warmup_cosine_decay_schedule(0.0, 0.05, 10, STEPS), weight_decay=1e-3),
    "nadam": lambda: gradxform.nadam(0.05),
    "nadamw": lambda: gradxform.nadamw(0.05),
    "adamax": lambda: gradxform.adamax(0.05),
    "adamaxw": lambda: gradxform.adamaxw(0.05),
    "amsgrad": lambda: gradxform.amsgrad(0.05),
    "radam": lambda: gradxform.radam(0.05),
    "clip_then_adamw": lambda: gradxform.chain(gradxform.clip_by_global_norm(1.0), gradxform.adamw(0.05)),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_trains_on_digits(name):
  first, last, accuracy = _train(OPTIMIZERS[name]())
  assert last < 0.3 * first, (name, first, last)
  assert accuracy >= 0.9, (name, accuracy)
