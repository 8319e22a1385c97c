"""The Hungarian algorithm with potentials (Kuhn, 1955; Jonker & Volgenant, 1987), in jit-able JAX.

One solver (`_column_owners`) finds, for an n x m cost matrix with n <= m, the row that owns each column in
a minimum-cost matching, adding one row at a time along a shortest augmenting path (O(n^2 m)). The two
public functions differ only in how they lay out the answer, as their optax namesakes do. When several
matchings are optimal, the one returned may differ from optax's (the total cost is the same).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _as_float(cost: jax.Array) -> jax.Array:
  cost = jnp.asarray(cost)
  return cost if jnp.issubdtype(cost.dtype, jnp.floating) else cost.astype(float)


def _column_owners(cost: jax.Array) -> jax.Array:
  """owner[j] = 1 + the row matched to column j - 1 (owner[0] is scratch; 0 means unmatched); needs n <= m."""
  n, m = cost.shape
  # Potentials u (rows, 1-based, plus a dump slot n + 1 for masked scatters) and v (columns, 1-based).
  u = jnp.zeros(n + 2, cost.dtype)
  v = jnp.zeros(m + 1, cost.dtype)
  owner = jnp.zeros(m + 1, jnp.int32)
  inf = jnp.array(jnp.inf, cost.dtype)

  def add_row(carry, row):
    u, v, owner = carry
    owner = owner.at[0].set(row + 1)
    used = jnp.zeros(m + 1, bool)
    slack = jnp.full(m, inf)           # the reduced cost of the best path found so far to each column
    previous = jnp.zeros(m, jnp.int32)  # the column before each column on that path

    def grow(state):  # extend the alternating tree by the column of least slack
      u, v, used, slack, previous, column = state
      used = used.at[column].set(True)
      free = ~used[1:]
      reduced = cost[owner[column] - 1] - u[owner[column]] - v[1:]
      better = free & (reduced < slack)
      previous = jnp.where(better, column, previous)
      slack = jnp.where(better, reduced, slack)
      delta = jnp.min(jnp.where(free, slack, inf))
      next_column = jnp.argmin(jnp.where(free, slack, inf)).astype(jnp.int32) + 1
      u = u.at[jnp.where(used, owner, n + 1)].add(delta)
      v = jnp.where(used, v - delta, v)
      slack = jnp.where(free, slack - delta, slack)
      return u, v, used, slack, previous, next_column

    u, v, _, _, previous, column = jax.lax.while_loop(
        lambda state: owner[state[-1]] != 0, grow, (u, v, used, slack, previous, jnp.int32(0)))

    def flip(state):  # walk the augmenting path back, shifting each column's owner along it
      owner, column = state
      before = previous[column - 1]
      return owner.at[column].set(owner[before]), before

    owner, _ = jax.lax.while_loop(lambda state: state[1] != 0, flip, (owner, column))
    return (u, v, owner), None

  (_, _, owner), _ = jax.lax.scan(add_row, (u, v, owner), jnp.arange(n, dtype=jnp.int32))
  return owner


def _empty() -> tuple[jax.Array, jax.Array]:
  return jnp.zeros(0, int), jnp.zeros(0, int)


def hungarian_algorithm(cost_matrix):
  """A minimum-cost matching of the rows and columns of `cost_matrix` (n x m; jit-able).

  Args:
    cost_matrix: the 2-D cost of assigning row i to column j.

  Returns:
    (i, j): index arrays of length min(n, m) with cost_matrix[i, j].sum() minimal. For a square matrix, j is
    0..n-1 and i the row matched to each column; for a wide matrix (n < m) the pairs are ordered by decreasing
    row; a tall one is solved transposed, so i and j swap roles. (optax's layout.)
  """
  cost = jnp.asarray(cost_matrix)
  if cost.shape[0] == 0 or cost.shape[1] == 0:
    return _empty()
  transpose = cost.shape[0] > cost.shape[1]
  cost = _as_float(cost.T if transpose else cost)
  n, m = cost.shape
  owner = _column_owners(cost)[1:]
  if n == m:
    rows, columns = owner - 1, jnp.arange(m)
  else:
    rows, columns = jax.lax.top_k(owner, n)
    rows = rows - 1
  return (columns, rows) if transpose else (rows, columns)


def base_hungarian_algorithm(cost_matrix):
  """A minimum-cost matching of rows and columns, laid out by row (same solution as `hungarian_algorithm`).

  Args:
    cost_matrix: the 2-D cost of assigning row i to column j.

  Returns:
    (i, j): index arrays of length min(n, m), i in increasing order, with cost_matrix[i, j].sum() minimal.
  """
  cost = jnp.asarray(cost_matrix)
  if cost.shape[0] == 0 or cost.shape[1] == 0:
    return _empty()
  transpose = cost.shape[1] < cost.shape[0]
  cost = _as_float(cost.T if transpose else cost)
  n, m = cost.shape
  owner = _column_owners(cost)[1:]
  # Invert owner (column -> row) into row -> column; unmatched columns scatter into a dropped slot.
  column_of_row = jnp.full(n + 1, -1).at[jnp.where(owner > 0, owner - 1, n)].set(jnp.arange(m))[:n]
  if transpose:
    order = jnp.argsort(column_of_row)
    return column_of_row[order], order
  return jnp.arange(n), column_of_row
