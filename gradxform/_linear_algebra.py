"""Linear algebra for optimizers: power iteration, inverse p-th roots of PSD matrices (Shampoo-style
preconditioners), and non-negative least squares.

The arithmetic promotes mixed dtypes explicitly (as standard promotion would), so these functions give
optax's dtypes while running clean under `jax_numpy_dtype_promotion="strict"`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree

__all__ = ["matrix_inverse_pth_root", "nnls", "power_iteration"]


def _matmul(a, b, precision=None):
  return jnp.matmul(*_numerics.promote(a, b), precision=precision)


# ----------------------------------------------------------------------------------------------
# Tree arithmetic for vectors given as pytrees (power iteration on a matrix-free operator).


def _tree_scale(scalar, tree):
  return jax.tree.map(lambda x: _numerics.mul(scalar, x), tree)


def _tree_normalize(tree):
  return _tree_scale(1.0 / _tree.global_norm(tree), tree)


def _leaf_vdot(a, b):
  a, b = _numerics.promote(jnp.asarray(a), jnp.asarray(b))
  if jnp.iscomplexobj(a):
    a = jnp.conj(a)
  return jnp.tensordot(a, b, a.ndim, precision=lax.Precision.HIGHEST)


def _tree_vdot(x, y):
  total = 0
  for dot in jax.tree.leaves(jax.tree.map(_leaf_vdot, x, y)):
    total = _numerics.add(total, dot)
  return total


def _not_converged(loop_vars, *, error_tolerance, num_iters):
  eigvec, product, eigval, iteration = loop_vars
  residual = jax.tree.map(lambda z, v: _numerics.sub(z, _numerics.mul(eigval, v)), product, eigvec)
  relative_error = jnp.abs(_numerics.div(_tree.global_norm(residual), eigval))
  return ~(relative_error < error_tolerance) & (iteration < num_iters)


def power_iteration(
    matrix: Union[jax.typing.ArrayLike, Callable[[_base.ArrayTree], _base.ArrayTree]],
    *,
    v0: Optional[_base.ArrayTree] = None,
    num_iters: jax.typing.ArrayLike = 100,
    error_tolerance: jax.typing.ArrayLike = 1e-6,
    precision: lax.Precision = lax.Precision.HIGHEST,
    key: Optional[jax.Array] = None,
) -> tuple[jax.typing.ArrayLike, _base.ArrayTree]:
  """The dominant eigenvalue (largest in magnitude) of a diagonalizable matrix and its eigenvector.

  Repeats v <- A v / ||A v|| with eigenvalue estimate <v, A v>, until ||A v - lambda v|| / |lambda| falls
  below `error_tolerance` or `num_iters` iterations have run.

  Args:
    matrix: a square array, or a callable computing the matrix-vector product on a pytree.
    v0: the starting vector (a pytree shaped like the callable's input). Required for a callable; for an
      array it defaults to a uniform draw in [-1, 1] with `key`.
    num_iters: the most iterations to run.
    error_tolerance: stop once the relative residual is below this.
    precision: the matmul precision used for an array `matrix`.
    key: PRNG key for the default v0; None means `jax.random.PRNGKey(0)`.

  Returns:
    (eigenvalue, unit-norm eigenvector).
  """
  _errors.check_nonnegative("power_iteration", "num_iters", num_iters)
  _errors.check_nonnegative("power_iteration", "error_tolerance", error_tolerance)
  if callable(matrix):
    product = matrix
    if v0 is None:
      raise _errors.HyperparameterError(
          "power_iteration: argument `v0` is required when `matrix` is a callable (the shape of its "
          "input is unknown)")
  else:
    product = lambda v: _matmul(matrix, v, precision=precision)
    if v0 is None:
      v0 = jax.random.uniform(jax.random.PRNGKey(0) if key is None else key, shape=matrix.shape[-1:],
                              dtype=matrix.dtype, minval=-1.0, maxval=1.0)

  def step(loop_vars):
    _, previous_product, _, iteration = loop_vars
    eigvec = _tree_normalize(previous_product)
    new_product = product(eigvec)
    return eigvec, new_product, _tree_vdot(eigvec, new_product), iteration + 1

  v0 = _tree_normalize(v0)
  # Weakly typed 0.0 and 0: the while loop gives them the dtypes the body produces.
  init = (v0, product(v0), jnp.asarray(0.0), jnp.asarray(0))
  cond = lambda loop_vars: _not_converged(loop_vars, error_tolerance=error_tolerance, num_iters=num_iters)
  _, last_product, eigval, _ = lax.while_loop(cond, step, init)
  return eigval, _tree_normalize(last_product)


# ----------------------------------------------------------------------------------------------
# Inverse p-th root by coupled Newton iterations.


def _power_by_squaring(m, p, precision):
  """m**k for k = 2**round(log2(p)), clamped to {1, 2, 4, 8} (exact for p in 1, 2, 4, 8; see report)."""
  square = lambda a: jnp.matmul(a, a, precision=precision)
  branches = [lambda a: a, square, lambda a: square(square(a)), lambda a: square(square(square(a)))]
  return lax.switch(jnp.asarray(jnp.round(jnp.log2(p)), jnp.int32), branches, m)


def matrix_inverse_pth_root(
    matrix: jax.typing.ArrayLike,
    p: jax.typing.ArrayLike,
    num_iters: jax.typing.ArrayLike = 100,
    ridge_epsilon: jax.typing.ArrayLike = 1e-6,
    error_tolerance: jax.typing.ArrayLike = 1e-6,
    precision: lax.Precision = lax.Precision.HIGHEST,
):
  """matrix^(-1/p) of a symmetric positive semi-definite matrix, by coupled Newton iterations.

  Higham, "Functions of Matrices" (2008), eq. 7.18: with M_0 = z A, H_0 = z^(1/p) I,
  z = (1 + p) / (2 ||A||_F) and alpha = -1/p, iterate
    M_{k+1} = ((1 - alpha) I + alpha M_k)^p M_k,   H_{k+1} = H_k ((1 - alpha) I + alpha M_k),
  so that M -> I and H -> A^(-1/p). A ridge `ridge_epsilon * max eigenvalue` is added to A first. The
  iteration runs in float32 and stops when max|M - I| <= error_tolerance, after `num_iters` steps, or when
  the error grows by more than 20% (then the previous H is returned).

  Args:
    matrix: the (n, n) symmetric PSD matrix.
    p: the root, a positive integer; the matrix power inside the iteration is exact for p in 1, 2, 4, 8.
    num_iters: the most iterations.
    ridge_epsilon: the ridge, relative to the largest eigenvalue.
    error_tolerance: the target max|M - I|.
    precision: the matmul precision.

  Returns:
    (matrix^(-1/p) in the matrix's dtype (float32 for a 1 x 1 matrix), the final error max|M - I|).
  """
  fn = "matrix_inverse_pth_root"
  _errors.check_number(fn, "p", p, low=0.0, low_open=True)
  _errors.check_nonnegative(fn, "num_iters", num_iters)
  _errors.check_nonnegative(fn, "ridge_epsilon", ridge_epsilon)
  _errors.check_nonnegative(fn, "error_tolerance", error_tolerance)
  shape = np.shape(matrix)
  if len(shape) != 2 or shape[0] != shape[1]:
    raise _errors.HyperparameterError(f"{fn}: `matrix` must be a square matrix, got shape {shape}")
  matrix = jnp.asarray(matrix)
  n = shape[0]
  alpha = jnp.asarray(-1.0 / p, jnp.float32)
  identity = jnp.eye(n, dtype=jnp.float32)
  max_eigval, _ = power_iteration(matrix, num_iters=100, error_tolerance=1e-6, precision=precision)
  ridge = _numerics.mul(ridge_epsilon, jnp.maximum(max_eigval, 1e-16))

  if n == 1:
    base = _numerics.add(matrix, ridge)
    return jnp.power(*_numerics.promote(base, alpha)), 0

  def keep_going(loop):
    iteration, _, _, _, error, improving = loop
    return (iteration < num_iters) & (error > error_tolerance) & improving

  def newton_step(loop):
    iteration, mat_m, mat_h, _, error, _ = loop
    mat_m_i = (1 - alpha) * identity + alpha * mat_m
    new_m = jnp.matmul(_power_by_squaring(mat_m_i, p, precision), mat_m, precision=precision)
    new_h = jnp.matmul(mat_h, mat_m_i, precision=precision)
    new_error = jnp.max(jnp.abs(new_m - identity))
    # The error may rise for a step before converging; a rise over 20% means divergence: stop there.
    return iteration + 1, new_m, new_h, mat_h, new_error, new_error < error * 1.2

  damped = _numerics.add(matrix, _numerics.mul(ridge, identity))
  z = _numerics.div(1 + p, 2 * jnp.linalg.norm(damped))
  mat_m0 = _numerics.mul(damped, z)
  mat_h0 = _numerics.mul(identity, jnp.power(z, 1.0 / p))
  init = (0, mat_m0, mat_h0, mat_h0, jnp.max(jnp.abs(mat_m0 - identity)), True)
  _, mat_m, mat_h, previous_h, _, improving = lax.while_loop(keep_going, newton_step, init)
  error = jnp.max(jnp.abs(mat_m - identity))
  use_last = jnp.asarray(improving, previous_h.dtype)
  result = use_last * mat_h + (1 - use_last) * previous_h
  return jnp.asarray(result, matrix.dtype), error


# ----------------------------------------------------------------------------------------------
# Non-negative least squares by fast projected gradient.


def _spectral_radius_bound(q):
  """min(||Q||_F, ||Q||_1): both bound the spectral radius of Q."""
  frobenius = jnp.linalg.matrix_norm(q, ord="fro")
  one_norm = jnp.linalg.matrix_norm(q, ord=1) if q.size != 0 else 0
  return jnp.minimum(frobenius, one_norm)


def nnls(
    A: jax.Array,  # pylint: disable=invalid-name
    b: jax.Array,
    iters: int,
    unroll: Union[int, bool] = 1,
    L: Union[jax.typing.ArrayLike, None] = None,  # pylint: disable=invalid-name
) -> jax.Array:
  """Non-negative least squares: argmin ||A x - b||_2 subject to x >= 0, by fast projected gradient.

  Polyak (2015), "Projected gradient method for non-negative least square": with Q = A^T A, q = A^T b,
  x_{k+1} = max(0, y_k - (Q y_k - q) / L), y_{k+1} = x_{k+1} + (c_k - 1) / c_{k+1} (x_{k+1} - x_k),
  c_{k+1} = (1 + sqrt(1 + 4 c_k^2)) / 2, starting from x = y = 0, c = 0.

  Args:
    A: the (M, N) matrix.
    b: the (M,) vector or (M, K) matrix of right-hand sides.
    iters: the number of iterations.
    unroll: `unroll` for the `lax.scan` over iterations.
    L: an upper bound on the spectral radius of A^T A; None computes min(||Q||_F, ||Q||_1).

  Returns:
    x, of shape (N,) or (N, K), with b's dtype.
  """
  a_shape, b_shape = np.shape(A), np.shape(b)
  if len(a_shape) != 2:
    raise _errors.HyperparameterError(f"nnls: `A` must be a matrix (rank 2), got shape {a_shape}")
  if len(b_shape) not in (1, 2):
    raise _errors.HyperparameterError(f"nnls: `b` must have rank 1 or 2, got shape {b_shape}")
  if b_shape[0] != a_shape[0]:
    raise _errors.HyperparameterError(
        f"nnls: `b` must have as many rows as `A`: A has shape {a_shape}, b has shape {b_shape}")
  if not isinstance(iters, (int, np.integer)) or isinstance(iters, bool):
    raise _errors.HyperparameterTypeError(f"nnls: argument `iters` must be an int, got {type(iters).__name__}")
  _errors.check_nonnegative("nnls", "iters", iters)
  A, b = jnp.asarray(A), jnp.asarray(b)  # pylint: disable=invalid-name
  q_mat = _matmul(A.mT, A)
  q_vec = _matmul(A.mT, b)
  bound = _spectral_radius_bound(q_mat) if L is None else L
  bound = jnp.where(bound == 0, 1, bound)  # a zero A: any step size works, avoid 0 / 0

  def step(carry, _):
    x, y, c = carry
    c_next = (1 + jnp.sqrt(1 + 4 * c ** 2)) / 2
    momentum = (c - 1) / c_next
    gradient = _numerics.sub(_matmul(q_mat, y), q_vec)
    x_next = _numerics.sub(y, _numerics.div(gradient, bound)).clip(0)
    y_next = _numerics.add(x_next, _numerics.mul(momentum, _numerics.sub(x_next, x)))
    return (x_next, y_next, c_next), None

  x0 = jnp.zeros_like(b, shape=a_shape[-1:] + b_shape[1:])
  (x, _, _), _ = lax.scan(step, (x0, x0, 0.0), length=iters, unroll=unroll)
  return x
