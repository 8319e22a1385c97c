"""Projections onto boxes, balls, spheres, the simplex, hyperplanes and half-spaces.

Each takes a pytree and returns the closest point (in the Euclidean norm over all leaves together) of the
set, shaped like the input. Sets defined by a norm use the norm of the whole tree, not of each leaf.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import flatten_util

from gradxform import tree_utils
from gradxform.losses import _fenchel_young


def projection_non_negative(tree: Any) -> Any:
  """Onto the non-negative orthant: max(x, 0) elementwise."""
  return jax.tree.map(jax.nn.relu, tree)


def _like(bound: Any, tree: Any) -> Any:
  """A scalar bound repeated for every leaf (optax accepts scalars only when `tree` is a single array)."""
  if jax.tree.structure(bound) == jax.tree.structure(0):
    return jax.tree.map(lambda _: bound, tree)
  return bound


def projection_box(tree: Any, lower: Any, upper: Any) -> Any:
  """Onto the box lower <= x <= upper: clip elementwise.

  Args:
    tree: the point to project.
    lower, upper: scalars, or trees shaped like `tree`.
  """
  return jax.tree.map(jnp.clip, tree, _like(lower, tree), _like(upper, tree))


def projection_hypercube(tree: Any, scale: Any = 1) -> Any:
  """Onto the hypercube [0, scale]^n."""
  return projection_box(tree, lower=0, upper=scale)


def _unit_simplex(values: jax.Array) -> jax.Array:
  """Projection of a vector onto {p >= 0, sum(p) = 1} (Held et al., 1974; Duchi et al., 2008)."""
  return _fenchel_young.simplex_projection(values)


def projection_simplex(tree: Any, scale: jax.typing.ArrayLike = 1) -> Any:
  """Onto the simplex {x >= 0, sum of all entries = scale}.

  Args:
    tree: the point to project (all leaves together form one vector).
    scale: the simplex's total mass (> 0).

  Returns:
    The projection, shaped like `tree`; differentiable (the Jacobian is exact almost everywhere).
  """
  flat, unflatten = flatten_util.ravel_pytree(tree)
  return unflatten(scale * _unit_simplex(flat / scale))


def projection_l1_sphere(tree: Any, scale: jax.typing.ArrayLike = 1) -> Any:
  """Onto the L1 sphere {||x||_1 = scale}: the simplex projection of |x|, with x's signs put back."""
  magnitudes = projection_simplex(jax.tree.map(jnp.abs, tree), scale)
  return tree_utils.tree_mul(jax.tree.map(jnp.sign, tree), magnitudes)


def projection_l1_ball(tree: Any, scale: jax.typing.ArrayLike = 1) -> Any:
  """Onto the L1 ball {||x||_1 <= scale}: x itself inside, else its projection onto the sphere."""
  inside = tree_utils.tree_norm(tree, ord=1) <= scale
  return jax.lax.cond(inside, lambda t: t, lambda t: projection_l1_sphere(t, scale), tree)


def projection_l2_sphere(tree: Any, scale: jax.typing.ArrayLike = 1) -> Any:
  """Onto the L2 sphere {||x||_2 = scale}: x * scale / ||x||_2."""
  return tree_utils.tree_scale(scale / tree_utils.tree_norm(tree), tree)


def projection_l2_ball(tree: Any, scale: jax.typing.ArrayLike = 1) -> Any:
  """Onto the L2 ball {||x||_2 <= scale}: x * scale / max(||x||_2, scale)."""
  squared = tree_utils.tree_norm(tree, squared=True)
  return tree_utils.tree_scale(scale / jnp.sqrt(jnp.maximum(squared, scale ** 2)), tree)


def projection_linf_ball(tree: Any, scale: jax.typing.ArrayLike = 1) -> Any:
  """Onto the L-infinity ball {max |x_i| <= scale}: clip every entry to [-scale, scale]."""
  return projection_box(tree, lower=tree_utils.tree_full_like(tree, -scale),
                        upper=tree_utils.tree_full_like(tree, scale))


def _coefficient(x: Any, a: Any, b: Any = None) -> jax.Array:
  """<x, a> / <a, a>, or (b - <x, a>) / <a, a> when b is given."""
  dot = tree_utils.tree_vdot(x, a)
  return (dot if b is None else b - dot) / tree_utils.tree_vdot(a, a)


def projection_vector(x: Any, a: Any) -> Any:
  """Onto the line spanned by `a`: (<x, a> / <a, a>) a."""
  return tree_utils.tree_scale(_coefficient(x, a), a)


def projection_hyperplane(x: Any, a: Any, b: jax.typing.ArrayLike) -> Any:
  """Onto the hyperplane {<a, y> = b}: x + ((b - <x, a>) / <a, a>) a."""
  return tree_utils.tree_add_scale(x, _coefficient(x, a, b), a)


def projection_halfspace(x: Any, a: Any, b: jax.typing.ArrayLike) -> Any:
  """Onto the half-space {<a, y> <= b}: x unchanged inside, else its projection onto the boundary."""
  return tree_utils.tree_add_scale(x, jnp.minimum(_coefficient(x, a, b), 0), a)
