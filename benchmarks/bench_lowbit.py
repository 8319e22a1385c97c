"""Low-bit Adam state: state bytes, jitted step time and digits accuracy against optax.adam.

For a tree of 20M float32 params in 4 leaves (quick: 4M for the timing; state bytes are always for 20M,
computed with jax.eval_shape) it prints, for optax.adam, gradxform.adam, adam_bf16 and adam_8bit:
  * state bytes and their ratio to optax.adam's;
  * the jitted train step (update + apply_updates, buffers donated): median of interleaved runs, as a
    ratio to optax.adam's;
and for the digits softmax regression of tests/convergence.py (150 full-batch steps, lr 0.05; adam_8bit
with min_quantized_size=0, since the 640-element weight is below the default 4096) the held-out accuracy,
final loss and state bytes of each.

  python benchmarks/bench_lowbit.py            # 20M params timed, 15 repeats
  python benchmarks/bench_lowbit.py --quick    # 4M params timed, 5 repeats: under a minute
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import optax

import gradxform
from gradxform import _lowbit as lowbit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from convergence import train_digits  # tests/convergence.py: the suite's digits harness


def optimizers(min_quantized_size: int = 4096) -> dict:
  return {"optax.adam": (optax, optax.adam(1e-3)), "gradxform.adam": (gradxform, gradxform.adam(1e-3)),
          "adam_bf16": (gradxform, lowbit.adam_bf16(1e-3)),
          "adam_8bit": (gradxform, lowbit.adam_8bit(1e-3, min_quantized_size=min_quantized_size))}


def make_tree(n_params: int) -> dict:
  keys = jax.random.split(jax.random.key(0), 4)
  return {f"w{i}": jax.random.normal(k, (n_params // 4,), jnp.float32) * 0.02 for i, k in enumerate(keys)}


def state_bytes(tx, params) -> int:
  abstract = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(jax.eval_shape(tx.init, abstract)))


def make_step(lib, tx):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return lib.apply_updates(params, updates), state
  return jax.jit(step, donate_argnums=(0, 1))


def time_steps(params, grads, txs: dict, repeats: int) -> dict:
  """Median seconds per jitted step of each optimizer, the optimizers interleaved within each repeat."""
  runners = {}
  for name, (lib, tx) in txs.items():
    p = jax.tree.map(jnp.copy, params)
    state = tx.init(p)
    compiled = make_step(lib, tx).lower(p, state, grads).compile()
    p, state = compiled(p, state, grads)  # warm-up
    jax.block_until_ready(p)
    runners[name] = [compiled, p, state]
  times = {name: [] for name in runners}
  for _ in range(repeats):
    for name, runner in runners.items():
      compiled, p, state = runner
      start = time.perf_counter()
      p, state = compiled(p, state, grads)
      jax.block_until_ready((p, state))
      times[name].append(time.perf_counter() - start)
      runner[1], runner[2] = p, state
  return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true", help="4M params timed, 5 repeats")
  parser.add_argument("--repeats", type=int, default=None)
  args = parser.parse_args(argv)
  repeats = args.repeats or (5 if args.quick else 15)
  timed = 4_000_000 if args.quick else 20_000_000
  print(f"jax {jax.__version__}, devices {jax.devices()}, optax {optax.__version__}, quick={args.quick}")

  bytes_params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype),
                              {f"w{i}": jnp.zeros((5_000_000,), jnp.float32) for i in range(4)})
  params = make_tree(timed)
  grads = jax.tree.map(lambda p: p * 0.5 + 0.01, params)
  txs = optimizers()
  medians = time_steps(params, grads, txs, repeats)
  reference_bytes = state_bytes(txs["optax.adam"][1], bytes_params)
  print(f"\n20M float32 params in 4 leaves (step timed on {timed / 1e6:.0f}M, median of {repeats} interleaved)")
  header = f"{'optimizer':16} {'state MB':>9} {'bytes/optax':>11} | {'step ms':>8} {'step/optax':>10}"
  print(header + "\n" + "-" * len(header))
  for name, (_, tx) in txs.items():
    size = state_bytes(tx, bytes_params)
    print(f"{name:16} {size / 2**20:9.1f} {size / reference_bytes:11.3f} | {medians[name] * 1e3:8.1f} "
          f"{medians[name] / medians['optax.adam']:10.2f}")

  print("\ndigits softmax regression (650 params; adam_8bit with min_quantized_size=0), 150 steps, lr 0.05")
  header = f"{'optimizer':16} {'state B':>8} {'bytes/optax':>11} | {'accuracy':>8} {'final loss':>10}"
  print(header + "\n" + "-" * len(header))
  digits_params = {"w": jnp.zeros((64, 10), jnp.float32), "b": jnp.zeros((10,), jnp.float32)}
  digits_txs = {"optax.adam": optax.adam(0.05), "gradxform.adam": gradxform.adam(0.05),
                "adam_bf16": lowbit.adam_bf16(0.05), "adam_8bit": lowbit.adam_8bit(0.05, min_quantized_size=0)}
  reference_bytes = state_bytes(digits_txs["optax.adam"], digits_params)
  for name, tx in digits_txs.items():
    _, last, accuracy = train_digits(tx)
    size = state_bytes(tx, digits_params)
    print(f"{name:16} {size:8d} {size / reference_bytes:11.3f} | {accuracy:8.4f} {last:10.4f}")


if __name__ == "__main__":
  main()
