"""Muon: momentum orthogonalised by a Newton-Schulz iteration, with an AdamW fallback.

Muon (Jordan, 2024, github.com/KellerJordan/modded-nanogpt) keeps a momentum of the gradient and
replaces each matrix-shaped momentum M = U S V^T by (approximately) U V^T, computed with a few
polynomial Newton-Schulz steps X <- a X + (b A + c A^2) X, A = X X^H. Leaves that are not matrices
(or that `muon_weight_dimension_numbers` marks None) are trained by AdamW instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree
from gradxform._alias import adamw
from gradxform._combine import MaskedNode, chain
from gradxform._decay import add_decayed_weights
from gradxform._moments import bias_correction
from gradxform._partition import partition
from gradxform._scale import scale_by_learning_rate

__all__ = ["MuonDimensionNumbers", "MuonState", "muon", "scale_by_muon"]

_DEFAULT_NS_COEFFS = (3.4445, -4.7750, 2.0315)
# Per-step coefficients from the Dion paper (Ahn et al., 2025), one row per iteration.
_DION_NS_COEFFS = [(4.0848, -6.8946, 2.9270), (3.9505, -6.3029, 2.6377), (3.7418, -5.5913, 2.3037),
                   (2.8769, -3.1427, 1.2046), (2.8366, -3.0525, 1.2012)]
_NS_PRESETS = {"standard": _DEFAULT_NS_COEFFS, "dion": _DION_NS_COEFFS}
_PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")


class MuonDimensionNumbers(NamedTuple):
  """Which axes of a weight are its matrix's reduction (input) and output axes; the rest are batch axes.

  The default, (0, 1), is a plain `x @ W` matrix. Batch axes are orthogonalised independently.
  """
  reduction_axis: Sequence[int] | int = 0
  output_axis: Sequence[int] | int = 1


class MuonState(NamedTuple):
  """State of `scale_by_muon`: step count, momentum, and the Newton-Schulz coefficients ((3,) or (n, 3))."""
  count: jax.typing.ArrayLike
  mu: _base.Updates
  ns_coeffs: jax.typing.ArrayLike


def _is_dim_nums(x: Any) -> bool:
  return isinstance(x, MuonDimensionNumbers)


def _is_masked(x: Any) -> bool:
  return isinstance(x, MaskedNode) or type(x).__name__ == "MaskedNode"


# ----------------------------------------------------------------------------------------------
# Reshaping a weight to a batch of matrices.


def _axes(x, dim_nums: MuonDimensionNumbers) -> tuple[tuple[int, ...], tuple[int, ...]]:
  def norm(axes):
    return tuple(a % x.ndim for a in ((axes,) if isinstance(axes, int) else axes))
  return norm(dim_nums.reduction_axis), norm(dim_nums.output_axis)


def _fans(x, dim_nums) -> tuple[int, int]:
  reduction, output = _axes(x, dim_nums)
  return math.prod(x.shape[a] for a in reduction), math.prod(x.shape[a] for a in output)


def _as_matrices(x, dim_nums):
  """(to_batch, from_batch): x <-> an array of shape (batch, fan_in, fan_out)."""
  if x.ndim < 2:
    raise _errors.HyperparameterError(
        f"orthogonalised leaves need rank >= 2, got shape {tuple(x.shape)}; give it no dimension numbers "
        "(None) so that it is trained by AdamW")
  reduction, output = _axes(x, dim_nums)
  if set(reduction) & set(output):
    raise _errors.HyperparameterError(
        f"reduction axes {reduction} and output axes {output} overlap for shape {tuple(x.shape)}")
  batch = tuple(a for a in range(x.ndim) if a not in reduction and a not in output)
  order = batch + reduction + output
  inverse = tuple(order.index(a) for a in range(x.ndim))
  moved_shape = tuple(x.shape[a] for a in order)
  flat = tuple(math.prod(x.shape[a] for a in group) for group in (batch, reduction, output))
  return (lambda y: y.transpose(order).reshape(flat)), (lambda y: y.reshape(moved_shape).transpose(inverse))


# ----------------------------------------------------------------------------------------------
# Newton-Schulz.


def _ns_step(x, c):
  gram = x @ x.T.conj()
  poly = c[1] * gram + c[2] * gram @ gram
  return c[0] * x + poly @ x


def _ns_step_aol(x, c, eps=1e-8):
  # Almost-orthogonal-layer rescaling (Boissin et al., 2025): row scales from |X X^H| row sums,
  # folded into the first iteration so the Gram matrix is computed once.
  gram = x @ x.T.conj()
  scale = jnp.expand_dims(jax.lax.rsqrt(jnp.clip(jnp.abs(gram).sum(axis=-1), min=eps)), -1)
  x, gram = x * scale, gram * scale * scale.transpose(-1, -2)
  poly = c[1] * gram + c[2] * gram @ gram
  return c[0] * x + poly @ x


def _ns_step_schatten(x, c, eps=1e-8):
  # Schatten-4 normalisation (Grishina et al., 2025): divide by |X X^T|_F^(1/2) in the first iteration.
  gram = x @ x.T
  scale = jnp.expand_dims(jax.lax.rsqrt(jnp.clip(jnp.linalg.norm(gram, ord="fro", axis=(-2, -1)), min=eps)),
                          (0, -1))
  x, gram = x * scale, gram * scale ** 2
  poly = c[1] * gram + c[2] * gram @ gram
  return c[0] * x + poly @ x


def _ns_iteration(preconditioning):
  first = {"aol": _ns_step_aol, "schatten": _ns_step_schatten}.get(preconditioning)
  if first is None:
    return lambda i, x, c: _ns_step(x, c)
  return lambda i, x, c: jax.lax.cond(i == 0, lambda y: first(y, c), lambda y: _ns_step(y, c), x)


def _orthogonalize_matrix(x, *, coeffs, ns_steps, preconditioning, eps):
  transposed = x.shape[0] > x.shape[1]  # iterate on the wide orientation: the Gram matrix is smaller
  if transposed:
    x = x.T
  if preconditioning == "frobenius":
    x = x / (jnp.linalg.norm(x, ord="fro") + eps)
  elif preconditioning == "spectral":
    x = x / (jnp.linalg.norm(x, ord=2) + eps)
  step = _ns_iteration(preconditioning)
  coeffs = coeffs.astype(x.dtype)
  if coeffs.ndim == 1:
    # Unrolled so that vmap over batch axes composes into straight-line code.
    x = jax.lax.fori_loop(0, ns_steps, lambda i, y: step(i, y, coeffs), x, unroll=True)
  else:
    def body(carry, c):
      i, y = carry
      return (i + 1, step(i, y, c)), None
    (_, x), _ = jax.lax.scan(body, (jnp.asarray(0, jnp.int32), x), coeffs)
  return x.T if transposed else x


def _orthogonalize_batch(batch, coeffs, eps, *, ns_steps, preconditioning):
  one = lambda m: _orthogonalize_matrix(m, coeffs=coeffs, ns_steps=ns_steps, preconditioning=preconditioning,
                                        eps=eps)
  return jax.vmap(one)(batch)


# Compiled once per shape and setting: eager updates would otherwise retrace the loop at every call.
_orthogonalize_batch_jit = jax.jit(_orthogonalize_batch, static_argnames=("ns_steps", "preconditioning"))


def _orthogonalize(x, dim_nums, *, coeffs, ns_steps, preconditioning, eps):
  to_batch, from_batch = _as_matrices(x, dim_nums)
  run = _orthogonalize_batch_jit if isinstance(ns_steps, int) else _orthogonalize_batch
  return from_batch(run(to_batch(x), coeffs, eps, ns_steps=ns_steps, preconditioning=preconditioning))


def _resolve_dim_nums(weight_dimension_numbers, updates):
  if weight_dimension_numbers is None:
    # Every leaf is a plain matrix.
    return jax.tree.map(lambda _: MuonDimensionNumbers(), updates)
  if callable(weight_dimension_numbers) and not _is_dim_nums(weight_dimension_numbers):
    return weight_dimension_numbers(updates)
  return weight_dimension_numbers


# ----------------------------------------------------------------------------------------------
# scale_by_muon.


def _coeffs_array(ns_coeffs, ns_steps, fn):
  coeffs = jnp.asarray(ns_coeffs)
  if coeffs.ndim > 2 or coeffs.shape[-1] != 3:
    raise _errors.HyperparameterError(f"{fn}: argument `ns_coeffs` must have shape (3,) or (n, 3), "
                                      f"got {coeffs.shape}")
  if coeffs.ndim == 2:
    steps = _errors.concrete_number(ns_steps)
    if steps is not None and not coeffs.shape[0] <= steps:
      raise _errors.HyperparameterError(
          f"{fn}: argument `ns_steps` ({ns_steps}) is smaller than the {coeffs.shape[0]} rows of `ns_coeffs`")
    coeffs = coeffs[-ns_steps:]
  return coeffs


def _muon_init(params, *, ns_coeffs, ns_steps, mu_dtype, **_):
  return MuonState(count=jnp.zeros([], jnp.int32), mu=_tree.zeros_like(params, dtype=mu_dtype),
                   ns_coeffs=_coeffs_array(ns_coeffs, ns_steps, "scale_by_muon"))


def _muon_update(updates, state, params=None, *, ns_coeffs, ns_steps, beta, eps, mu_dtype, nesterov, adaptive,
                 preconditioning, weight_dimension_numbers, **extra_args):
  del params, ns_coeffs, extra_args
  _errors.expect_state(state, (MuonState,), "scale_by_muon")
  dim_nums = _resolve_dim_nums(weight_dimension_numbers, updates)
  mu, _ = _tree.leafwise(lambda g, m: (_numerics.add(_numerics.mul(1 - beta, g), _numerics.mul(beta, m)),),
                         updates, extras=(state.mu,), extra_names=("state.mu",))
  count_inc = _numerics.safe_increment(state.count)
  if nesterov:
    # Nesterov look-ahead: the next step's debiased momentum if the gradient stayed the same.
    ahead = bias_correction(mu, beta, _numerics.safe_increment(count_inc))
    now = bias_correction(updates, beta, count_inc)
    mu_hat = jax.tree.map(lambda m, g: _numerics.add(_numerics.mul(beta, m), _numerics.mul(1 - beta, g)),
                          ahead, now)
  else:
    mu_hat = bias_correction(mu, beta, count_inc)
  new_updates = jax.tree.map(
      lambda x, d: _orthogonalize(x, d, coeffs=state.ns_coeffs, ns_steps=ns_steps,
                                  preconditioning=preconditioning, eps=eps),
      mu_hat, dim_nums, is_leaf=_is_dim_nums)
  if adaptive:
    # Scale by the dual norm <M, O> (Bernstein & Newhouse, 2024).
    new_updates = jax.tree.map(lambda m, o: _numerics.mul(jnp.sum(_numerics.mul(m.conj(), o)), o),
                               mu_hat, new_updates)
  return new_updates, MuonState(count=count_inc, mu=_tree.cast(mu, mu_dtype), ns_coeffs=state.ns_coeffs)


def _check_muon_args(fn, ns_coeffs, ns_steps, beta, eps, preconditioning):
  _coeffs_array(ns_coeffs, ns_steps, fn)
  _errors.check_nonnegative(fn, "ns_steps", ns_steps)
  _errors.check_decay(fn, "beta", beta)
  _errors.check_nonnegative(fn, "eps", eps)
  if preconditioning not in _PRECONDITIONINGS:
    raise _errors.HyperparameterError(
        f"{fn}: argument `preconditioning` must be one of {_PRECONDITIONINGS}, got {preconditioning!r}")


def scale_by_muon(
    ns_coeffs: Union[
        tuple[jax.typing.ArrayLike, jax.typing.ArrayLike, jax.typing.ArrayLike],
        tuple[tuple[jax.typing.ArrayLike, jax.typing.ArrayLike, jax.typing.ArrayLike], ...],
    ] = _DEFAULT_NS_COEFFS,
    ns_steps: jax.typing.ArrayLike = 5,
    beta: jax.typing.ArrayLike = 0.95,
    eps: jax.typing.ArrayLike = 1e-8,
    mu_dtype: Optional[jax.typing.DTypeLike] = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: Literal["frobenius", "spectral", "aol", "schatten"] = "frobenius",
    weight_dimension_numbers: Any = None,
) -> _base.GradientTransformationExtraArgs:
  r"""Orthogonalises the (Nesterov) momentum of each matrix with Newton-Schulz steps (Muon's core).

  M_t = beta M_{t-1} + (1 - beta) g_t, debiased; the update is NS(M_hat) ~ U V^T for M_hat = U S V^T.

  Args:
    ns_coeffs: the (a, b, c) of X <- a X + (b A + c A^2) X, or one triple per iteration.
    ns_steps: number of iterations (with per-iteration triples: at least their number; the last
      `ns_steps` rows are used).
    beta: momentum decay.
    eps: added to the normalising norm.
    mu_dtype: dtype of the momentum (None: the params' dtype).
    nesterov: use the Nesterov look-ahead momentum.
    adaptive: multiply by <M_hat, NS(M_hat)> (Bernstein et al., 2024, arXiv:2409.20325).
    preconditioning: normalisation before the iteration: "frobenius", "spectral" (2-norm), "aol"
      (Boissin et al., 2025) or "schatten" (Schatten-4, Grishina et al., 2025).
    weight_dimension_numbers: a MuonDimensionNumbers tree like the params (or a function of the
      updates returning one) saying how to see each leaf as a batch of matrices; None: all leaves
      are plain matrices.

  Returns:
    A gradient transformation.
  """
  _check_muon_args("scale_by_muon", ns_coeffs, ns_steps, beta, eps, preconditioning)
  if isinstance(ns_coeffs, list):
    ns_coeffs = tuple(tuple(row) if isinstance(row, list) else row for row in ns_coeffs)
  return _base.transformation(
      "scale_by_muon", _muon_init, _muon_update, ns_coeffs=ns_coeffs, ns_steps=ns_steps, beta=beta, eps=eps,
      mu_dtype=_tree.canonical_dtype(mu_dtype), nesterov=nesterov, adaptive=adaptive,
      preconditioning=preconditioning, weight_dimension_numbers=weight_dimension_numbers)


# ----------------------------------------------------------------------------------------------
# Shape scaling and the muon alias.


def _shape_scale_update(updates, state, params=None, *, weight_dimension_numbers, consistent_rms, **extra_args):
  del params, extra_args
  dim_nums = _resolve_dim_nums(weight_dimension_numbers, updates)

  def scale(u, d):
    fan_in, fan_out = _fans(u, d)
    if consistent_rms is None:  # width transfer (Jordan's Muon): sqrt(max(1, fan_out / fan_in))
      factor = jnp.sqrt(jnp.maximum(1, fan_out / fan_in))
    else:  # consistent RMS (Liu et al., 2025, arXiv:2502.16982)
      factor = _numerics.mul(jnp.sqrt(jnp.maximum(fan_in, fan_out)), consistent_rms)
    return _numerics.mul(factor, u)

  return jax.tree.map(scale, updates, dim_nums, is_leaf=_is_dim_nums), state


def _scale_by_shape(weight_dimension_numbers, consistent_rms):
  return _base.transformation("muon", _base.init_empty_state, _shape_scale_update,
                              weight_dimension_numbers=weight_dimension_numbers, consistent_rms=consistent_rms)


def _user_dim_nums(spec, params):
  return spec(params) if callable(spec) and not _is_dim_nums(spec) else spec


def _default_labels(params):
  return jax.tree.map(lambda x: "muon" if x.ndim == 2 else "adam", params)


def _spec_labels(params, *, spec):
  def fill(dim_num, sub):
    return jax.tree.map(lambda _: "muon" if dim_num is not None else "adam", sub)
  return jax.tree.map(fill, _user_dim_nums(spec, params), params,
                      is_leaf=lambda x: x is None or _is_dim_nums(x))


class _MuonDimNums:
  """The dimension numbers seen by the muon branch: the user's spec on muon leaves, MaskedNode elsewhere."""

  def __init__(self, spec, labels):
    self.spec, self.labels = spec, labels

  def __call__(self, params):
    mask = jax.tree.map(lambda label: label == "muon", self.labels(params))
    fill = lambda d, sub: jax.tree.map(lambda m: d if m else MaskedNode(), sub)
    return jax.tree.map(fill, _user_dim_nums(self.spec, params), mask,
                        is_leaf=lambda x: x is None or _is_dim_nums(x) or _is_masked(x))

  def __eq__(self, other):
    return isinstance(other, _MuonDimNums) and (self.spec, self.labels) == (other.spec, other.labels)

  def __hash__(self):
    return hash(_base.Bound(_MuonDimNums, None, spec=self.spec, labels=self.labels))


def muon(
    learning_rate: _base.ScalarOrSchedule,
    ns_coeffs: Union[
        tuple[jax.typing.ArrayLike, jax.typing.ArrayLike, jax.typing.ArrayLike],
        tuple[tuple[jax.typing.ArrayLike, jax.typing.ArrayLike, jax.typing.ArrayLike], ...],
        str,
    ] = _DEFAULT_NS_COEFFS,
    ns_steps: jax.typing.ArrayLike = 5,
    beta: jax.typing.ArrayLike = 0.95,
    eps: jax.typing.ArrayLike = 1e-8,
    weight_decay: jax.typing.ArrayLike = 0.0,
    weight_decay_mask: Optional[Union[Any, Callable[[_base.Params], Any]]] = None,
    mu_dtype: Optional[jax.typing.DTypeLike] = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: Literal["frobenius", "spectral", "aol", "schatten"] = "frobenius",
    adam_b1: jax.typing.ArrayLike = 0.9,
    adam_b2: jax.typing.ArrayLike = 0.999,
    adam_eps_root: jax.typing.ArrayLike = 0.0,
    adam_weight_decay: jax.typing.ArrayLike = 0.0,
    adam_learning_rate: _base.ScalarOrSchedule | None = None,
    muon_weight_dimension_numbers: Any = None,
    consistent_rms: jax.typing.ArrayLike | None = None,
) -> _base.GradientTransformationExtraArgs:
  r"""Muon: Momentum Orthogonalized by Newton-Schulz, with AdamW on the other leaves (Jordan, 2024).

  Matrix leaves: orthogonalised momentum (`scale_by_muon`), times sqrt(max(1, fan_out/fan_in)) (or
  sqrt(max(fan_in, fan_out)) * consistent_rms), plus decoupled weight decay, times -lr. Other leaves:
  AdamW with the `adam_*` arguments (and Muon's eps, mu_dtype and nesterov).

  Args:
    learning_rate: step size, a number or a schedule.
    ns_coeffs: Newton-Schulz coefficients: a triple, one triple per step, or a preset name
      ("standard" or "dion").
    ns_steps: number of Newton-Schulz steps.
    beta: momentum decay.
    eps: Newton-Schulz normalisation epsilon, also AdamW's eps.
    weight_decay: decoupled weight decay on the Muon leaves (multiplied by the learning rate).
    weight_decay_mask: which Muon leaves get weight decay (tree of booleans or a function).
    mu_dtype: momentum dtype for both branches.
    nesterov: Nesterov momentum in both branches.
    adaptive: scale the orthogonalised update by <M_hat, NS(M_hat)>.
    preconditioning: "frobenius", "spectral", "aol" or "schatten" (see `scale_by_muon`).
    adam_b1, adam_b2, adam_eps_root, adam_weight_decay: AdamW's arguments.
    adam_learning_rate: AdamW's learning rate (None: `learning_rate`).
    muon_weight_dimension_numbers: a tree of MuonDimensionNumbers (None for AdamW leaves), or a
      function of the params returning one; None: Muon on every 2-D leaf.
    consistent_rms: if given, use consistent-RMS scaling with this target RMS (0.2 matches AdamW).

  Returns:
    A gradient transformation (a partition into "muon" and "adam" groups).
  """
  if isinstance(ns_coeffs, str):
    if ns_coeffs not in _NS_PRESETS:
      raise _errors.HyperparameterError(
          f"muon: argument `ns_coeffs` must be one of the presets {tuple(_NS_PRESETS)} or coefficients, "
          f"got {ns_coeffs!r}")
    ns_coeffs = _NS_PRESETS[ns_coeffs]
  _check_muon_args("muon", ns_coeffs, ns_steps, beta, eps, preconditioning)
  _errors.check_learning_rate("muon", learning_rate)
  _errors.check_learning_rate("muon", adam_learning_rate, "adam_learning_rate", allow_none=True)
  _errors.check_number("muon", "weight_decay", weight_decay, low=0.0, allow_schedule=True)
  _errors.check_decay("muon", "adam_b1", adam_b1)
  _errors.check_decay("muon", "adam_b2", adam_b2)
  _errors.check_nonnegative("muon", "adam_eps_root", adam_eps_root)
  _errors.check_number("muon", "adam_weight_decay", adam_weight_decay, low=0.0, allow_schedule=True)
  _errors.check_nonnegative("muon", "consistent_rms", consistent_rms, allow_none=True)
  if adam_learning_rate is None:
    adam_learning_rate = learning_rate
  if muon_weight_dimension_numbers is None:
    labels = _default_labels
    spec = MuonDimensionNumbers()
  else:
    spec = muon_weight_dimension_numbers
    labels = _base.Bound(_spec_labels, None, spec=spec)
  dim_nums = _MuonDimNums(spec, labels)
  muon_branch = chain(
      scale_by_muon(ns_coeffs=ns_coeffs, ns_steps=ns_steps, beta=beta, eps=eps, mu_dtype=mu_dtype,
                    nesterov=nesterov, adaptive=adaptive, preconditioning=preconditioning,
                    weight_dimension_numbers=dim_nums),
      _scale_by_shape(dim_nums, consistent_rms),
      add_decayed_weights(weight_decay, weight_decay_mask),
      scale_by_learning_rate(learning_rate))
  adam_branch = adamw(learning_rate=adam_learning_rate, b1=adam_b1, b2=adam_b2, eps=eps, eps_root=adam_eps_root,
                      weight_decay=adam_weight_decay, mu_dtype=mu_dtype, nesterov=nesterov)
  return _base.rename(partition({"muon": muon_branch, "adam": adam_branch}, labels), "muon")
