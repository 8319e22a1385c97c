"""The cost of `with_metrics`: a jitted adam step with and without it, in the same process, interleaved.

The tree has 20 float32 leaves and ~2M parameters. Each step is update + apply_updates with the params and
state buffers donated; each repetition times a few steps of one variant, then of the other, and the
figure is the ratio of the medians (with_metrics / plain). For scale it also times the three norms alone
(one jitted reduction pass over each of three trees of the same size): what the metrics must add at
least, when nothing fuses with the step. Absolute times on shared machines are noise.

  python benchmarks/bench_metrics.py [--reps 30] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

import gradxform


def make_tree() -> dict:
  """10 leaves of 384x384 and 10 of 256x200: ~1.99M float32 parameters."""
  shapes = {f"w{i}": (384, 384) for i in range(10)} | {f"v{i}": (256, 200) for i in range(10)}
  keys = jax.random.split(jax.random.key(0), len(shapes))
  return {name: 0.02 * jax.random.normal(k, shape, jnp.float32) for k, (name, shape) in zip(keys, shapes.items())}


def make_step(tx):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return gradxform.apply_updates(params, updates), state
  return jax.jit(step, donate_argnums=(0, 1))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--reps", type=int, default=30, help="interleaved repetitions")
  parser.add_argument("--steps", type=int, default=5, help="steps timed per repetition")
  args = parser.parse_args()

  grads = jax.tree.map(lambda x: 0.1 * x, make_tree())
  variants = {}
  for name, tx in {"plain": gradxform.adam(1e-3), "with_metrics": gradxform.with_metrics(gradxform.adam(1e-3))}.items():
    params = make_tree()
    step = make_step(tx)
    params, state = jax.block_until_ready(step(params, tx.init(params), grads))  # compile and warm up
    variants[name] = [step, params, state, []]
  norms = jax.jit(lambda a, b, c: [gradxform.global_norm(t) for t in (a, b, c)])
  others = (make_tree(), jax.tree.map(lambda x: -x, grads))
  jax.block_until_ready(norms(grads, *others))
  norm_times = []
  n = sum(x.size for x in jax.tree.leaves(grads))
  print(f"tree: {len(jax.tree.leaves(grads))} leaves, {n / 1e6:.2f}M params; {args.reps} reps x {args.steps} steps")

  for _ in range(args.reps):
    for variant in variants.values():
      step, params, state, times = variant
      start = time.perf_counter()
      for _ in range(args.steps):
        params, state = step(params, state, grads)
      jax.block_until_ready((params, state))
      times.append((time.perf_counter() - start) / args.steps)
      variant[1], variant[2] = params, state
    start = time.perf_counter()
    jax.block_until_ready(norms(grads, *others))
    norm_times.append(time.perf_counter() - start)

  medians = {name: statistics.median(v[3]) for name, v in variants.items()}
  for name, median in medians.items():
    print(f"{name:>13}: {median * 1e3:8.3f} ms/step (median)")
  norm_median = statistics.median(norm_times)
  print(f"{'3 norms alone':>13}: {norm_median * 1e3:8.3f} ms (median)")
  print(f"ratio with_metrics / plain: {medians['with_metrics'] / medians['plain']:.3f}  "
        f"(plain + 3 norms alone would be {(medians['plain'] + norm_median) / medians['plain']:.3f})")
  print("metrics after the last step:",
        {k: round(float(v), 6) for k, v in gradxform.metrics(variants["with_metrics"][2]).items()})


if __name__ == "__main__":
  main()
