"""Hessian-vector product, Hessian diagonal and empirical Fisher diagonal of `loss(params, inputs, targets)`."""

from __future__ import annotations

import abc
import functools
import warnings
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from jax import flatten_util


class LossFn(Protocol):
  """`loss(params, inputs, targets) -> scalar`."""

  @abc.abstractmethod
  def __call__(self, params: Any, inputs: jax.Array, targets: jax.Array) -> jax.Array:
    ...


def _deprecated(fn):
  """Warns at every call, like optax's deprecated second-order functions."""
  message = (f"gradxform.second_order.{fn.__name__} mirrors optax's deprecated function of the same name "
             "(optax removes it in 0.2.9); compute it with jax.jvp / jax.grad directly.")

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    warnings.warn(message, DeprecationWarning, stacklevel=2)
    return fn(*args, **kwargs)
  return wrapper


def _flat(tree: Any) -> jax.Array:
  return flatten_util.ravel_pytree(tree)[0]


def _hvp(loss, v, params, inputs, targets):
  _, unflatten = flatten_util.ravel_pytree(params)
  gradient = jax.grad(lambda p: loss(p, inputs, targets))
  return jax.jvp(gradient, (params,), (unflatten(v),))[1]


@_deprecated
def hvp(loss: LossFn, v: jax.Array, params: Any, inputs: jax.Array, targets: jax.Array) -> jax.Array:
  """The Hessian of `loss` at `params` times the flat vector `v` (forward-over-reverse differentiation).

  Args:
    loss: `loss(params, inputs, targets) -> scalar`.
    v: a flat vector with as many entries as `params` has in all.
    params, inputs, targets: where to evaluate.

  Returns:
    H v, shaped like `params`.
  """
  return _hvp(loss, v, params, inputs, targets)


@_deprecated
def hessian_diag(loss: LossFn, params: Any, inputs: jax.Array, targets: jax.Array) -> jax.Array:
  """The diagonal of the Hessian of `loss` at `params`, as a flat vector (one HVP per parameter entry).

  Returns:
    [e_i^T H e_i for every entry i of the flattened params].
  """
  basis = jnp.eye(_flat(params).size)
  return jax.vmap(lambda e: jnp.vdot(e, _flat(_hvp(loss, e, params, inputs, targets))))(basis)


@_deprecated
def fisher_diag(negative_log_likelihood: LossFn, params: Any, inputs: jax.Array, targets: jax.Array
                ) -> jax.Array:
  """The diagonal of the empirical Fisher: the squared gradient of the negative log-likelihood, flattened."""
  return jnp.square(_flat(jax.grad(negative_log_likelihood)(params, inputs, targets)))
