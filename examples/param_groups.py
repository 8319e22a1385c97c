"""Parameter groups and hyperparameters set by name: the digits MLP with per-layer settings.

What it shows:

* `gradxform.param_groups(gradxform.adamw, groups, **defaults)`: the first layer is frozen (zero
  updates, no optimizer state), the other biases get no weight decay (first match wins), everything
  else uses the defaults;
* `gradxform.describe(optimizer, params)`: which group each leaf fell into, its hyperparameters and the
  optimizer-state bytes it costs;
* `gradxform.set_hyperparams(state, **{"group1/learning_rate": ...})`: a manual learning-rate drop halfway
  through training, on the jitted step, without recompiling it (the script counts the traces).

    python examples/param_groups.py            # progress bar, the table, then "test accuracy: 0.9xx"
    python examples/param_groups.py --epochs 4 --quiet
"""

import argparse
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from tqdm import tqdm

import gradxform
from _digits import accuracy, batch_indices, init_mlp, load_data, loss_fn

BATCH_SIZE = 64


def make_optimizer() -> gradxform.GradientTransformation:
  return gradxform.param_groups(
      gradxform.adamw,
      [
          gradxform.group(r"^dense_0/", frozen=True),     # group 0: a frozen (random-feature) first layer
          gradxform.group(r"/b$", weight_decay=0.0),       # group 1: the other biases, no decay
      ],
      learning_rate=3e-3, weight_decay=1e-3)             # the defaults: every other leaf


def main(argv: Sequence[str] | None = None) -> float:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=int, default=12, help="passes over the training set")
  parser.add_argument("--seed", type=int, default=0, help="seeds the initialisation and the shuffling")
  parser.add_argument("--quiet", action="store_true", help="no progress bar, no table")
  args = parser.parse_args(argv)

  data = load_data()
  init_key, shuffle_key = jax.random.split(jax.random.key(args.seed))
  params = init_mlp(init_key)
  optimizer = make_optimizer()
  opt_state = optimizer.init(params)
  if not args.quiet:
    print(gradxform.describe(optimizer, params))

  traces = 0

  @jax.jit
  def train_step(params, opt_state, x, y):
    nonlocal traces
    traces += 1  # runs only when jax traces the function
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return gradxform.apply_updates(params, updates), opt_state, loss

  for epoch in range(args.epochs):
    if epoch == args.epochs // 2:
      # Drop the learning rate of the default group and the biases tenfold; the step does not retrace.
      rates = {name: value / 10 for name, value in gradxform.hyperparams(opt_state).items()
               if name.endswith("learning_rate")}  # group1/learning_rate, default/learning_rate
      opt_state = gradxform.set_hyperparams(opt_state, **rates)
    batches = batch_indices(jax.random.fold_in(shuffle_key, epoch), len(data.x_train), BATCH_SIZE)
    progress = tqdm(batches, desc=f"epoch {epoch + 1:>2}/{args.epochs}", disable=args.quiet, unit="step")
    for idx in progress:
      params, opt_state, loss = train_step(params, opt_state, data.x_train[idx], data.y_train[idx])
      progress.set_postfix(loss=f"{float(loss):.4f}", refresh=False)

  test_accuracy = float(accuracy(params, jnp.asarray(data.x_test), jnp.asarray(data.y_test)))
  print(f"traces of the train step: {traces}")
  print(f"test accuracy: {test_accuracy:.3f}")
  return test_accuracy


if __name__ == "__main__":
  main()
