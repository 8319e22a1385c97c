"""Adaptive-moment scalings beyond Adam: AdaBelief, Yogi, Adan, NovoGrad, Lion, optimistic gradients, SM3.

As in `_moments`, each update computes its step scalars (counts, bias corrections, first-step flags)
once, then runs a per-leaf function over the tree with `_tree.leafwise`. States keep the dtypes optax's
do: a moment is cast only where optax casts it (to `mu_dtype`), otherwise it takes the dtype standard
promotion gives.
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple, Optional

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree
from gradxform._moments import (ScaleByAdamState, _debias, _keep_dtype, _moving_average, _nu_dtype_arg, _widened,
                                _zero_count)

# ScaleByOptimisticGradientState stays out: optax keeps it off its top level too.
__all__ = [
    "ScaleByAdanState", "ScaleByBeliefState", "ScaleByLionState", "ScaleByNovogradState", "ScaleBySM3State",
    "scale_by_adan", "scale_by_belief", "scale_by_lion", "scale_by_novograd", "scale_by_optimistic_gradient",
    "scale_by_sm3", "scale_by_yogi",
]


class ScaleByBeliefState(NamedTuple):
  """State of `scale_by_belief`: step count, first moment and the EMA of the squared prediction error."""
  count: jax.typing.ArrayLike
  mu: _base.Updates
  nu: _base.Updates


class ScaleByAdanState(NamedTuple):
  """State of `scale_by_adan`: the three moments, the previous gradient and the step count."""
  m: _base.Updates
  v: _base.Updates
  n: _base.Updates
  g: _base.Updates
  t: jax.typing.ArrayLike


class ScaleByNovogradState(NamedTuple):
  """State of `scale_by_novograd`: step count, momentum, and one squared-norm average (a 0-d array) per leaf."""
  count: jax.typing.ArrayLike
  mu: _base.Updates
  nu: _base.Updates


class ScaleByLionState(NamedTuple):
  """State of `scale_by_lion`: step count and the momentum."""
  count: jax.typing.ArrayLike
  mu: _base.Updates


class ScaleByOptimisticGradientState(NamedTuple):
  """State of `scale_by_optimistic_gradient`: whether no step was taken yet, and the last gradient."""
  is_initial_step: jax.typing.ArrayLike
  previous_gradient: _base.Updates


class ScaleBySM3State(NamedTuple):
  """State of `scale_by_sm3`: per leaf, one accumulator vector per axis (mu), and the momentum (nu)."""
  mu: _base.Updates
  nu: _base.Updates


class _UnsupportedLeafError(_errors.LeafTypeError, ValueError):
  """A leaf the transformation cannot handle; a ValueError too, as optax raises for complex SM3 params."""


# ----------------------------------------------------------------------------------------------
# Shared per-leaf pieces.


def _power_of_magnitude(g, order):
  """g**order for real g; (|g|^2)**(order / 2), a real array, for complex g."""
  if jnp.isrealobj(g):
    return g ** order
  half = order / 2
  return _numerics.abs_sq(g) ** (int(half) if half.is_integer() else half)


def _elem_norm_moment(g, moment, decay, order):
  """(1 - decay) * |g|**order + decay * moment, elementwise (the moment stays real for complex g)."""
  return _moving_average(_power_of_magnitude(g, order), moment, decay)


def _where(condition, x, y):
  x, y = _numerics.promote(x, y)
  return jnp.where(condition, x, y)


def _cast(x, dtype):
  return x if dtype is None else x.astype(dtype)


def _full_like(params, value):
  """`value` broadcast like each leaf, in the leaf's dtype (as jnp.full_like, whatever value's dtype)."""
  # Adding the (param-tied) zeros keeps the sharding under jit; 0 + v is exactly v.
  return jax.tree.map(lambda z: None if z is None else z + jnp.full_like(z, value),
                      _tree.zeros_like(params), is_leaf=_tree.is_none)


def _check_decays(fn, **decays):
  for name, value in decays.items():
    _errors.check_decay(fn, name, value)


def _check_nonnegative(fn, **values):
  for name, value in values.items():
    _errors.check_nonnegative(fn, name, value)


# ----------------------------------------------------------------------------------------------
# AdaBelief and Yogi.


def _belief_init(params, **_):
  return ScaleByBeliefState(count=_zero_count(), mu=_tree.zeros_like(params), nu=_tree.zeros_like(params))


def _belief_update(updates, state, params=None, *, b1, b2, eps, eps_root, nesterov, **extra_args):
  del params, extra_args
  _errors.expect_state(state, (ScaleByBeliefState,), "scale_by_belief")
  count = _numerics.safe_increment(state.count)
  bc1, bc2 = _numerics.bias_correction_factor(b1, count), _numerics.bias_correction_factor(b2, count)
  bc1_next = _numerics.bias_correction_factor(b1, _numerics.safe_increment(count)) if nesterov else None

  def leaf(g, mu, nu):
    new_mu = _moving_average(g, mu, b1)
    new_nu = _numerics.add(_elem_norm_moment(_numerics.sub(g, new_mu), nu, b2, 2), eps_root)
    if nesterov:
      mu_hat = _numerics.add(_numerics.mul(b1, _debias(new_mu, bc1_next)), _numerics.mul(1 - b1, _debias(g, bc1)))
    else:
      mu_hat = _debias(new_mu, bc1)
    step = _numerics.div(mu_hat, _numerics.add(jnp.sqrt(_debias(new_nu, bc2)), eps))
    return step, new_mu, new_nu

  updates, (mu, nu) = _tree.leafwise(leaf, updates, (state.mu, state.nu), state_names=("state.mu", "state.nu"))
  return updates, ScaleByBeliefState(count=count, mu=mu, nu=nu)


def scale_by_belief(b1: jax.typing.ArrayLike = 0.9, b2: jax.typing.ArrayLike = 0.999,
                    eps: jax.typing.ArrayLike = 1e-16, eps_root: jax.typing.ArrayLike = 1e-16, *,
                    nesterov: bool = False) -> _base.GradientTransformationExtraArgs:
  """AdaBelief's scaling: Adam with the variance of the gradient around its EMA (Zhuang et al., 2020).

  m <- b1 m + (1 - b1) g;  s <- b2 s + (1 - b2) (g - m)^2 + eps_root;
  update = m_hat / (sqrt(s_hat) + eps), hats being bias-corrected.

  Args:
    b1: decay of the first moment, in [0, 1).
    b2: decay of the squared prediction error, in [0, 1).
    eps: added to the denominator outside the square root.
    eps_root: added to s at every step (keeps meta-gradients finite).
    nesterov: Nesterov momentum on the first moment, as in `scale_by_adam`.

  Returns:
    The transformation; its state is a ScaleByBeliefState.
  """
  _check_decays("scale_by_belief", b1=b1, b2=b2)
  _check_nonnegative("scale_by_belief", eps=eps, eps_root=eps_root)
  return _base.transformation("scale_by_belief", _belief_init, _belief_update, b1=b1, b2=b2, eps=eps,
                              eps_root=eps_root, nesterov=nesterov)


def _yogi_init(params, *, initial_accumulator_value, **_):
  return ScaleByAdamState(count=_zero_count(), mu=_full_like(params, initial_accumulator_value),
                          nu=_full_like(params, initial_accumulator_value))


def _yogi_update(updates, state, params=None, *, b1, b2, eps, eps_root, **extra_args):
  del params, extra_args
  _errors.expect_state(state, (ScaleByAdamState,), "scale_by_yogi")
  count = _numerics.safe_increment(state.count)
  bc1, bc2 = _numerics.bias_correction_factor(b1, count), _numerics.bias_correction_factor(b2, count)

  def leaf(g, mu, nu):
    new_mu = _moving_average(g, mu, b1)
    g2 = _numerics.abs_sq(g)
    # v moves towards g^2 by at most (1 - b2) g^2 per step: the additive update that makes Yogi.
    new_nu = _numerics.sub(nu, _numerics.mul(_numerics.mul(1 - b2, jnp.sign(_numerics.sub(nu, g2))), g2))
    denom = _numerics.add(jnp.sqrt(_numerics.add(_debias(new_nu, bc2), eps_root)), eps)
    return _numerics.div(_debias(new_mu, bc1), denom), new_mu, new_nu

  updates, (mu, nu) = _tree.leafwise(leaf, updates, (state.mu, state.nu), state_names=("state.mu", "state.nu"))
  return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)


def scale_by_yogi(b1: jax.typing.ArrayLike = 0.9, b2: jax.typing.ArrayLike = 0.999,
                  eps: jax.typing.ArrayLike = 1e-3, eps_root: jax.typing.ArrayLike = 0.0,
                  initial_accumulator_value: jax.typing.ArrayLike = 1e-6
                  ) -> _base.GradientTransformationExtraArgs:
  """Yogi's scaling: Adam whose second moment changes additively (Zaheer et al., 2018).

  v <- v - (1 - b2) sign(v - g^2) g^2;  update = m_hat / (sqrt(v_hat + eps_root) + eps).
  Complex updates use |g|^2.

  Args:
    b1, b2: decay rates of the first and second moments, in [0, 1).
    eps: added to the denominator outside the square root.
    eps_root: added inside the square root.
    initial_accumulator_value: starting value of both moments (>= 0).

  Returns:
    The transformation; its state is a ScaleByAdamState.
  """
  _check_decays("scale_by_yogi", b1=b1, b2=b2)
  _check_nonnegative("scale_by_yogi", eps=eps, eps_root=eps_root,
                     initial_accumulator_value=initial_accumulator_value)
  return _base.transformation("scale_by_yogi", _yogi_init, _yogi_update, b1=b1, b2=b2, eps=eps,
                              eps_root=eps_root, initial_accumulator_value=initial_accumulator_value)


# ----------------------------------------------------------------------------------------------
# Adan.


def _adan_init(params, **_):
  zeros = functools.partial(_tree.zeros_like, params)
  return ScaleByAdanState(m=zeros(), v=zeros(), n=zeros(), g=zeros(), t=_zero_count())


def _adan_update(updates, state, params=None, *, b1, b2, b3, eps, eps_root, **extra_args):
  del params, extra_args
  _errors.expect_state(state, (ScaleByAdanState,), "scale_by_adan")
  first = state.t == 0
  t = _numerics.safe_increment(state.t)
  bc1, bc2, bc3 = (_numerics.bias_correction_factor(b, t) for b in (b1, b2, b3))
  # optax scales by jnp.asarray(1 - b2): a weakly typed array, rounded to float32 before meeting bfloat16.
  diff_weight = jnp.asarray(1 - b2)

  def leaf(g, m, v, n, prev):
    diff = _where(first, jnp.zeros_like(g), _numerics.sub(g, prev))  # no previous gradient at step 1
    new_m = _moving_average(g, m, b1)
    new_v = _moving_average(diff, v, b2)
    new_n = _elem_norm_moment(_numerics.add(g, _numerics.mul(diff_weight, diff)), n, b3, 2)
    direction = _numerics.add(_debias(new_m, bc1), _numerics.mul(diff_weight, _debias(new_v, bc2)))
    denom = _numerics.add(jnp.sqrt(_numerics.add(_debias(new_n, bc3), eps_root)), eps)
    return _numerics.div(direction, denom), new_m, new_v, new_n, g

  updates, (m, v, n, g) = _tree.leafwise(
      leaf, updates, (state.m, state.v, state.n, state.g),
      state_names=("state.m", "state.v", "state.n", "state.g"))
  return updates, ScaleByAdanState(m=m, v=v, n=n, g=g, t=t)


def scale_by_adan(b1: jax.typing.ArrayLike = 0.98, b2: jax.typing.ArrayLike = 0.92,
                  b3: jax.typing.ArrayLike = 0.99, eps: jax.typing.ArrayLike = 1e-8,
                  eps_root: jax.typing.ArrayLike = 0.0) -> _base.GradientTransformationExtraArgs:
  """Adan's scaling: Nesterov-style momentum from gradient differences (Xie et al., 2022, Algorithm 1).

  With d = g - g_prev (0 at the first step): m <- EMA_b1(g), v <- EMA_b2(d),
  n <- EMA_b3((g + (1 - b2) d)^2); update = (m_hat + (1 - b2) v_hat) / (sqrt(n_hat + eps_root) + eps).

  Args:
    b1: decay of the gradient average, in [0, 1).
    b2: decay of the gradient-difference average, in [0, 1).
    b3: decay of the squared term's average, in [0, 1).
    eps: added to the denominator outside the square root.
    eps_root: added inside the square root.

  Returns:
    The transformation; its state is a ScaleByAdanState.
  """
  _check_decays("scale_by_adan", b1=b1, b2=b2, b3=b3)
  _check_nonnegative("scale_by_adan", eps=eps, eps_root=eps_root)
  return _base.transformation("scale_by_adan", _adan_init, _adan_update, b1=b1, b2=b2, b3=b3, eps=eps,
                              eps_root=eps_root)


# ----------------------------------------------------------------------------------------------
# NovoGrad.


def _scalar_zeros(params, dtype=None):
  def leaf(p):
    return None if p is None else jnp.zeros([], jnp.asarray(p).dtype if dtype is None else dtype)
  return jax.tree.map(leaf, params, is_leaf=_tree.is_none)


def _novograd_init(params, *, mu_dtype, nu_dtype=None, **_):
  return ScaleByNovogradState(count=_zero_count(), mu=_tree.zeros_like(params, dtype=mu_dtype),
                              nu=_scalar_zeros(params, nu_dtype))


def _same_dtypes_cond(predicate, first_fn, next_fn, *operands):
  """`lax.cond`, with both branches' leaves cast to their promoted dtype (lax.cond needs them equal).

  optax runs NovoGrad's two branches in a `lax.cond`; doing the same keeps the arithmetic of the first
  and later steps in one compiled computation, as there (it matters for bfloat16 rounding).
  """
  shapes = [jax.tree.leaves(jax.eval_shape(fn, *operands)) for fn in (first_fn, next_fn)]
  with jax.numpy_dtype_promotion("standard"):
    dtypes = [jnp.result_type(a.dtype, b.dtype) for a, b in zip(*shapes)]
  if all(a.dtype == b.dtype for a, b in zip(*shapes)):
    return jax.lax.cond(predicate, first_fn, next_fn, *operands)

  def cast(fn):
    def run(*args):
      out = fn(*args)
      leaves, treedef = jax.tree.flatten(out)
      return treedef.unflatten([x.astype(d) for x, d in zip(leaves, dtypes)])
    return run

  return jax.lax.cond(predicate, cast(first_fn), cast(next_fn), *operands)


def _novograd_update(updates, state, params=None, *, b1, b2, eps, eps_root, weight_decay, mu_dtype, nu_dtype=None,
                     **extra_args):
  del extra_args
  _errors.require_params(params, "scale_by_novograd")
  _errors.expect_state(state, (ScaleByNovogradState,), "scale_by_novograd")
  # nu holds one 0-d average per leaf, so shapes are checked against the updates for mu and params only.
  _tree.leafwise(lambda g, mu, p: (g,), updates, (), (state.mu, params), extra_names=("state.mu", "params"))
  count = _numerics.safe_increment(state.count)

  widen = nu_dtype is not None

  def squared_norm(g):
    return jnp.linalg.norm(g) ** 2

  def later_nu(g, n):
    if not widen:
      return _moving_average(squared_norm(g), n, b2)
    wide_g, wide_n = _widened(g, n)  # an explicit nu_dtype: computed at the wider precision, kept when stored
    return _keep_dtype(_moving_average(squared_norm(wide_g), wide_n, b2), n)

  def nu_step(first):
    def run(grads, nu):
      leaf = ((lambda g, n: (g, squared_norm(_widened(g, n)[0] if widen else g).astype(n.dtype))) if first else
              (lambda g, n: (g, later_nu(g, n))))
      return _tree.leafwise(leaf, grads, (nu,), state_names=("state.nu",), check_shapes=False)[1][0]
    return run

  def mu_step(first):
    def run(grads, params, mu, nu):
      def leaf(g, m, n, p):
        step = _numerics.add(_numerics.div(g, _numerics.add(jnp.sqrt(_numerics.add(n, eps_root)), eps)),
                             _numerics.mul(weight_decay, p))
        return g, (step if first else _numerics.add(_numerics.mul(b1, m), step))
      return _tree.leafwise(leaf, grads, (mu,), (nu, params), check_shapes=False)[1][0]
    return run

  # The first step starts both averages from the current values.
  nu = _same_dtypes_cond(count == 1, nu_step(True), nu_step(False), updates, state.nu)
  mu = _same_dtypes_cond(count == 1, mu_step(True), mu_step(False), updates, params, state.mu, nu)
  if widen and mu_dtype is None:  # normalised at nu's precision; mu keeps the dtype it was given at init
    mu = jax.tree.map(lambda m, old: None if m is None else _keep_dtype(m, old), mu, state.mu,
                      is_leaf=_tree.is_none)
  mu = _tree.cast(mu, mu_dtype)
  new_updates = jax.tree.map(lambda g, m: None if g is None else m, updates, mu, is_leaf=_tree.is_none)
  return new_updates, ScaleByNovogradState(count=count, mu=mu, nu=nu)


def scale_by_novograd(b1: jax.typing.ArrayLike = 0.9, b2: jax.typing.ArrayLike = 0.25,
                      eps: jax.typing.ArrayLike = 1e-8, eps_root: jax.typing.ArrayLike = 0.0,
                      weight_decay: jax.typing.ArrayLike = 0.0,
                      mu_dtype: Optional[jax.typing.DTypeLike] = None, *,
                      nu_dtype: jax.typing.DTypeLike | None = None) -> _base.GradientTransformationExtraArgs:
  """NovoGrad's scaling: layer-wise second moments from squared gradient norms (Ginsburg et al., 2019).

  Per leaf: v <- b2 v + (1 - b2) ||g||^2 (v = ||g||^2 at step 1);
  m <- b1 m + g / (sqrt(v + eps_root) + eps) + weight_decay * p (without b1 m at step 1); update = m.
  Needs the params.

  Args:
    b1: momentum coefficient, in [0, 1).
    b2: decay of the squared-norm average, in [0, 1).
    eps: added to the denominator outside the square root.
    eps_root: added inside the square root.
    weight_decay: coefficient of the params added to the normalised gradient (>= 0).
    mu_dtype: dtype of the momentum; None keeps the dtype the arithmetic gives.
    nu_dtype: gradxform addition: dtype of the per-leaf squared-norm averages `nu`; None keeps the
      params' dtype (as optax). When given, norms and the normalisation are computed at the wider of nu's
      and the gradient's precision, and mu (without mu_dtype) keeps its initial dtype.

  Returns:
    The transformation; its state is a ScaleByNovogradState.
  """
  _check_decays("scale_by_novograd", b1=b1, b2=b2)
  _check_nonnegative("scale_by_novograd", eps=eps, eps_root=eps_root, weight_decay=weight_decay)
  return _base.transformation("scale_by_novograd", _novograd_init, _novograd_update, b1=b1, b2=b2, eps=eps,
                              eps_root=eps_root, weight_decay=weight_decay,
                              mu_dtype=_tree.canonical_dtype(mu_dtype),
                              nu_dtype=_nu_dtype_arg("scale_by_novograd", nu_dtype))


# ----------------------------------------------------------------------------------------------
# Lion.


_LION_MODES = ("hard", "smooth", "refined")


def _lion_init(params, *, mu_dtype, **_):
  return ScaleByLionState(count=_zero_count(), mu=_tree.zeros_like(params, dtype=mu_dtype))


def _lion_direction(x, mode, smooth_beta):
  if mode == "hard":
    return jnp.sign(x)
  if mode == "smooth":
    return jnp.tanh(_numerics.mul(smooth_beta, x))
  return jnp.where(jnp.abs(x) < 1.0, x, jnp.sign(x))  # "refined": linear near 0, sign beyond 1


def _lion_update(updates, state, params=None, *, b1, b2, mu_dtype, mode, smooth_beta, **extra_args):
  del params, extra_args
  _errors.expect_state(state, (ScaleByLionState,), "scale_by_lion")

  def leaf(g, mu):
    step = _lion_direction(_moving_average(g, mu, b1), mode, smooth_beta)
    return step, _cast(_moving_average(g, mu, b2), mu_dtype)

  updates, (mu,) = _tree.leafwise(leaf, updates, (state.mu,), state_names=("state.mu",))
  return updates, ScaleByLionState(count=_numerics.safe_increment(state.count), mu=mu)


def scale_by_lion(b1: jax.typing.ArrayLike = 0.9, b2: jax.typing.ArrayLike = 0.99,
                  mu_dtype: Optional[jax.typing.DTypeLike] = None, *,
                  mode: Literal["hard", "smooth", "refined"] = "hard",
                  smooth_beta: float = 1.0) -> _base.GradientTransformationExtraArgs:
  """Lion's scaling: the sign of an interpolation of momentum and gradient (Chen et al., 2023).

  update = sign((1 - b1) g + b1 m);  m <- b2 m + (1 - b2) g.

  Args:
    b1: weight of the momentum in the update direction, in [0, 1].
    b2: decay of the momentum, in [0, 1).
    mu_dtype: dtype of the momentum; None keeps the dtype the arithmetic gives.
    mode: "hard" (sign), "smooth" (tanh(smooth_beta * x)) or "refined" (x where |x| < 1, else sign(x)).
    smooth_beta: the slope used by mode="smooth".

  Returns:
    The transformation; its state is a ScaleByLionState.
  """
  _errors.check_number("scale_by_lion", "b1", b1, low=0.0, high=1.0)
  _errors.check_decay("scale_by_lion", "b2", b2)
  _errors.check_number("scale_by_lion", "smooth_beta", smooth_beta)
  if mode not in _LION_MODES:
    raise _errors.HyperparameterError(f"scale_by_lion: argument `mode` must be one of {list(_LION_MODES)}, "
                                      f"got {mode!r}")
  return _base.transformation("scale_by_lion", _lion_init, _lion_update, b1=b1, b2=b2,
                              mu_dtype=_tree.canonical_dtype(mu_dtype), mode=mode, smooth_beta=smooth_beta)


# ----------------------------------------------------------------------------------------------
# Optimistic gradients.


def _optimistic_init(params, **_):
  return ScaleByOptimisticGradientState(is_initial_step=jnp.array(True),
                                        previous_gradient=_tree.zeros_like(params))


def _optimistic_update(updates, state, params=None, *, alpha, beta, **extra_args):
  del params, extra_args
  _errors.expect_state(state, (ScaleByOptimisticGradientState,), "scale_by_optimistic_gradient")
  initial = state.is_initial_step

  def leaf(g, prev):
    prev = _where(initial, g, prev)  # no previous gradient yet: the step is the plain gradient
    return _numerics.sub(_numerics.mul(alpha + beta, g), _numerics.mul(beta, prev)), g

  updates, (previous,) = _tree.leafwise(leaf, updates, (state.previous_gradient,),
                                        state_names=("state.previous_gradient",))
  return updates, ScaleByOptimisticGradientState(is_initial_step=jnp.array(False), previous_gradient=previous)


def scale_by_optimistic_gradient(alpha: jax.typing.ArrayLike = 1.0,
                                 beta: jax.typing.ArrayLike = 1.0) -> _base.GradientTransformationExtraArgs:
  """Generalised optimistic gradient: (alpha + beta) g_t - beta g_{t-1} (Mokhtari et al., 2019).

  At the first step g_{t-1} is taken to be g_t, so the update is alpha * g.

  Args:
    alpha: coefficient of the current gradient.
    beta: coefficient of the negative momentum (the correction by the last gradient).

  Returns:
    The transformation; its state is a ScaleByOptimisticGradientState.
  """
  _errors.check_number("scale_by_optimistic_gradient", "alpha", alpha)
  _errors.check_number("scale_by_optimistic_gradient", "beta", beta)
  return _base.transformation("scale_by_optimistic_gradient", _optimistic_init, _optimistic_update,
                              alpha=alpha, beta=beta)


# ----------------------------------------------------------------------------------------------
# SM3.


def _sm3_check_leaves(params):
  for path, p in zip(_tree.leaf_paths(params), _tree.flatten(params)[0]):
    if p is None:
      continue
    if jnp.iscomplexobj(p):
      raise _UnsupportedLeafError(f"the params at {path} are complex: scale_by_sm3 supports real params only")
    if jnp.ndim(p) == 0:
      raise _UnsupportedLeafError(
          f"the params at {path} are 0-d: scale_by_sm3 keeps one accumulator per axis, so a scalar has "
          "none (optax fails on it too); give the leaf shape (1,)")
    if jnp.ndim(p) >= 2 and jnp.size(p) == 0:
      raise _UnsupportedLeafError(
          f"the params at {path} have shape {tuple(jnp.shape(p))}, empty with 2 or more axes: scale_by_sm3 takes "
          "the max over the other axes, which an empty axis does not have (optax fails there too); "
          "leave the leaf out or pass None for it")


def _sm3_init(params, **_):
  _sm3_check_leaves(params)

  def axis_zeros(p):
    p = jnp.asarray(p)
    return [jnp.zeros((size,), p.dtype) for size in p.shape]

  return ScaleBySM3State(mu=jax.tree.map(axis_zeros, params), nu=_tree.zeros_like(params))


def _sm3_update(updates, state, params=None, *, b1, b2, eps, **extra_args):
  del params, extra_args
  _errors.expect_state(state, (ScaleBySM3State,), "scale_by_sm3")
  # With b2 = 1 (the default) the accumulator is a plain sum of squares, not an average.
  sq_weight = 1.0 if b2 == 1.0 else 1.0 - b2

  def leaf(g, axis_accums, nu):
    if len(axis_accums) != g.ndim:
      raise _errors.TreeMismatchError(
          f"scale_by_sm3: an update of shape {g.shape} met {len(axis_accums)} axis accumulators in state.mu")
    # Each axis vector, broadcast along its own axis; their minimum bounds every entry's sum of squares.
    bounds = [jnp.reshape(a, [1] * i + [g.shape[i]] + [1] * (g.ndim - i - 1)) for i, a in enumerate(axis_accums)]
    previous = bounds[0] if g.ndim < 2 else functools.reduce(jnp.minimum, bounds)
    accum = _numerics.add(_numerics.mul(sq_weight, g ** 2), _numerics.mul(b2, previous))
    inv_root = jnp.where(accum > 0, jax.lax.rsqrt(_numerics.add(accum, eps)), 0.0)
    new_nu = _moving_average(_numerics.mul(g, inv_root), nu, b1)
    if g.ndim < 2:
      new_accums = [accum]
    else:
      new_accums = [jnp.max(accum, axis=[j for j in range(g.ndim) if j != i]) for i in range(g.ndim)]
    return new_nu, new_accums, new_nu

  # mu holds a list of vectors per leaf, so only nu's shapes can be checked against the updates.
  _tree.leafwise(lambda g, nu: (g,), updates, (), (state.nu,), extra_names=("state.nu",))
  updates, (mu, nu) = _tree.leafwise(leaf, updates, (state.mu, state.nu), state_names=("state.mu", "state.nu"),
                                     check_shapes=False)
  return updates, ScaleBySM3State(mu=mu, nu=nu)


def scale_by_sm3(b1: jax.typing.ArrayLike = 0.9, b2: jax.typing.ArrayLike = 1.0,
                 eps: jax.typing.ArrayLike = 1e-8) -> _base.GradientTransformationExtraArgs:
  """SM3's scaling: AdaGrad with memory-saving per-axis accumulators (Anil et al., 2019).

  For a leaf of rank k, the squared-gradient sum of each entry is bounded by the minimum of k per-axis
  vectors; a = (1 - b2) g^2 + b2 * that bound (g^2 + bound when b2 = 1), and the update is the momentum
  of g / sqrt(a + eps) (0 where a = 0). Real params of rank >= 1 only.

  Args:
    b1: momentum coefficient, in [0, 1).
    b2: decay of the accumulators, in [0, 1]; 1 sums squares as AdaGrad does.
    eps: added inside the square root.

  Returns:
    The transformation; its state is a ScaleBySM3State.
  """
  _errors.check_decay("scale_by_sm3", "b1", b1)
  _errors.check_number("scale_by_sm3", "b2", b2, low=0.0, high=1.0)
  _errors.check_nonnegative("scale_by_sm3", "eps", eps)
  return _base.transformation("scale_by_sm3", _sm3_init, _sm3_update, b1=b1, b2=b2, eps=eps)
