"""Moment-based scalings: momentum (trace), EMA, and the Adam/RMSprop/AdaGrad/Adadelta families.

Each transformation is a per-leaf function (arrays and scalars in, arrays out) plus a short tree-level
`update` that computes the scalars once per step (counts, bias corrections) and calls `_tree.leafwise`.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree


class TraceState(NamedTuple):
  """State of `trace`: the momentum buffer."""
  trace: _base.Params


class EmaState(NamedTuple):
  """State of `ema`: step count and the moving average."""
  count: jax.typing.ArrayLike
  ema: _base.Params


class ScaleByAdamState(NamedTuple):
  """State of `scale_by_adam` (and adamax, radam): step count, first and second moments."""
  count: jax.typing.ArrayLike
  mu: _base.Updates
  nu: _base.Updates


class ScaleByAmsgradState(NamedTuple):
  """State of `scale_by_amsgrad`: as Adam plus the running maximum of the second moment."""
  count: jax.typing.ArrayLike
  mu: _base.Updates
  nu: _base.Updates
  nu_max: _base.Updates


# ----------------------------------------------------------------------------------------------
# Per-leaf arithmetic shared by the family.


def _square(g):
  """g**2 for real g, |g|**2 (real) for complex g."""
  return g ** 2 if jnp.isrealobj(g) else _numerics.abs_sq(g)


def _moving_average(new, old, decay):
  """(1 - decay) * new + decay * old, in the common dtype of new and old."""
  return _numerics.add(_numerics.mul(1 - decay, new), _numerics.mul(decay, old))


@functools.partial(jax.jit, inline=True)
def _debias(x, correction):
  """x / correction, the correction (a scalar 1 - decay**t) cast to x's dtype.

  Compiled even when called eagerly, as optax's bias correction is: XLA's division by a broadcast
  scalar can differ in the last bit from eager division, and centred RMSprop's first step (a variance
  computed by cancellation) amplifies that bit.
  """
  return x / correction.astype(jnp.asarray(x).dtype)


def _zero_count():
  return jnp.zeros([], jnp.int32)


def bias_correction(moment: Any, decay: jax.typing.ArrayLike, count: jax.typing.ArrayLike) -> Any:
  """Divides every leaf of `moment` by 1 - decay**count (Adam's bias correction)."""
  correction = _numerics.bias_correction_factor(decay, count)
  return _tree.map_updates(lambda t: _debias(t, jnp.asarray(correction)), moment)


def update_moment(updates: Any, moments: Any, decay: jax.typing.ArrayLike, order: int) -> Any:
  """(1 - decay) * g**order + decay * m for every leaf; None updates give None."""
  new, _ = _tree.leafwise(lambda g, m: ((1 - decay) * g ** order + decay * m,), updates, (),
                          (moments,), extra_names=("moments",), check_shapes=False)
  return new


def update_infinity_moment(updates: Any, moments: Any, decay: jax.typing.ArrayLike,
                           eps: jax.typing.ArrayLike) -> Any:
  """max(|g| + eps, decay * m) for every leaf (Adamax's infinity norm); None updates give None."""
  new, _ = _tree.leafwise(lambda g, m: (jnp.maximum(jnp.abs(g) + eps, decay * m),), updates, (),
                          (moments,), extra_names=("moments",), check_shapes=False)
  return new


def _keep_dtype(new, old):
  return new.astype(old.dtype) if new.dtype != old.dtype else new


def _nu_dtype_arg(fn: str, nu_dtype: Any | None) -> Any | None:
  """The canonical `nu_dtype` (None stays None); anything but a real floating dtype is an error.

  `nu_dtype` is a gradxform addition (optax has only `mu_dtype`): the dtype the second moment is stored in.
  """
  if nu_dtype is None:
    return None
  try:
    dtype = _tree.canonical_dtype(nu_dtype)
  except TypeError as err:
    raise _errors.HyperparameterTypeError(
        f"{fn}: argument `nu_dtype` must be a floating dtype or None, got {nu_dtype!r}") from err
  if not jnp.issubdtype(dtype, jnp.floating):
    raise _errors.HyperparameterTypeError(f"{fn}: argument `nu_dtype` must be a floating dtype or None, got {dtype}")
  return dtype


def _widened(g, nu):
  """`g` (when real) and `nu` cast up to the wider of their precisions; used only when `nu_dtype` is given.

  A float32 nu is then accumulated from g^2 computed in float32 for bfloat16 gradients, and a bfloat16 nu is
  updated at the gradient's precision and rounded only when stored.
  """
  with jax.numpy_dtype_promotion("standard"):
    wide = jnp.promote_types(jnp.finfo(g.dtype).dtype, nu.dtype)  # finfo(complex64).dtype is float32
  if not jnp.iscomplexobj(g) and g.dtype != wide:
    g = g.astype(wide)
  return g, (nu if nu.dtype == wide else nu.astype(wide))


# ----------------------------------------------------------------------------------------------
# trace and ema.


def _trace_init(params, *, accumulator_dtype, **_):
  return TraceState(trace=_tree.zeros_like(params, dtype=accumulator_dtype))


def _trace_update(updates, state, params=None, *, decay, nesterov, accumulator_dtype, **extra_args):
  del params, extra_args, accumulator_dtype
  _errors.expect_state(state, (TraceState,), "trace")

  leaf = functools.partial(trace_leaf, decay=decay, nesterov=nesterov)
  updates, (new_trace,) = _tree.leafwise(leaf, updates, (state.trace,), state_names=("state.trace",))
  return updates, TraceState(trace=new_trace)


def trace_leaf(g, t, *, decay, nesterov, copies=None):
  """Momentum on one leaf: (update, new_trace); `copies`: (g for Nesterov's term,), a separate copy of g."""
  new_t = _numerics.add(g, _numerics.mul(decay, t))
  g_again = g if copies is None else copies[0]
  out = _numerics.add(g_again, _numerics.mul(decay, new_t)) if nesterov else new_t
  return out, _keep_dtype(new_t, t)


def trace(decay: jax.typing.ArrayLike, nesterov: bool = False,
          accumulator_dtype: Optional[Any] = None) -> _base.GradientTransformationExtraArgs:
  """Momentum: t <- g + decay * t; returns t (or g + decay * t with Nesterov).

  Args:
    decay: momentum coefficient, in [0, 1).
    nesterov: use Nesterov's accelerated form (Sutskever et al., 2013).
    accumulator_dtype: dtype of the momentum buffer; None keeps the params' dtype.
  """
  _errors.check_decay("trace", "decay", decay)
  return _base.transformation("trace", _trace_init, _trace_update, decay=decay, nesterov=nesterov,
                              accumulator_dtype=_tree.canonical_dtype(accumulator_dtype))


def _ema_init(params, *, accumulator_dtype, **_):
  return EmaState(count=_zero_count(), ema=_tree.zeros_like(params, dtype=accumulator_dtype))


def _ema_update(updates, state, params=None, *, decay, debias, accumulator_dtype, **extra_args):
  del params, extra_args, accumulator_dtype
  _errors.expect_state(state, (EmaState,), "ema")
  count = _numerics.safe_increment(state.count)
  correction = _numerics.bias_correction_factor(decay, count)

  def leaf(g, e):
    new_e = _moving_average(g, e, decay)
    return (_debias(new_e, correction) if debias else new_e), _keep_dtype(new_e, e)

  updates, (new_ema,) = _tree.leafwise(leaf, updates, (state.ema,), state_names=("state.ema",))
  return updates, EmaState(count=count, ema=new_ema)


def ema(decay: jax.typing.ArrayLike, debias: bool = True,
        accumulator_dtype: Optional[Any] = None) -> _base.GradientTransformationExtraArgs:
  """Exponential moving average of the updates: e <- (1 - decay) * g + decay * e, optionally debiased.

  Args:
    decay: averaging coefficient, in [0, 1).
    debias: divide by 1 - decay**t (as Adam does) so early averages are not biased to zero.
    accumulator_dtype: dtype of the average; None keeps the params' dtype.
  """
  _errors.check_decay("ema", "decay", decay)
  return _base.transformation("ema", _ema_init, _ema_update, decay=decay, debias=debias,
                              accumulator_dtype=_tree.canonical_dtype(accumulator_dtype))


# ----------------------------------------------------------------------------------------------
# Adam and its variants.


def _adam_init(params, *, mu_dtype=None, nu_dtype=None, **_):
  return ScaleByAdamState(count=_zero_count(), mu=_tree.zeros_like(params, dtype=mu_dtype),
                          nu=_tree.zeros_like(params, dtype=nu_dtype))


def _adam_moments(g, mu, nu, b1, b2, widen=False, g_for_nu=None):
  """One step of Adam's first and second moments, in the working dtype (`widen`: see `_widened`).

  `g_for_nu` is the same gradient computed separately (the fused path passes one copy per use, so that
  XLA recomputes a cheap producer in each consumer instead of writing it to memory).
  """
  new_mu = _moving_average(g, mu, b1)
  g = g if g_for_nu is None else g_for_nu
  if widen:
    g, nu = _widened(g, nu)
  return new_mu, _moving_average(_square(g), nu, b2)


def _adam_corrections(b1, b2, count, nesterov):
  """The step's scalar bias corrections (1 - b1^t, 1 - b2^t, and 1 - b1^(t+1) for Nesterov)."""
  bc1, bc2 = _numerics.bias_correction_factor(b1, count), _numerics.bias_correction_factor(b2, count)
  bc1_next = _numerics.bias_correction_factor(b1, _numerics.safe_increment(count)) if nesterov else None
  return bc1, bc2, bc1_next


def _adam_hats(g, mu, nu, b1, b2, corrections, nesterov, widen=False, *, copies=None):
  """New moments and their bias-corrected values: (mu_hat, nu_hat, new_mu, new_nu).

  With Nesterov, mu_hat = b1 * mu / (1 - b1^(t+1)) + (1 - b1) * g / (1 - b1^t) (Dozat, 2016).
  `copies`: optional (g for nu, g for Nesterov's term), separately computed copies of `g`.
  """
  bc1, bc2, bc1_next = corrections
  g_for_nu, g_for_nesterov = copies if copies is not None else (g, g)
  new_mu, new_nu = _adam_moments(g, mu, nu, b1, b2, widen, g_for_nu)
  if nesterov:
    mu_hat = _numerics.add(_numerics.mul(b1, _debias(new_mu, bc1_next)),
                           _numerics.mul(1 - b1, _debias(g_for_nesterov, bc1)))
  else:
    mu_hat = _debias(new_mu, bc1)
  return mu_hat, _debias(new_nu, bc2), new_mu, new_nu


def _adam_update(updates, state, params=None, *, b1, b2, eps, eps_root, mu_dtype, nesterov, nu_dtype=None,
                 **extra_args):
  del params, extra_args, mu_dtype
  _errors.expect_state(state, (ScaleByAdamState,), "scale_by_adam")
  count = _numerics.safe_increment(state.count)
  corrections = _adam_corrections(b1, b2, count, nesterov)
  leaf = functools.partial(adam_leaf, b1=b1, b2=b2, eps=eps, eps_root=eps_root, corrections=corrections,
                           nesterov=nesterov, widen=nu_dtype is not None)
  updates, (mu, nu) = _tree.leafwise(leaf, updates, (state.mu, state.nu), state_names=("state.mu", "state.nu"))
  return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)


def adam_leaf(g, mu, nu, *, b1, b2, eps, eps_root, corrections, nesterov, widen, copies=None):
  """Adam on one leaf: (step, new_mu, new_nu); `corrections` from `_adam_corrections`, `copies` see `_adam_hats`."""
  mu_hat, nu_hat, new_mu, new_nu = _adam_hats(g, mu, nu, b1, b2, corrections, nesterov, widen, copies=copies)
  step = _numerics.div(mu_hat, jnp.sqrt(nu_hat + eps_root) + eps)
  if widen:  # divided at nu's precision, returned in the dtype the default nu would give
    step = _keep_dtype(step, mu_hat)
  return step, _keep_dtype(new_mu, mu), _keep_dtype(new_nu, nu)


def _check_adam_args(fn, b1, b2, eps, eps_root):
  _errors.check_decay(fn, "b1", b1)
  _errors.check_decay(fn, "b2", b2)
  _errors.check_nonnegative(fn, "eps", eps)
  _errors.check_nonnegative(fn, "eps_root", eps_root)


def scale_by_adam(b1: jax.typing.ArrayLike = 0.9, b2: jax.typing.ArrayLike = 0.999,
                  eps: jax.typing.ArrayLike = 1e-8, eps_root: jax.typing.ArrayLike = 0.0,
                  mu_dtype: Optional[jax.typing.DTypeLike] = None, *,
                  nesterov: bool = False,
                  nu_dtype: jax.typing.DTypeLike | None = None) -> _base.GradientTransformationExtraArgs:
  """Adam's scaling: m_hat / (sqrt(v_hat + eps_root) + eps) (Kingma & Ba, 2014).

  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  m_hat = m / (1 - b1^t);  v_hat = v / (1 - b2^t).

  Args:
    b1, b2: decay rates of the first and second moments, in [0, 1).
    eps: added to the denominator outside the square root.
    eps_root: added inside the square root (keeps meta-gradients finite).
    mu_dtype: dtype of the first moment; None keeps the params' dtype.
    nesterov: Nesterov momentum on the first moment (NAdam, Dozat 2016).
    nu_dtype: gradxform addition: dtype the second moment is stored in (e.g. float32 for bfloat16 params);
      None keeps the params' dtype, as optax does. When given, g^2 and the division are computed at the
      wider of nu's and the gradient's precision, and the update keeps the dtype it has with None.
  """
  _check_adam_args("scale_by_adam", b1, b2, eps, eps_root)
  return _base.transformation("scale_by_adam", _adam_init, _adam_update, b1=b1, b2=b2, eps=eps,
                              eps_root=eps_root, mu_dtype=_tree.canonical_dtype(mu_dtype), nesterov=nesterov,
                              nu_dtype=_nu_dtype_arg("scale_by_adam", nu_dtype))


def _amsgrad_init(params, *, mu_dtype, nu_dtype=None, **_):
  return ScaleByAmsgradState(count=_zero_count(), mu=_tree.zeros_like(params, dtype=mu_dtype),
                             nu=_tree.zeros_like(params, dtype=nu_dtype),
                             nu_max=_tree.zeros_like(params, dtype=nu_dtype))


def _amsgrad_update(updates, state, params=None, *, b1, b2, eps, eps_root, mu_dtype, bias_correction_mu,
                    bias_correction_nu, nu_dtype=None, **extra_args):
  del params, extra_args, mu_dtype
  _errors.expect_state(state, (ScaleByAmsgradState,), "scale_by_amsgrad")
  count = _numerics.safe_increment(state.count)
  bc1, bc2 = _numerics.bias_correction_factor(b1, count), _numerics.bias_correction_factor(b2, count)
  widen = nu_dtype is not None

  def leaf(g, mu, nu, nu_max):
    new_mu, new_nu = _adam_moments(g, mu, nu, b1, b2, widen)
    mu_hat = _debias(new_mu, bc1) if bias_correction_mu else new_mu
    nu_eff = _debias(new_nu, bc2) if bias_correction_nu else new_nu
    new_max = _numerics.maximum(nu_max, nu_eff)
    step = _numerics.div(mu_hat, jnp.sqrt(new_max + eps_root) + eps)
    if widen:
      step = _keep_dtype(step, mu_hat)
    return step, _keep_dtype(new_mu, mu), _keep_dtype(new_nu, nu), _keep_dtype(new_max, nu_max)

  updates, (mu, nu, nu_max) = _tree.leafwise(
      leaf, updates, (state.mu, state.nu, state.nu_max), state_names=("state.mu", "state.nu", "state.nu_max"))
  return updates, ScaleByAmsgradState(count=count, mu=mu, nu=nu, nu_max=nu_max)


def scale_by_amsgrad(b1: jax.typing.ArrayLike = 0.9, b2: jax.typing.ArrayLike = 0.999,
                     eps: jax.typing.ArrayLike = 1e-8, eps_root: jax.typing.ArrayLike = 0.0,
                     mu_dtype: Optional[jax.typing.DTypeLike] = None, bias_correction_mu: bool = True,
                     bias_correction_nu: bool = True, *,
                     nu_dtype: jax.typing.DTypeLike | None = None) -> _base.GradientTransformationExtraArgs:
  """AMSGrad: Adam with the running maximum of the (debiased) second moment (Reddi et al., 2018).

  Args:
    b1, b2, eps, eps_root, mu_dtype: as in `scale_by_adam`.
    bias_correction_mu, bias_correction_nu: debias the first / second moment.
    nu_dtype: gradxform addition: dtype of `nu` and `nu_max`, as in `scale_by_adam` (None: the params').
  """
  _check_adam_args("scale_by_amsgrad", b1, b2, eps, eps_root)
  return _base.transformation(
      "scale_by_amsgrad", _amsgrad_init, _amsgrad_update, b1=b1, b2=b2, eps=eps, eps_root=eps_root,
      mu_dtype=_tree.canonical_dtype(mu_dtype), bias_correction_mu=bias_correction_mu,
      bias_correction_nu=bias_correction_nu, nu_dtype=_nu_dtype_arg("scale_by_amsgrad", nu_dtype))


def _adamax_update(updates, state, params=None, *, b1, b2, eps, **extra_args):
  del params, extra_args
  _errors.expect_state(state, (ScaleByAdamState,), "scale_by_adamax")
  count = _numerics.safe_increment(state.count)
  bc1 = _numerics.bias_correction_factor(b1, count)

  def leaf(g, mu, nu):
    new_mu = _moving_average(g, mu, b1)
    new_nu = _numerics.maximum(jnp.abs(g) + eps, _numerics.mul(b2, nu))
    return _numerics.div(_debias(new_mu, bc1), new_nu), _keep_dtype(new_mu, mu), _keep_dtype(new_nu, nu)

  updates, (mu, nu) = _tree.leafwise(leaf, updates, (state.mu, state.nu), state_names=("state.mu", "state.nu"))
  return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)


def scale_by_adamax(b1: jax.typing.ArrayLike = 0.9, b2: jax.typing.ArrayLike = 0.999,
                    eps: jax.typing.ArrayLike = 1e-8) -> _base.GradientTransformationExtraArgs:
  """Adamax: m_hat / u with u <- max(|g| + eps, b2 u), the infinity-norm Adam (Kingma & Ba, 2014, sec. 7).

  Args:
    b1: decay of the first moment, in [0, 1).
    b2: decay of the infinity norm, in [0, 1).
    eps: added to |g| so the denominator is never zero.
  """
  _check_adam_args("scale_by_adamax", b1, b2, eps, 0.0)
  return _base.transformation("scale_by_adamax", _adam_init, _adamax_update, b1=b1, b2=b2, eps=eps)


def _radam_update(updates, state, params=None, *, b1, b2, eps, eps_root, threshold, nesterov, **extra_args):
  del params, extra_args
  _errors.expect_state(state, (ScaleByAdamState,), "scale_by_radam")
  rho_inf = 2.0 / (1.0 - b2) - 1.0
  count = _numerics.safe_increment(state.count)
  b2t = _numerics.decay_power(b2, count)
  rho = rho_inf - (2 * count).astype(b2t.dtype) * b2t / (1 - b2t)
  # The variance rectification factor r_t of Liu et al. (2020), eq. (13); used only where rho >= threshold.
  rect = jnp.sqrt((rho - 4.0) * (rho - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho))
  use_rect = rho >= threshold
  corrections = _adam_corrections(b1, b2, count, nesterov)

  def leaf(g, mu, nu):
    mu_hat, nu_hat, new_mu, new_nu = _adam_hats(g, mu, nu, b1, b2, corrections, nesterov)
    rectified = _numerics.div(rect.astype(mu_hat.dtype) * mu_hat, jnp.sqrt(nu_hat + eps_root) + eps)
    rectified, mu_hat = _numerics.promote(rectified, mu_hat)
    return jnp.where(use_rect, rectified, mu_hat), _keep_dtype(new_mu, mu), _keep_dtype(new_nu, nu)

  updates, (mu, nu) = _tree.leafwise(leaf, updates, (state.mu, state.nu), state_names=("state.mu", "state.nu"))
  return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)


def scale_by_radam(b1: jax.typing.ArrayLike = 0.9, b2: jax.typing.ArrayLike = 0.999,
                   eps: jax.typing.ArrayLike = 1e-8, eps_root: jax.typing.ArrayLike = 0.0,
                   threshold: jax.typing.ArrayLike = 5.0, *,
                   nesterov: bool = False) -> _base.GradientTransformationExtraArgs:
  """Rectified Adam: Adam with the variance rectification r_t once rho_t >= threshold (Liu et al., 2020).

  Before that (the first few steps) the update is the bias-corrected first moment alone.

  Args:
    b1, b2, eps, eps_root: as in `scale_by_adam`.
    threshold: rho_t at which the adaptive term switches on (5 in the paper).
    nesterov: Nesterov momentum on the first moment.
  """
  _check_adam_args("scale_by_radam", b1, b2, eps, eps_root)
  return _base.transformation("scale_by_radam", _adam_init, _radam_update, b1=b1, b2=b2, eps=eps,
                              eps_root=eps_root, threshold=threshold, nesterov=nesterov)
