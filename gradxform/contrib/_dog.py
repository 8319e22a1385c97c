"""DoG and DoWG: parameter-free step sizes from the distance travelled and the gradients seen.

Ivgi et al., "DoG is SGD's Best Friend" (2023, arXiv:2302.12022); Khaled et al., "DoWG Unleashed"
(2023, arXiv:2305.16284). Both keep the initial parameters and scale the raw gradient by one global
step size per iteration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree
from gradxform._alias import _optimizer
from gradxform._decay import add_decayed_weights
from gradxform._scale import scale_by_learning_rate
from gradxform.tree_utils import tree_dtype, tree_norm, tree_sub

__all__ = ["DoGState", "DoWGState", "dog", "dowg"]

_INIT_STEP_TAGS = ("distance", "learning_rate", "heuristic")


class DoGState(NamedTuple):
  """State of DoG: first-step flag, the initial params, the largest distance so far, sum of |g|^2."""
  is_init_step: jax.Array
  init_params: _base.ArrayTree
  max_dist: jax.Array
  sum_sq_norm_grads: jax.Array


class DoWGState(NamedTuple):
  """State of DoWG: the initial params, the distance-weighted sum of |g|^2, the squared-distance estimate."""
  init_params: _base.ArrayTree
  weighted_sq_norm_grads: jax.Array
  estim_sq_dist: jax.Array


def _scale_tree(factor, updates):
  # scalar * leaf with standard promotion: a float32 factor widens bfloat16 updates, as in optax.
  return _tree.map_updates(lambda g: _numerics.mul(factor, g), updates)


# ----------------------------------------------------------------------------------------------
# DoG.


def _dog_init(params, *, init_step, eps, **_):
  del eps
  tag, value = init_step
  lowest = tree_dtype(params, "lowest")
  if tag == "distance":
    r_eps = value
  elif tag == "heuristic":
    r_eps = _numerics.mul(value, _numerics.add(1, tree_norm(params)))
  else:  # "learning_rate": the first step uses the given rate, the distance starts at zero
    r_eps = 0.0
  return DoGState(is_init_step=jnp.asarray(True), init_params=params,
                  max_dist=jnp.asarray(r_eps, dtype=lowest),
                  sum_sq_norm_grads=jnp.asarray(0.0, dtype=lowest))


def _dog_update(updates, state, params=None, *, init_step, eps, **extra_args):
  del extra_args
  _errors.expect_state(state, (DoGState,), "dog")
  _errors.require_params(params, "dog")
  dist = tree_norm(tree_sub(state.init_params, params))
  max_dist = _numerics.maximum(state.max_dist, dist)
  sum_sq = _numerics.add(state.sum_sq_norm_grads, tree_norm(updates, squared=True))
  step = _numerics.div(max_dist, jnp.sqrt(_numerics.add(sum_sq, eps)))
  tag, value = init_step
  if tag == "learning_rate":
    step = jnp.where(state.is_init_step, *_numerics.promote(value, step))
  return _scale_tree(step, updates), DoGState(is_init_step=jnp.asarray(False), init_params=state.init_params,
                                              max_dist=max_dist, sum_sq_norm_grads=sum_sq)


def _scale_by_dog(init_step, eps):
  return _base.transformation("dog", _dog_init, _dog_update, init_step=init_step, eps=eps)


def _check_weight_decay(name, weight_decay):
  _errors.check_number(name, "weight_decay", weight_decay, low=0.0, allow_none=True, allow_schedule=True)


def _decay_step(weight_decay, mask):
  return add_decayed_weights(weight_decay, mask) if weight_decay is not None else _base.identity()


def dog(
    learning_rate: _base.ScalarOrSchedule = 1.0,
    init_step: tuple[Literal["distance", "learning_rate", "heuristic"], jax.typing.ArrayLike] = ("heuristic", 1e-6),
    eps: jax.typing.ArrayLike = 1e-8,
    weight_decay: Optional[jax.typing.ArrayLike] = None,
    mask: Optional[Union[Any, Callable[[_base.Params], Any]]] = None,
):
  r"""Distance over Gradients: SGD with step r_t / sqrt(sum_k |g_k|^2 + eps) (Ivgi et al., 2023).

  r_t = max_{k <= t} |x_k - x_0| (starting from r_eps), so the step grows as the iterates move away
  from the initial point. `init` needs the real initial parameters (they are kept in the state).

  Args:
    learning_rate: a multiplier (or schedule) on DoG's own step size.
    init_step: `(tag, value)`: "distance" sets r_eps = value; "heuristic" sets
      r_eps = value * (1 + |x_0|) (1e-6 suggested, 1e-4 with batch norm); "learning_rate" uses
      `value` as the first step size.
    eps: added to the sum of squared gradient norms.
    weight_decay: if not None, decoupled weight decay added to the gradient first.
    mask: which params the weight decay applies to (a tree of booleans or a function of the params).

  Returns:
    A gradient transformation; its `update` needs `params`.
  """
  if not (isinstance(init_step, (tuple, list)) and len(init_step) == 2 and init_step[0] in _INIT_STEP_TAGS):
    raise _errors.HyperparameterError(
        f"dog: argument `init_step` must be a pair (tag, value) with tag one of {_INIT_STEP_TAGS}, "
        f"got {init_step!r}")
  _errors.check_learning_rate("dog", learning_rate)
  _errors.check_nonnegative("dog", "eps", eps)
  _errors.check_nonnegative("dog", "init_step", init_step[1])
  _check_weight_decay("dog", weight_decay)
  return _optimizer("dog", _decay_step(weight_decay, mask), _scale_by_dog(tuple(init_step), eps),
                    scale_by_learning_rate(learning_rate))


# ----------------------------------------------------------------------------------------------
# DoWG.


def _dowg_init(params, *, init_estim_sq_dist, eps, **_):
  lowest = tree_dtype(params, "lowest")
  start = eps if init_estim_sq_dist is None else init_estim_sq_dist
  return DoWGState(init_params=params, estim_sq_dist=jnp.asarray(start, dtype=lowest),
                   weighted_sq_norm_grads=jnp.asarray(0.0, dtype=lowest))


def _dowg_update(updates, state, params=None, *, init_estim_sq_dist, eps, **extra_args):
  del init_estim_sq_dist, extra_args
  _errors.expect_state(state, (DoWGState,), "dowg")
  _errors.require_params(params, "dowg")
  sq_dist = tree_norm(tree_sub(state.init_params, params), squared=True)
  estim = _numerics.maximum(state.estim_sq_dist, sq_dist)
  weighted = _numerics.add(_numerics.mul(estim, tree_norm(updates, squared=True)), state.weighted_sq_norm_grads)
  step = _numerics.div(estim, _numerics.add(jnp.sqrt(weighted), eps))
  return _scale_tree(step, updates), state._replace(estim_sq_dist=estim, weighted_sq_norm_grads=weighted)


def _scale_by_dowg(init_estim_sq_dist, eps):
  return _base.transformation("dowg", _dowg_init, _dowg_update, init_estim_sq_dist=init_estim_sq_dist, eps=eps)


def dowg(
    learning_rate: _base.ScalarOrSchedule = 1.0,
    init_estim_sq_dist: Optional[jax.typing.ArrayLike] = None,
    eps: jax.typing.ArrayLike = 1e-4,
    weight_decay: Optional[jax.typing.ArrayLike] = None,
    mask: Optional[Union[Any, Callable[[_base.Params], Any]]] = None,
):
  r"""Distance over Weighted Gradients (Khaled et al., 2023).

  With d_t^2 = max(d_{t-1}^2, |x_t - x_0|^2) and v_t = v_{t-1} + d_t^2 |g_t|^2, the step is
  d_t^2 / (sqrt(v_t) + eps) times the gradient.

  Args:
    learning_rate: a multiplier (or schedule) on DoWG's own step size.
    init_estim_sq_dist: initial estimate of the squared distance to the solution (None: `eps`).
    eps: added to the denominator; also the default initial squared distance.
    weight_decay: if not None, decoupled weight decay added to the gradient first.
    mask: which params the weight decay applies to (a tree of booleans or a function of the params).

  Returns:
    A gradient transformation; its `update` needs `params`.
  """
  _errors.check_learning_rate("dowg", learning_rate)
  _errors.check_nonnegative("dowg", "init_estim_sq_dist", init_estim_sq_dist, allow_none=True)
  _errors.check_nonnegative("dowg", "eps", eps)
  _check_weight_decay("dowg", weight_decay)
  return _optimizer("dowg", _decay_step(weight_decay, mask), _scale_by_dowg(init_estim_sq_dist, eps),
                    scale_by_learning_rate(learning_rate))
