"""Sharding invariance on a 2-device CPU mesh: state structure, dtypes and shardings never change.

One subprocess (XLA_FLAGS=--xla_force_host_platform_device_count=2 must be set before jax starts, and
must not reach the other tests) runs a representative set of optimizers on params with one leaf sharded
on axis 0 over the mesh, one replicated vector and one replicated scalar. For each, with a jitted init
and a jitted train step (grad + update + apply_updates), it checks:
- every param-shaped state leaf (a leaf under the param's key with the param's shape) has its param's
  sharding, after init and after each of two steps;
- every state leaf keeps its structure position, shape, dtype and sharding across the steps, and the
  train step is traced once (one signature);
- updates and the new params have the params' shardings.
The child prints one JSON object: {"failures": [...], "optax_jit_init_unsharded": [...]}. The second list
is informational: optax's jitted init leaves param-shaped zeros on one device (its zeros are not tied to
the params), so the same checks are not asserted of optax.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(r'''
    import json, warnings
    warnings.simplefilter("error")
    warnings.filterwarnings("ignore", "Some donated buffers were not usable")
    import jax, jax.numpy as jnp, numpy as np, optax
    import gradxform
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    jax.config.update("jax_numpy_dtype_promotion", "strict")
    assert jax.device_count() == 2, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("x",))
    shardings = {"w": NamedSharding(mesh, P("x", None)), "b": NamedSharding(mesh, P()),
                 "s": NamedSharding(mesh, P())}
    params = jax.device_put({"w": jnp.arange(12, dtype=jnp.float32).reshape(4, 3) / 10 - 0.5,
                             "b": jnp.asarray([0.1, -0.2, 0.3], jnp.float32),
                             "s": jnp.asarray(0.5, jnp.float32)}, shardings)
    assert params["w"].addressable_shards[0].data.shape == (2, 3)

    def make(lib):
      return {
          "adam": lib.adam(0.1), "adamw": lib.adamw(0.1), "sgd(momentum)": lib.sgd(0.1, momentum=0.9),
          "lion": lib.lion(0.1), "adafactor": lib.adafactor(0.1, min_dim_size_to_factor=2),
          "rmsprop": lib.rmsprop(0.1, centered=True, momentum=0.5), "lamb": lib.lamb(0.1),
          "chain(clip_by_global_norm, adamw(schedule))": lib.chain(
              lib.clip_by_global_norm(1.0), lib.adamw(lib.warmup_cosine_decay_schedule(0.0, 0.1, 2, 10))),
          "apply_if_finite(adam)": lib.apply_if_finite(lib.adam(0.1), 2),
          "MultiSteps(adam)": lib.MultiSteps(lib.adam(0.1), 2),
      }

    def loss(p):
      return jnp.sum(jnp.sin(p["w"])) + jnp.sum(p["b"] ** 2) + p["s"] ** 2

    def same(x, sharding):
      return x.sharding.is_equivalent_to(sharding, x.ndim)

    def param_shaped(state):
      """(path, leaf, param sharding) for the state leaves under a param's key with the param's shape."""
      for path, x in jax.tree_util.tree_leaves_with_path(state):
        keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
        if keys and keys[-1] in params and jnp.shape(x) == params[keys[-1]].shape:
          yield jax.tree_util.keystr(path), x, shardings[keys[-1]]

    def layout(state):
      return [(jax.tree_util.keystr(path), x.shape, str(x.dtype), x.sharding)
              for path, x in jax.tree_util.tree_leaves_with_path(state)]

    failures, optax_unsharded = [], []
    for name, tx in make(gradxform).items():
      traces = []

      def train_step(p, state, tx=tx, traces=traces):
        traces.append(1)
        updates, state = tx.update(jax.grad(loss)(p), state, p)
        return updates, gradxform.apply_updates(p, updates), state

      step = jax.jit(train_step)
      state = jax.jit(tx.init)(params)
      initial = layout(state)
      shaped = [path for path, _, _ in param_shaped(state)]
      if not shaped:
        failures.append(f"{name}: no param-shaped state leaf to check")
      p = params
      for i in range(3):
        for path, x, sharding in param_shaped(state):
          if not same(x, sharding):
            failures.append(f"{name} after {i} steps: state{path} is {x.sharding}, its param {sharding}")
        now = layout(state)
        if [l[:3] for l in now] != [l[:3] for l in initial]:
          failures.append(f"{name} after {i} steps: state structure/shapes/dtypes changed")
        for (path, _, _, s0), (_, shape, _, s1) in zip(initial, now):
          if not s1.is_equivalent_to(s0, len(shape)):
            failures.append(f"{name} after {i} steps: state{path} sharding {s0} -> {s1}")
        if i == 2:
          break
        updates, p, state = step(p, state)
        for tree, what in ((updates, "updates"), (p, "params")):
          for k, x in tree.items():
            if x.dtype != params[k].dtype or not same(x, shardings[k]):
              failures.append(f"{name} step {i + 1}: {what}['{k}'] is {x.dtype} {x.sharding}")
      if len(traces) != 1:
        failures.append(f"{name}: the train step was traced {len(traces)} times")

    with jax.numpy_dtype_promotion("standard"):
      for name, tx in make(optax).items():
        state = jax.jit(tx.init)(params)
        if any(not same(x, s) for _, x, s in param_shaped(state)):
          optax_unsharded.append(name)

    print(json.dumps({"failures": failures, "optax_jit_init_unsharded": optax_unsharded}))
''')


def test_state_shardings_follow_params_on_a_two_device_mesh():
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip())
  result = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-4000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["failures"] == [], "\n".join(report["failures"])
