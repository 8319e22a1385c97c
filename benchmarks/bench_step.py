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
    d, layers = (256, 6) if quick else (384, 12)  # full: 12 * 12 * d^2 + 8 * d^2 = 22M params, 145 leaves
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


def measure(tree_params, tree_grads, runs, repeats: int):
  """Interleaved timing of each (label, lib, tx, params, grads) step plus the kernel over `tree_params`.

  Returns medians, compile times, warm eager times and state sizes, each by label.
  """
  runners, compile_times, eager_times, sizes = {}, {}, {}, {}
  for label, lib, tx, params, grads in runs:
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
    runners[label] = [compiled, copy, state, grads]
  leaves = jax.tree.leaves(tree_params)
  grad_leaves = jax.tree.leaves(tree_grads)
  kernel_state = [[jnp.copy(x) for x in leaves], [jnp.zeros_like(x) for x in leaves],
                  [jnp.zeros_like(x) for x in leaves]]
  times = {label: [] for label in list(runners) + ["kernel"]}
  for _ in range(repeats):
    for label, runner in runners.items():
      compiled, p, s, grads = runner
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


def _as_is(params, grads):
  return params, grads


def _packed(params, grads):
  return gradxform.FlatTree.of(params), gradxform.FlatTree.of(grads)


# label -> (wrap the optimizer, prepare params and grads, trees it runs on)
VARIANTS = {
    "gx": (lambda tx: tx, _as_is, "ABC"),
    "gx fused": (gradxform.fused, _as_is, "ABC"),
    # the many-small-leaves path: params kept as a FlatTree (unpacked inside the loss), so grads arrive flat
    "gx flat": (gradxform.flat, _packed, "C"),
}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true", help="small trees and few repeats")
  parser.add_argument("--repeats", type=int, default=None)
  parser.add_argument("--trees", default="ABC", help="which trees to run, e.g. AB")
  args = parser.parse_args(argv)
  repeats = args.repeats or (7 if args.quick else 21)
  print(f"jax {jax.__version__}, devices {jax.devices()}, optax {optax.__version__}, quick={args.quick}")
  header = (f"{'tree':4} {'optimizer':17} {'variant':9} {'params':>7} {'leaves':>6} | {'step':>5} {'compile':>7} "
            f"{'eager':>5} {'state':>5} | {'roofline':>8} {'optax':>5} | {'step ms':>8} {'compile s':>9}")
  print(header)
  print("-" * len(header))
  for kind in args.trees:
    params = make_tree(kind, args.quick)
    grads = jax.tree.map(lambda p: p * 0.5 + 0.01, params)
    n_params = sum(p.size for p in jax.tree.leaves(params))
    ours, theirs = optimizers(gradxform), optimizers(optax)
    for name in ours:
      runs = [(label, gradxform, wrap(ours[name]), *prepare(params, grads))
              for label, (wrap, prepare, kinds) in VARIANTS.items() if kind in kinds]
      medians, compiles, eager, sizes = measure(params, grads, runs + [("ox", optax, theirs[name], params, grads)],
                                                repeats)
      for label, *_ in runs:
        print(f"{kind:4} {name:17} {label:9} {n_params/1e6:6.2f}M {len(params):6d} | "
              f"{medians[label] / medians['ox']:5.2f} {compiles[label] / compiles['ox']:7.2f} "
              f"{eager[label] / eager['ox']:5.2f} {sizes[label] / sizes['ox']:5.2f} | "
              f"{medians[label] / medians['kernel']:8.2f} {medians['ox'] / medians['kernel']:5.2f} | "
              f"{medians[label] * 1e3:8.2f} {compiles[label]:9.2f}")
  print("step/compile/eager/state: gradxform / optax (lower is better); roofline: step / minimal-traffic kernel "
        "(gradxform, then optax)")


if __name__ == "__main__":
  main()
