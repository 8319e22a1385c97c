"""Shared convergence harness: softmax regression on scikit-learn's bundled digits data.

`train_digits(tx)` trains full-batch for a fixed number of steps inside one jitted `lax.scan` (one
compile per optimizer) and returns (first loss, last loss, held-out accuracy). Optimizers whose update
needs extra arguments get them from `extra_args(params, loss, grads) -> dict`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits

import gradxform

STEPS = 150


@functools.lru_cache(maxsize=1)
def digits_data():
  digits = load_digits()
  x = (digits.data / 16.0).astype(np.float32)
  y = digits.target.astype(np.int32)
  order = np.random.default_rng(0).permutation(len(x))
  x, y = x[order], y[order]
  split = int(0.8 * len(x))
  return (jnp.asarray(x[:split]), jnp.asarray(y[:split])), (jnp.asarray(x[split:]), jnp.asarray(y[split:]))


def digits_loss(params, x, y):
  logits = x @ params["w"] + params["b"]
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def train_digits(tx, steps: int = STEPS, extra_args=None):
  """Trains softmax regression with `tx`; returns (first loss, last loss, test accuracy) as floats."""
  (x, y), (x_test, y_test) = digits_data()
  params = {"w": jnp.zeros((64, 10), jnp.float32), "b": jnp.zeros((10,), jnp.float32)}

  @jax.jit
  def run(params):
    def step(carry, _):
      params, state = carry
      loss, grads = jax.value_and_grad(digits_loss)(params, x, y)
      kwargs = {} if extra_args is None else extra_args(params, loss, grads)
      updates, state = tx.update(grads, state, params, **kwargs)
      return (gradxform.apply_updates(params, updates), state), loss
    (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return params, losses

  params, losses = run(params)
  accuracy = jnp.mean(jnp.argmax(x_test @ params["w"] + params["b"], axis=1) == y_test)
  return float(losses[0]), float(losses[-1]), float(accuracy)


def assert_trains(tx, *, steps: int = STEPS, loss_ratio: float = 0.3, min_accuracy: float = 0.9,
                  extra_args=None) -> None:
  """Asserts `tx` cuts the digits loss to `loss_ratio` of its start and reaches `min_accuracy`."""
  first, last, accuracy = train_digits(tx, steps, extra_args)
  assert last < loss_ratio * first, (first, last)
  assert accuracy >= min_accuracy, accuracy
