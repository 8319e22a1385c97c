"""Train a small MLP to read handwritten digits with gradxform — the README's demo.

What it shows:

* an optimizer built by chaining transformations: clip the gradients' global norm to 1, then AdamW
  whose learning rate follows a warmup + cosine decay schedule;
* the usual JAX training loop: `optimizer.init(params)` once, then a single `jax.jit`-compiled step
  that computes gradients, calls `optimizer.update` and `gradxform.apply_updates`;
* that the model is plain JAX: the parameters are a dict of arrays, nothing more.

The data is scikit-learn's bundled digits set (1797 8x8 images, no download). With the defaults it
reaches about 97% test accuracy in a few seconds on a laptop CPU:

    python examples/train_digits.py            # progress bar per epoch, then "test accuracy: 0.9xx"
    python examples/train_digits.py --epochs 5 --seed 3 --quiet
"""

import argparse
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from tqdm import tqdm

import gradxform
from _digits import accuracy, batch_indices, init_mlp, load_data, loss_fn

BATCH_SIZE = 64
PEAK_LEARNING_RATE = 1e-2
WEIGHT_DECAY = 1e-4


def make_optimizer(total_steps: int) -> gradxform.GradientTransformation:
  # Warm up from 0 over the first 10% of steps (Adam's early moment estimates are noisy), then decay
  # along a cosine to 0 at the last step. `decay_steps` counts the warmup too, as in optax.
  schedule = gradxform.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=PEAK_LEARNING_RATE,
      warmup_steps=max(1, total_steps // 10),
      decay_steps=total_steps,
  )
  return gradxform.chain(
      gradxform.clip_by_global_norm(1.0),  # guards against the occasional huge gradient
      gradxform.adamw(schedule, weight_decay=WEIGHT_DECAY),
  )


def main(argv: Sequence[str] | None = None) -> float:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=int, default=20, help="passes over the training set")
  parser.add_argument("--seed", type=int, default=0, help="seeds the initialisation and the shuffling")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  args = parser.parse_args(argv)

  data = load_data()
  init_key, shuffle_key = jax.random.split(jax.random.key(args.seed))
  params = init_mlp(init_key)

  steps_per_epoch = len(data.x_train) // BATCH_SIZE
  optimizer = make_optimizer(total_steps=args.epochs * steps_per_epoch)
  opt_state = optimizer.init(params)

  # One compiled function for the whole update. Every batch has the same shape, so it compiles once.
  @jax.jit
  def train_step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = optimizer.update(grads, opt_state, params)  # adamw needs params (weight decay)
    params = gradxform.apply_updates(params, updates)
    return params, opt_state, loss

  for epoch in range(args.epochs):
    batches = batch_indices(jax.random.fold_in(shuffle_key, epoch), len(data.x_train), BATCH_SIZE)
    progress = tqdm(batches, desc=f"epoch {epoch + 1:>2}/{args.epochs}", disable=args.quiet,
                    leave=True, unit="step")
    for idx in progress:
      params, opt_state, loss = train_step(params, opt_state, data.x_train[idx], data.y_train[idx])
      progress.set_postfix(loss=f"{float(loss):.4f}", refresh=False)

  test_accuracy = float(accuracy(params, jnp.asarray(data.x_test), jnp.asarray(data.y_test)))
  print(f"test accuracy: {test_accuracy:.3f}")
  return test_accuracy


if __name__ == "__main__":
  main()
