"""The shared equivalence harness: run gradxform and optax side by side and compare everything.

`Ref("adam", 1e-2)` names a constructor that exists in both libraries with the same arguments; it is
resolved against each library, recursively (a Ref may hold Refs: schedules, inner transformations).
`assert_equivalent` runs N steps of both on the mixed pytree, eager or jitted, and compares updates,
params and the full state: class names, field names, tree structure, dtypes and values.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradxform


@dataclasses.dataclass(frozen=True)
class Ref:
  """A call `name(*args, **kwargs)` to be resolved in gradxform or in optax (Refs inside resolve too)."""

  name: str
  args: tuple = ()
  kwargs: tuple = ()

  def __init__(self, name, *args, **kwargs):
    object.__setattr__(self, "name", name)
    object.__setattr__(self, "args", args)
    object.__setattr__(self, "kwargs", tuple(sorted(kwargs.items())))

  def build(self, lib):
    fn = lib
    for part in self.name.split("."):
      fn = getattr(fn, part)
    args = [resolve(a, lib) for a in self.args]
    kwargs = {k: resolve(v, lib) for k, v in self.kwargs}
    if lib is optax:
      with jax.numpy_dtype_promotion("standard"):
        return fn(*args, **kwargs)
    return fn(*args, **kwargs)

  def __repr__(self):
    inner = [_show(a) for a in self.args] + [f"{k}={_show(v)}" for k, v in self.kwargs]
    return f"{self.name}({', '.join(inner)})"


def _show(value) -> str:
  """A stable text for test ids (functions by name, not by address, so pytest-xdist workers agree)."""
  if isinstance(value, Ref):
    return repr(value)
  if isinstance(value, tuple):
    return "(" + ", ".join(_show(v) for v in value) + ")"
  if isinstance(value, dict):
    return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
  if callable(value) and hasattr(value, "__name__"):
    return value.__name__
  return repr(value)


def resolve(value, lib):
  if isinstance(value, Ref):
    return value.build(lib)
  if isinstance(value, (list, tuple)):
    return type(value)(resolve(v, lib) for v in value)
  if isinstance(value, dict):
    return {k: resolve(v, lib) for k, v in value.items()}
  return value


def mixed_params() -> dict:
  """Nested dict + list + tuple; shapes (), (3,), (4, 5), (2, 3, 4); float32 and bfloat16 leaves."""
  keys = jax.random.split(jax.random.key(0), 6)
  return {
      "dense": {"w": jax.random.normal(keys[0], (4, 5), jnp.float32),
                "b": jax.random.normal(keys[1], (3,), jnp.float32)},
      "blocks": [jax.random.normal(keys[2], (2, 3, 4), jnp.float32),
                 (jax.random.normal(keys[3], (), jnp.float32),
                  jax.random.normal(keys[4], (4, 5), jnp.bfloat16))],
      "scale": jax.random.normal(keys[5], (3,), jnp.bfloat16),
  }


def gradients(params, step: int):
  """Deterministic pseudo-gradients for `step`, shaped and typed like params (varied magnitudes)."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.fold_in(jax.random.key(1), step), len(leaves))
  out = []
  for i, (k, p) in enumerate(zip(keys, leaves)):
    magnitude = 10.0 ** ((i % 3) - 1)  # 0.1, 1, 10: makes global-norm clipping bite on some steps
    noise_dtype = p.dtype if jnp.iscomplexobj(p) else jnp.float32  # complex leaves get complex noise
    out.append((magnitude * jax.random.normal(k, jnp.shape(p), noise_dtype)).astype(p.dtype))
  return jax.tree.unflatten(treedef, out)


def canonical(tree: Any) -> Any:
  """Rewrites NamedTuples as {ClassName: {field: value}} and mappings as dicts, so two libraries'
  states compare by class name, field names and values."""
  if tree is None:
    return None
  if isinstance(tree, tuple) and hasattr(tree, "_fields"):
    return {type(tree).__name__: {f: canonical(getattr(tree, f)) for f in tree._fields}}
  if isinstance(tree, dict):
    return {k: canonical(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return type(tree)(canonical(v) for v in tree)
  return tree


def _tolerance(x):
  """Relative tolerance by dtype; float32 results are in practice bit-equal to optax's."""
  return 1e-2 if jnp.asarray(x).dtype in (jnp.bfloat16, jnp.float16) else 1e-6


def assert_trees_equivalent(ours, theirs, what: str, rtol: float | None = None) -> None:
  """Same structure (class and field names included), same dtypes, values close (rtol by dtype if None)."""
  ours, theirs = canonical(ours), canonical(theirs)
  chex.assert_trees_all_equal_structs(ours, theirs)
  chex.assert_trees_all_equal_dtypes(ours, theirs)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    tol = rtol or _tolerance(a)  # from the leaf's own dtype, before widening
    wide = np.complex128 if np.iscomplexobj(a) or np.iscomplexobj(b) else np.float64
    a, b = np.asarray(a, wide), np.asarray(b, wide)
    # Absolute slack scales with the leaf's magnitude: p + u with |u| >> |p| keeps |u|'s rounding.
    scale = max(1.0, float(np.max(np.abs(b), initial=0.0, where=np.isfinite(b))))
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale, err_msg=what)


def _optax_update(tx):
  def update(updates, state, params, **extra_args):
    with jax.numpy_dtype_promotion("standard"):
      return tx.update(updates, state, params, **extra_args)
  return update


def _optax_apply(params, updates):
  with jax.numpy_dtype_promotion("standard"):
    return optax.apply_updates(params, updates)


def assert_equivalent(spec, *, steps: int = 3, jit: bool = False, params=None,
                      noisy_first_update: bool = False, extra_args=None, grads_fn=None, rtol=None) -> None:
  """Runs `spec` (a Ref) in gradxform and in optax for `steps` steps and compares all outputs.

  `noisy_first_update`: the first update is rounding noise by construction (centred RMSprop with bias
  correction divides by sqrt(g^2 - g^2 + eps) at step 1), so its last-bit differences are amplified
  1e4-fold, and later updates keep a variance computed by cancellation; then the state is still compared
  exactly at every step, updates from the second step on to 1e-3, params not at all (they carry the
  noisy first update).
  """
  params = mixed_params() if params is None else params
  ours, theirs = spec.build(gradxform), spec.build(optax)
  ours_update, theirs_update = ours.update, _optax_update(theirs)
  ours_apply, theirs_apply = gradxform.apply_updates, _optax_apply
  if jit:
    ours_update, theirs_update = jax.jit(ours_update), jax.jit(theirs_update)
    ours_apply, theirs_apply = jax.jit(ours_apply), jax.jit(theirs_apply)
  ours_state = jax.jit(ours.init)(params) if jit else ours.init(params)
  with jax.numpy_dtype_promotion("standard"):
    theirs_state = theirs.init(params)
  assert_trees_equivalent(ours_state, theirs_state, f"{spec}: init state")
  ours_params = theirs_params = params
  for step in range(steps):
    grads = gradients(params, step) if grads_fn is None else grads_fn(theirs_params, step)
    ours_kwargs = {} if extra_args is None else extra_args(ours_params, grads, step)
    theirs_kwargs = {} if extra_args is None else extra_args(theirs_params, grads, step)
    ours_updates, ours_state = ours_update(grads, ours_state, ours_params, **ours_kwargs)
    theirs_updates, theirs_state = theirs_update(grads, theirs_state, theirs_params, **theirs_kwargs)
    if not noisy_first_update:
      assert_trees_equivalent(ours_updates, theirs_updates, f"{spec}: updates at step {step}", rtol)
    elif step > 0:
      assert_trees_equivalent(ours_updates, theirs_updates, f"{spec}: updates at step {step}", rtol or 1e-3)
    assert_trees_equivalent(ours_state, theirs_state, f"{spec}: state at step {step}", rtol)
    ours_params = ours_apply(ours_params, ours_updates)
    theirs_params = theirs_apply(theirs_params, theirs_updates)
    if not noisy_first_update:
      assert_trees_equivalent(ours_params, theirs_params, f"{spec}: params at step {step}", rtol)
