"""Compare classic optimizers on the same problem: an MLP reading handwritten digits.

Every optimizer starts from the same initial parameters and sees the same minibatches in the same
order, so the only difference between the runs is the update rule. The script prints a table of final
training loss and test accuracy, and saves the training-loss curves to a PNG:

    python examples/compare_optimizers.py --out compare_optimizers.png

Each optimizer is a gradxform alias with optax's name and signature; the learning rates below are
reasonable defaults for this problem, not tuned per optimizer to the last digit. (Adadelta is the odd one:
its step size adapts from the ratio of two running averages, so its "learning rate" is a multiplier
around 1, not a step size.)

Here a whole epoch is one compiled call: the minibatch steps run inside `jax.lax.scan`, which is the
fast way to train small models when nothing has to happen on the host between steps.
"""

import argparse
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure  # the object-oriented API: no pyplot, no GUI backend needed
from tqdm import tqdm

import gradxform
from _digits import accuracy, batch_indices, init_mlp, load_data, loss_fn

BATCH_SIZE = 32

OPTIMIZERS = {
    "sgd": gradxform.sgd(learning_rate=0.05),
    "sgd+momentum": gradxform.sgd(learning_rate=0.01, momentum=0.9),
    "sgd+nesterov": gradxform.sgd(learning_rate=0.01, momentum=0.9, nesterov=True),
    "adagrad": gradxform.adagrad(learning_rate=0.05),
    "rmsprop": gradxform.rmsprop(learning_rate=1e-3),
    "adadelta": gradxform.adadelta(learning_rate=1.0),
    "adam": gradxform.adam(learning_rate=3e-3),
    "adamw": gradxform.adamw(learning_rate=3e-3, weight_decay=1e-2),
}


def train(optimizer, params, data, key, epochs):
  """Trains `params` with `optimizer`; returns the final params and the mean training loss per epoch."""

  # One compiled call per epoch. The training set is an argument (not a constant baked into the
  # program), and each scan step gathers its minibatch from it on the device.
  @jax.jit
  def run_epoch(params, opt_state, x, y, batches):
    def step(carry, idx):
      params, opt_state = carry
      loss, grads = jax.value_and_grad(loss_fn)(params, x[idx], y[idx])
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (gradxform.apply_updates(params, updates), opt_state), loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), batches)
    return params, opt_state, jnp.mean(losses)

  x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  opt_state = optimizer.init(params)
  epoch_losses = []
  for epoch in range(epochs):
    batches = batch_indices(jax.random.fold_in(key, epoch), len(data.x_train), BATCH_SIZE)
    params, opt_state, loss = run_epoch(params, opt_state, x_train, y_train, batches)
    epoch_losses.append(float(loss))
  return params, epoch_losses


def plot(curves: dict[str, list[float]], path: str) -> None:
  fig = Figure(figsize=(7, 4.5), layout="constrained")
  ax = fig.subplots()
  for name, losses in curves.items():
    ax.plot(np.arange(1, len(losses) + 1), losses, marker="o", markersize=3, label=name)
  ax.set_yscale("log")
  ax.set_xlabel("epoch")
  ax.set_ylabel("mean training loss (cross-entropy)")
  ax.set_title("MLP on scikit-learn digits: same init, same batches")
  ax.legend()
  fig.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=int, default=10, help="passes over the training set")
  parser.add_argument("--seed", type=int, default=0, help="seeds the initialisation and the shuffling")
  parser.add_argument("--out", default="compare_optimizers.png", help="where to save the loss curves")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  args = parser.parse_args(argv)

  data = load_data()
  init_key, shuffle_key = jax.random.split(jax.random.key(args.seed))
  init_params = init_mlp(init_key)
  x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)

  curves, accuracies = {}, {}
  for name in tqdm(OPTIMIZERS, desc="optimizers", disable=args.quiet):
    params, curves[name] = train(OPTIMIZERS[name], init_params, data, shuffle_key, args.epochs)
    accuracies[name] = float(accuracy(params, x_test, y_test))

  print(f"\n{'optimizer':<14}{'final train loss':>18}{'test accuracy':>15}")
  for name in OPTIMIZERS:
    print(f"{name:<14}{curves[name][-1]:>18.4f}{accuracies[name]:>15.3f}")
  plot(curves, args.out)
  print(f"\nloss curves saved to {args.out}")
  return accuracies


if __name__ == "__main__":
  main()
