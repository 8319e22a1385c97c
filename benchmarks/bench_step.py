"""Time gradxform against optax on the same trees, in the same process, interleaved; print ratios.

For each tree (A: few large leaves, B: transformer-like, C: many small leaves) and optimizer (adam;
clip + adamw + warmup-cosine schedule) it measures, for both libraries:
  * step: a jitted train step (update + apply_updates, buffers donated), median of interleaved runs;
  * compile: lowering + compiling that step;
  * eager: one un-jitted update + apply_updates (warm: after a first call);
  * state bytes: the optimizer state's size;
and a minimal-traffic kernel: one jitted elementwise pass per leaf reading p, g, mu, nu and writing
p, mu, nu (the least memory an Adam step must move). "roofline" is step time / kernel time.
Ratios (gradxform / optax) are the figures; absolute times on shared machines are noise.

  python benchmarks/bench_step.py            # full sizes
  python benchmarks/bench_step.py --quick    # small sizes, well under 2 minutes
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import gradxform


def make_tree(kind: str, quick: bool) -> dict:
  """A: 4 x 5M leaves; B: ~150 leaves / ~20M params like a transformer; C: 2000 x 256 (quick: smaller)."""
  key = jax.random.key(0)
  shapes = {}
  if kind == "A":
    n = 1_000_000 if quick else 5_000_000
    shapes = {f"w{i}": (n,) for i in range(4)}
  elif kind == "B":
    d, layers = (256, 6) if quick else (512, 12)
    shapes["embed"] = (8 * d, d)
    for i in range(layers):
      for name, shape in {"qkv": (d, 3 * d), "qkv_b": (3 * d,), "out": (d, d), "out_b": (d,), "ln1": (d,),
                          "ln1_b": (d,), "mlp_in": (d, 4 * d), "mlp_in_b": (4 * d,), "mlp_out": (4 * d, d),
                          "mlp_out_b": (d,), "ln2": (d,), "ln2_b": (d,)}.items():
        shapes[f"layer{i}/{name}"] = shape
  else:
    shapes = {f"p{i}": (256,) for i in range(500 if quick else 2000)}
  keys = jax.random.split(key, len(shapes))
  return {name: jax.random.normal(k, shape, jnp.float32) * 0.02 for k, (name, shape) in zip(keys, shapes.items())}


def optimizers(lib):
  schedule = lib.warmup_cosine_decay_schedule(0.0, 1e-3, 100, 10_000)
  return {"adam": lib.adam(1e-3),
          "clip+adamw+sched": lib.chain(lib.clip_by_global_norm(1.0), lib.adamw(schedule, weight_decay=1e-4))}


def make_step(lib, tx):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return lib.apply_updates(params, updates), state
  return jax.jit(step, donate_argnums=(0, 1))


def state_bytes(state) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))


def _kernel_leaf(p, g, mu, nu):
  mu = 0.9 * mu + 0.1 * g
  nu = 0.999 * nu + 0.001 * g * g
  return p - 1e-3 * mu / (jnp.sqrt(nu) + 1e-8), mu, nu


def _kernel(p, g, mu, nu):
  """Lists of leaves in, three lists out: the minimal-traffic Adam-like pass."""
  outs = [_kernel_leaf(*leaves) for leaves in zip(p, g, mu, nu)]
  return [o[0] for o in outs], [o[1] for o in outs], [o[2] for o in outs]


kernel = jax.jit(_kernel, donate_argnums=(0, 2, 3))


def _block(tree):
  jax.tree.map(lambda x: x.block_until_ready(), tree)


def measure(params, grads, libs_txs, repeats: int):
  """Interleaved timing of each (label, lib, tx) step plus the kernel; returns medians and compile times."""
  runners, compile_times, eager_times, sizes = {}, {}, {}, {}
  for label, lib, tx in libs_txs:
    state = tx.init(params)
    sizes[label] = state_bytes(state)
    for _ in range(2):  # the second call is timed: the first compiles each primitive once
      start = time.perf_counter()
      eager_updates, _ = tx.update(grads, state, params)
      _block(lib.apply_updates(params, eager_updates))
      eager_times[label] = time.perf_counter() - start
    step = make_step(lib, tx)
    copy = jax.tree.map(jnp.copy, params)
    start = time.perf_counter()
    compiled = step.lower(copy, state, grads).compile()
    compile_times[label] = time.perf_counter() - start
    runners[label] = [compiled, copy, state]
  leaves = jax.tree.leaves(params)
  grad_leaves = jax.tree.leaves(grads)
  kernel_state = [[jnp.copy(x) for x in leaves], [jnp.zeros_like(x) for x in leaves],
                  [jnp.zeros_like(x) for x in leaves]]
  times = {label: [] for label in list(runners) + ["kernel"]}
  for _ in range(repeats):
    for label, runner in runners.items():
      compiled, p, s = runner
      start = time.perf_counter()
      p, s = compiled(p, s, grads)
      _block(p)
      times[label].append(time.perf_counter() - start)
      runner[1], runner[2] = p, s
    start = time.perf_counter()
    out = kernel(kernel_state[0], grad_leaves, kernel_state[1], kernel_state[2])
    _block(out)
    times["kernel"].append(time.perf_counter() - start)
    kernel_state = list(out)
  return {k: statistics.median(v) for k, v in times.items()}, compile_times, eager_times, sizes


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true", help="small trees and few repeats")
  parser.add_argument("--repeats", type=int, default=None)
  args = parser.parse_args(argv)
  repeats = args.repeats or (7 if args.quick else 21)
  print(f"jax {jax.__version__}, devices {jax.devices()}, optax {optax.__version__}, quick={args.quick}")
  header = (f"{'tree':4} {'optimizer':18} {'params':>9} {'leaves':>6} | {'step':>6} {'compile':>7} {'eager':>6} "
            f"{'state':>6} | {'roofline gx':>11} {'roofline ox':>11} | {'gx step ms':>10} {'gx compile s':>12}")
  print(header)
  print("-" * len(header))
  for kind in ("A", "B", "C"):
    params = make_tree(kind, args.quick)
    grads = jax.tree.map(lambda p: p * 0.5 + 0.01, params)
    n_params = sum(p.size for p in jax.tree.leaves(params))
    ours, theirs = optimizers(gradxform), optimizers(optax)
    for name in ours:
      medians, compiles, eager, sizes = measure(
          params, grads, [("gx", gradxform, ours[name]), ("ox", optax, theirs[name])], repeats)
      print(f"{kind:4} {name:18} {n_params/1e6:8.2f}M {len(params):6d} | "
            f"{medians['gx'] / medians['ox']:6.2f} {compiles['gx'] / compiles['ox']:7.2f} "
            f"{eager['gx'] / eager['ox']:6.2f} {sizes['gx'] / sizes['ox']:6.2f} | "
            f"{medians['gx'] / medians['kernel']:11.2f} {medians['ox'] / medians['kernel']:11.2f} | "
            f"{medians['gx'] * 1e3:10.2f} {compiles['gx']:12.2f}")
  print("ratios are gradxform / optax (lower is better); roofline = step / minimal-traffic kernel")


if __name__ == "__main__":
  main()
