"""Shared pieces of the digits examples: data, a plain-JAX MLP, its loss and accuracy.

Nothing here knows about optimizers; `train_digits.py` and `compare_optimizers.py` bring their own.
The data is scikit-learn's bundled copy of the UCI handwritten digits (1797 images of 8x8 pixels, ten
classes), so the examples run offline.
"""

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

Params = dict[str, dict[str, jax.Array]]

LAYER_SIZES = (64, 128, 64, 10)  # 8x8 pixels in, ten digit classes out
SPLIT_SEED = 0  # the train/test split is fixed, so runs with different --seed values are comparable


class Digits(NamedTuple):
  x_train: np.ndarray  # float32, (n_train, 64), standardised
  y_train: np.ndarray  # int32, (n_train,)
  x_test: np.ndarray
  y_test: np.ndarray


def load_data(test_fraction: float = 0.2) -> Digits:
  """Loads the digits, splits them 80/20 (stratified, fixed seed) and standardises the pixels."""
  x, y = load_digits(return_X_y=True)
  x_train, x_test, y_train, y_test = train_test_split(
      x, y, test_size=test_fraction, random_state=SPLIT_SEED, stratify=y)
  # Statistics come from the training set only. Some border pixels are always 0: give them std 1, not 0.
  mean = x_train.mean(axis=0)
  std = x_train.std(axis=0)
  std = np.where(std > 0, std, 1.0)
  def standardise(a):
    return ((a - mean) / std).astype(np.float32)
  return Digits(standardise(x_train), y_train.astype(np.int32),
                standardise(x_test), y_test.astype(np.int32))


def init_mlp(key: jax.Array, sizes: Sequence[int] = LAYER_SIZES) -> Params:
  """He-initialised dense layers, as a dict pytree: {"dense_0": {"w": ..., "b": ...}, ...}."""
  params = {}
  for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
    key, subkey = jax.random.split(key)
    # He et al. (2015): variance 2 / fan_in keeps the activations' scale steady through ReLUs.
    w = jax.random.normal(subkey, (fan_in, fan_out), jnp.float32) * np.float32(np.sqrt(2.0 / fan_in))
    params[f"dense_{i}"] = {"w": w, "b": jnp.zeros((fan_out,), jnp.float32)}
  return params


def mlp(params: Params, x: jax.Array) -> jax.Array:
  """Logits for a batch of flattened images: ReLU hidden layers, linear output layer."""
  n_layers = len(params)
  for i in range(n_layers):  # walk the layers in order (not in the dict's sorted-key order)
    layer = params[f"dense_{i}"]
    x = x @ layer["w"] + layer["b"]
    if i < n_layers - 1:
      x = jax.nn.relu(x)
  return x


def loss_fn(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy between the MLP's logits and integer labels."""
  log_probs = jax.nn.log_softmax(mlp(params, x))
  return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))


@jax.jit
def accuracy(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
  """Fraction of examples whose highest logit is the true class."""
  predictions = jnp.argmax(mlp(params, x), axis=1)
  return jnp.mean((predictions == y).astype(jnp.float32))


def batch_indices(key: jax.Array, n: int, batch_size: int) -> np.ndarray:
  """One epoch of shuffled minibatch indices, shape (n // batch_size, batch_size).

  The last partial batch is dropped so every step has the same shape (one compilation); a fresh
  shuffle each epoch means every example is still seen.
  """
  steps = n // batch_size
  perm = np.asarray(jax.random.permutation(key, n))
  return perm[: steps * batch_size].reshape(steps, batch_size)

