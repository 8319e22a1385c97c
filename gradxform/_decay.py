"""Decoupled weight decay: add_decayed_weights (AdamW's decay term)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _combine
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree

__all__ = ["WeightDecaySchedule", "add_decayed_weights"]


class WeightDecaySchedule(NamedTuple):
  """State of `add_decayed_weights` with a scheduled weight decay: the step count."""
  count: jax.typing.ArrayLike


def _add_decayed_weights_init(params, *, weight_decay, **_):
  del params
  return WeightDecaySchedule(count=jnp.zeros([], jnp.int32)) if callable(weight_decay) else _base.EmptyState()


def _decayed_leaf(g, p, rate):
  return (_numerics.add(g, _numerics.mul(rate, p)),)


def _add_decayed_weights_update(updates, state, params=None, *, weight_decay, **extra_args):
  del extra_args
  _errors.require_params(params, "add_decayed_weights")
  if callable(weight_decay):
    _errors.expect_state(state, (WeightDecaySchedule,), "add_decayed_weights")
    rate = weight_decay(state.count)
    state = WeightDecaySchedule(count=_numerics.safe_increment(state.count))
  else:
    rate = weight_decay
    if isinstance(rate, (int, float)) and rate == 0.0:
      return updates, state
  updates, _ = _tree.leafwise(lambda g, p: _decayed_leaf(g, p, rate), updates, (), (params,),
                              extra_names=("params",))
  return updates, state


def add_decayed_weights(weight_decay: _base.ScalarOrSchedule = 0.0,
                        mask: Optional[Union[Any, Callable[[_base.Params], Any]]] = None
                        ) -> _base.GradientTransformationExtraArgs:
  """Adds weight_decay * params to the updates: decoupled weight decay (Loshchilov & Hutter, 2019).

  Args:
    weight_decay: the rate (>= 0) or a schedule of it.
    mask: where to decay: a tree of booleans like the params (or a prefix), or a function params -> tree;
      None decays everything.
  """
  _errors.check_number("add_decayed_weights", "weight_decay", weight_decay, low=0.0, allow_schedule=True)
  tx = _base.transformation("add_decayed_weights", _add_decayed_weights_init, _add_decayed_weights_update,
                            weight_decay=weight_decay)
  if mask is not None:
    return _combine.masked(tx, mask)
  return tx
