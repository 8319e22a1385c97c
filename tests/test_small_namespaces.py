"""`projections`, `perturbations`, `second_order` and `assignment` agree with optax 0.2.8.

Each function runs on the same inputs in both libraries, eagerly and under jax.jit, and must give the
same values (and, where the function is differentiable, the same gradients).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform
from equivalence import assert_trees_equivalent


def _tree(seed: int = 0, scale: float = 1.0):
  keys = jax.random.split(jax.random.key(seed), 3)
  return {"a": scale * jax.random.normal(keys[0], (3,)), "b": [scale * jax.random.normal(keys[1], (2, 2)),
                                                               scale * jax.random.normal(keys[2], ())]}


def _positive(seed: int):
  return jax.tree.map(jnp.abs, _tree(seed))


PROJECTIONS = [
    ("projection_non_negative", lambda: (_tree(1),), {}),
    ("projection_box", lambda: (_tree(2)["a"], -0.5, 0.5), {}),
    ("projection_box", lambda: (_tree(3), jax.tree.map(lambda x: x - 1, _tree(4)), _positive(5)), {}),
    ("projection_hypercube", lambda: (_tree(6)["a"],), {}),
    ("projection_hypercube", lambda: (_tree(7)["b"][0],), {"scale": 0.3}),
    ("projection_simplex", lambda: (_tree(8),), {}),
    ("projection_simplex", lambda: (_tree(9, 5.0),), {"scale": 2.0}),
    ("projection_l1_sphere", lambda: (_tree(10),), {"scale": 1.5}),
    ("projection_l1_ball", lambda: (_tree(11),), {}),
    ("projection_l1_ball", lambda: (_tree(12, 0.01),), {}),
    ("projection_l2_sphere", lambda: (_tree(13),), {"scale": 2.0}),
    ("projection_l2_ball", lambda: (_tree(14),), {}),
    ("projection_l2_ball", lambda: (_tree(15, 0.01),), {"scale": 3.0}),
    ("projection_linf_ball", lambda: (_tree(16),), {"scale": 0.7}),
    ("projection_vector", lambda: (_tree(17), _tree(18)), {}),
    ("projection_hyperplane", lambda: (_tree(19), _tree(20), 0.5), {}),
    ("projection_halfspace", lambda: (_tree(21), _tree(22), -10.0), {}),
    ("projection_halfspace", lambda: (_tree(23), _tree(24), 10.0), {}),
]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name,args,kwargs", PROJECTIONS, ids=[f"{p[0]}-{i}" for i, p in enumerate(PROJECTIONS)])
def test_projection_matches_optax(name, args, kwargs, jit):
  ours, theirs = getattr(gradxform.projections, name), getattr(optax.projections, name)
  if jit:
    ours, theirs = jax.jit(ours), jax.jit(theirs)
  args = args()
  with jax.numpy_dtype_promotion("standard"):
    expected = theirs(*args, **kwargs)
  assert_trees_equivalent(ours(*args, **kwargs), expected, name, rtol=1e-5)


def test_scalar_box_bounds_apply_to_every_leaf():
  """A gradxform extension: optax accepts scalar bounds only when the tree is a single array."""
  x = _tree(31, 3.0)
  boxed = gradxform.projections.projection_box(x, -0.5, 0.5)
  cube = gradxform.projections.projection_hypercube(x, 2.0)
  for original, clipped, cubed in zip(jax.tree.leaves(x), jax.tree.leaves(boxed), jax.tree.leaves(cube)):
    np.testing.assert_array_equal(clipped, jnp.clip(original, -0.5, 0.5))
    np.testing.assert_array_equal(cubed, jnp.clip(original, 0.0, 2.0))


def test_projection_results_lie_in_their_sets():
  x = _tree(30, 3.0)
  simplex = gradxform.projections.projection_simplex(x, 2.0)
  leaves = jnp.concatenate([jnp.ravel(v) for v in jax.tree.leaves(simplex)])
  assert float(jnp.min(leaves)) >= 0 and abs(float(jnp.sum(leaves)) - 2.0) < 1e-5
  ball = gradxform.projections.projection_l2_ball(x, 1.0)
  assert abs(float(gradxform.tree_utils.tree_norm(ball)) - 1.0) < 1e-5


@pytest.mark.parametrize("name", ["projection_simplex", "projection_l1_sphere", "projection_l2_ball"])
def test_projection_jacobians_match_optax(name):
  x = jnp.array([0.3, -1.2, 2.0, 0.1, 0.9])
  ours = jax.jacobian(lambda v: getattr(gradxform.projections, name)(v, 1.5))(x)
  with jax.numpy_dtype_promotion("standard"):
    theirs = jax.jacobian(lambda v: getattr(optax.projections, name)(v, 1.5))(x)
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# perturbations


def _argmax_one_hot(x):
  return jax.nn.one_hot(jnp.argmax(x["v"]), x["v"].shape[-1])


@pytest.mark.parametrize("noise", ["Gumbel", "Normal"])
@pytest.mark.parametrize("use_baseline", [True, False])
def test_perturbed_function_and_its_gradient_match_optax(noise, use_baseline):
  x = {"v": jnp.array([0.2, 0.5, -0.3, 0.1])}
  key = jax.random.key(3)

  def run(lib):
    perturbed = lib.perturbations.make_perturbed_fun(
        _argmax_one_hot, num_samples=64, sigma=0.5, noise=getattr(lib.perturbations, noise)(),
        use_baseline=use_baseline)
    loss = lambda x: jnp.sum(perturbed(key, x) * jnp.arange(4.0))  # noqa: E731
    with jax.numpy_dtype_promotion("standard"):
      return jax.jit(perturbed)(key, x), jax.jit(jax.grad(loss))(x)

  (ours_value, ours_grad), (theirs_value, theirs_grad) = run(gradxform), run(optax)
  np.testing.assert_allclose(ours_value, theirs_value, rtol=1e-6)
  np.testing.assert_allclose(ours_grad["v"], theirs_grad["v"], rtol=1e-4, atol=1e-5)
  assert float(jnp.max(jnp.abs(ours_grad["v"]))) > 0  # the argmax is piecewise constant; the smoothing is not


@pytest.mark.parametrize("noise", ["Gumbel", "Normal"])
def test_noise_log_prob_and_samples_match_optax(noise):
  z = jnp.linspace(-2.0, 2.0, 7)
  ours, theirs = getattr(gradxform.perturbations, noise)(), getattr(optax.perturbations, noise)()
  np.testing.assert_allclose(ours.log_prob(z), theirs.log_prob(z), rtol=1e-6)
  key = jax.random.key(0)
  np.testing.assert_array_equal(ours.sample(key, (5,)), theirs.sample(key, (5,)))


# ----------------------------------------------------------------------------------------------
# second_order (deprecated in optax 0.2.7; both libraries warn at every call)


def _mlp_loss(params, inputs, targets):
  hidden = jnp.tanh(inputs @ params["w1"])
  return jnp.mean((hidden @ params["w2"] - targets) ** 2)


def _second_order_args():
  keys = jax.random.split(jax.random.key(4), 4)
  params = {"w1": jax.random.normal(keys[0], (3, 4)), "w2": jax.random.normal(keys[1], (4, 2))}
  return params, jax.random.normal(keys[2], (5, 3)), jax.random.normal(keys[3], (5, 2))


@pytest.mark.parametrize("name", ["hvp", "hessian_diag", "fisher_diag"])
def test_second_order_matches_optax_and_warns(name):
  params, inputs, targets = _second_order_args()
  args = ((_mlp_loss, jnp.linspace(-1.0, 1.0, 20), params, inputs, targets) if name == "hvp"
          else (_mlp_loss, params, inputs, targets))
  with pytest.warns(DeprecationWarning, match=name):
    ours = getattr(gradxform.second_order, name)(*args)
  with pytest.warns(DeprecationWarning):
    theirs = getattr(optax.second_order, name)(*args)
  assert_trees_equivalent(ours, theirs, name, rtol=1e-5)


def test_hessian_diag_is_the_diagonal_of_the_hessian():
  params, inputs, targets = _second_order_args()
  flat, unflatten = jax.flatten_util.ravel_pytree(params)
  full = jax.hessian(lambda v: _mlp_loss(unflatten(v), inputs, targets))(flat)
  with pytest.warns(DeprecationWarning):
    diagonal = gradxform.second_order.hessian_diag(_mlp_loss, params, inputs, targets)
  np.testing.assert_allclose(diagonal, jnp.diag(full), rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# assignment


SHAPES = [(1, 1), (4, 4), (6, 6), (3, 5), (5, 3), (2, 7), (7, 2), (0, 3), (3, 0)]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name", ["hungarian_algorithm", "base_hungarian_algorithm"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_assignment_matches_optax(shape, name, jit):
  cost = jax.random.normal(jax.random.key(sum(shape)), shape)
  ours, theirs = getattr(gradxform.assignment, name), getattr(optax.assignment, name)
  if jit:
    ours, theirs = jax.jit(ours), jax.jit(theirs)
  for a, b in zip(ours(cost), theirs(cost)):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", [(5, 5), (4, 6), (6, 4)], ids=str)
def test_assignment_is_optimal(shape):
  """Brute force over all matchings of a small integer cost matrix: no cheaper matching exists."""
  import itertools
  cost = np.asarray(jax.random.randint(jax.random.key(7), shape, 0, 9))
  rows, cols = gradxform.assignment.hungarian_algorithm(jnp.asarray(cost))
  n, m = shape
  if n <= m:
    best = min(sum(cost[i, p[i]] for i in range(n)) for p in itertools.permutations(range(m), n))
  else:
    best = min(sum(cost[p[j], j] for j in range(m)) for p in itertools.permutations(range(n), m))
  assert int(cost[np.asarray(rows), np.asarray(cols)].sum()) == best
