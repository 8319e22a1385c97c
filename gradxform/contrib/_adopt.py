"""ADOPT: Adam that normalises each gradient by the second moment of the PREVIOUS steps (Taniguchi et al., 2024).

Decorrelating the current gradient from its normaliser makes the method converge for any b2
("ADOPT: Modified Adam Can Converge with Any beta_2 with the Optimal Rate",
https://arxiv.org/abs/2411.02853). Momentum is applied after the normalisation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree
from gradxform._adaptive import _elem_norm_moment
from gradxform._alias import _optimizer
from gradxform._moments import ScaleByAdamState, _keep_dtype, _moving_average, _nu_dtype_arg, _widened, _zero_count
from gradxform._scale import scale_by_learning_rate

__all__ = ["adopt", "scale_by_adopt"]


def _fourth_root(x):
  """The default clipping bound at step t: t ** 0.25 (0 at the first step, so it yields a zero update)."""
  with jax.numpy_dtype_promotion("standard"):
    return x ** 0.25


def _adopt_init(params, *, mu_dtype, nu_dtype=None, **_):
  return ScaleByAdamState(count=_zero_count(), mu=_tree.zeros_like(params, dtype=mu_dtype),
                          nu=_tree.zeros_like(params, dtype=nu_dtype))


def _adopt_update(updates, state, params=None, *, b1, b2, eps, mu_dtype, nesterov, use_clipping, clip_value_fn,
                  nu_dtype=None, **extra_args):
  del params, extra_args
  _errors.expect_state(state, (ScaleByAdamState,), "scale_by_adopt")
  started = state.count > 0
  # The first step only seeds the second moment (b2 -> 0) and leaves the momentum at zero (b1 -> 1).
  b1_now, b2_now = jnp.where(started, b1, 1), jnp.where(started, b2, 0)
  if use_clipping:
    # A user function of an int32 count (the default is x ** 0.25): its dtypes are optax's, so standard rules.
    with jax.numpy_dtype_promotion("standard"):
      bound = clip_value_fn(state.count)
  count = _numerics.safe_increment(state.count)

  widen = nu_dtype is not None

  def leaf(g, mu, nu):
    original_g, stored_nu = g, nu
    if widen:
      g, nu = _widened(g, nu)
    new_nu = _elem_norm_moment(g, nu, b2_now, 2)
    normalised = _numerics.div(g, _numerics.maximum(jnp.sqrt(nu), eps))
    if use_clipping:
      with jax.numpy_dtype_promotion("standard"):  # the bound's dtype is the user function's
        normalised = jnp.clip(normalised, -bound, bound)
    new_mu = _moving_average(normalised, mu, b1_now)
    step = _moving_average(normalised, new_mu, b1_now) if nesterov else new_mu
    if widen:  # an explicit nu_dtype: normalised at nu's precision; step, mu and nu keep their dtypes
      out = _numerics.promote(original_g, mu)[0]
      return _keep_dtype(step, out), _keep_dtype(new_mu, mu), _keep_dtype(new_nu, stored_nu)
    return step, (new_mu if mu_dtype is None else new_mu.astype(mu_dtype)), new_nu

  updates, (mu, nu) = _tree.leafwise(leaf, updates, (state.mu, state.nu), state_names=("state.mu", "state.nu"))
  return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)


def _check(fn, b1, b2, eps, use_clipping, clip_value_fn):
  _errors.check_decay(fn, "b1", b1)
  _errors.check_decay(fn, "b2", b2)
  _errors.check_nonnegative(fn, "eps", eps)
  if use_clipping and not callable(clip_value_fn):
    raise _errors.HyperparameterTypeError(
        f"{fn}: argument `clip_value_fn` must be a function of the step count, got "
        f"{type(clip_value_fn).__name__} {clip_value_fn!r}")


def scale_by_adopt(b1: jax.typing.ArrayLike = 0.9, b2: jax.typing.ArrayLike = 0.9999,
                   eps: jax.typing.ArrayLike = 1e-6, mu_dtype: Optional[jax.typing.DTypeLike] = None, *,
                   nesterov: bool = False, use_clipping: bool = True,
                   clip_value_fn: Callable[[jax.Array], jax.Array] = _fourth_root,
                   nu_dtype: jax.typing.DTypeLike | None = None) -> _base.GradientTransformationExtraArgs:
  """ADOPT's scaling: m <- b1 m + (1 - b1) clip(g / max(sqrt(v_prev), eps)); v <- b2 v + (1 - b2) g^2.

  The normaliser v_prev excludes the current gradient. The first step returns zeros and only sets
  v = g^2. Clipping the normalised gradient to +-clip_value_fn(t) keeps early steps bounded.

  Args:
    b1: decay of the momentum, in [0, 1).
    b2: decay of the second moment, in [0, 1).
    eps: floor of the normaliser sqrt(v).
    mu_dtype: dtype of the momentum; None keeps the params' dtype.
    nesterov: return b1 m + (1 - b1) g_normalised instead of m.
    use_clipping: clip the normalised gradient.
    clip_value_fn: the clipping bound as a function of the step count (default t ** 0.25).
    nu_dtype: gradxform addition: dtype the second moment is stored in, kept across steps; None keeps the
      params' dtype (as optax). When given, g^2 and the normalisation are computed at the wider of nu's
      and the gradient's precision, mu keeps its initial dtype and the update the gradient's and mu's.

  Returns:
    The transformation; its state is a ScaleByAdamState.
  """
  _check("scale_by_adopt", b1, b2, eps, use_clipping, clip_value_fn)
  return _base.transformation("scale_by_adopt", _adopt_init, _adopt_update, b1=b1, b2=b2, eps=eps,
                              mu_dtype=_tree.canonical_dtype(mu_dtype), nesterov=nesterov,
                              use_clipping=use_clipping, clip_value_fn=clip_value_fn,
                              nu_dtype=_nu_dtype_arg("scale_by_adopt", nu_dtype))


def adopt(learning_rate: _base.ScalarOrSchedule, b1: jax.typing.ArrayLike = 0.9,
          b2: jax.typing.ArrayLike = 0.9999, eps: jax.typing.ArrayLike = 1e-6, mu_dtype: Optional[Any] = None,
          *, nesterov: bool = False, use_clipping: bool = True,
          clip_value_fn: Callable[[jnp.ndarray], jnp.ndarray] = _fourth_root,
          nu_dtype: Any | None = None) -> _base.GradientTransformationExtraArgs:
  """The ADOPT optimizer: `scale_by_adopt` then the learning rate.

  Args:
    learning_rate: step size, a number or a schedule.
    b1, b2, eps, mu_dtype, nesterov, use_clipping, clip_value_fn, nu_dtype: as in `scale_by_adopt`.

  Returns:
    The optimizer.
  """
  _errors.check_learning_rate("adopt", learning_rate)
  _check("adopt", b1, b2, eps, use_clipping, clip_value_fn)
  _nu_dtype_arg("adopt", nu_dtype)
  return _optimizer("adopt", scale_by_adopt(b1=b1, b2=b2, eps=eps, mu_dtype=mu_dtype, nesterov=nesterov,
                                            use_clipping=use_clipping, clip_value_fn=clip_value_fn,
                                            nu_dtype=nu_dtype),
                    scale_by_learning_rate(learning_rate))
