"""Train an equinox MLP on the handwritten digits with a gradxform optimizer.

What it shows:

* equinox's filtering pattern with gradxform: the optimizer state is built from
  `eqx.filter(model, eqx.is_array)` (the model's arrays; its activation functions and sizes become
  `None`), gradients come from `eqx.filter_value_and_grad`, and `eqx.apply_updates` applies them;
* gradxform passes `None` leaves through, so the updates have `None` exactly where the filtered
  gradients do, with no extra filtering step;
* the optimizer is a plain gradxform chain: clip the gradients' global norm to 1, then AdamW with a
  warmup + cosine learning-rate schedule, inside an `eqx.filter_jit`-compiled step.

The data is scikit-learn's bundled digits set (1797 8x8 images, no download). Needs the `interop` and
`examples` extras (`pip install -e ".[interop,examples]"`):

    python examples/equinox_mlp.py             # progress bar per epoch, then "test accuracy: 0.9xx"
    python examples/equinox_mlp.py --epochs 3 --seed 1 --quiet
"""

import argparse
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from tqdm import tqdm

import gradxform
from _digits import LAYER_SIZES, batch_indices, load_data

BATCH_SIZE = 64
PEAK_LEARNING_RATE = 1e-2
WEIGHT_DECAY = 1e-4


def make_model(key: jax.Array) -> eqx.nn.MLP:
  # eqx.nn.MLP has one width for every hidden layer: 64 -> 128 -> 128 -> 10 here (the plain-JAX
  # examples' second hidden layer has 64 units). Its `activation` field is a function, not an array.
  return eqx.nn.MLP(in_size=LAYER_SIZES[0], out_size=LAYER_SIZES[-1], width_size=LAYER_SIZES[1],
                    depth=len(LAYER_SIZES) - 2, activation=jax.nn.relu, key=key)


def make_optimizer(total_steps: int) -> gradxform.GradientTransformation:
  schedule = gradxform.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=PEAK_LEARNING_RATE, warmup_steps=max(1, total_steps // 10),
      decay_steps=total_steps)
  return gradxform.chain(
      gradxform.clip_by_global_norm(1.0),
      gradxform.adamw(schedule, weight_decay=WEIGHT_DECAY),
  )


@eqx.filter_value_and_grad
def loss_fn(model: eqx.nn.MLP, x: jax.Array, y: jax.Array) -> jax.Array:
  log_probs = jax.nn.log_softmax(jax.vmap(model)(x))  # equinox layers take one example: vmap the batch
  return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))


@eqx.filter_jit
def train_step(model, opt_state, optimizer, x, y):
  # `optimizer` is not an array, so filter_jit treats it as static: it is hashable, and an equal one
  # built again would not recompile the step.
  loss, grads = loss_fn(model, x, y)  # grads: the model's structure, None for non-arrays
  updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_array))
  return eqx.apply_updates(model, updates), opt_state, loss


@eqx.filter_jit
def accuracy(model: eqx.nn.MLP, x: jax.Array, y: jax.Array) -> jax.Array:
  return jnp.mean((jnp.argmax(jax.vmap(model)(x), axis=1) == y).astype(jnp.float32))


def main(argv: Sequence[str] | None = None) -> float:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=int, default=20, help="passes over the training set")
  parser.add_argument("--seed", type=int, default=0, help="seeds the initialisation and the shuffling")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  args = parser.parse_args(argv)

  data = load_data()
  init_key, shuffle_key = jax.random.split(jax.random.key(args.seed))
  model = make_model(init_key)
  steps_per_epoch = len(data.x_train) // BATCH_SIZE
  optimizer = make_optimizer(args.epochs * steps_per_epoch)
  opt_state = optimizer.init(eqx.filter(model, eqx.is_array))

  for epoch in range(args.epochs):
    batches = batch_indices(jax.random.fold_in(shuffle_key, epoch), len(data.x_train), BATCH_SIZE)
    progress = tqdm(batches, desc=f"epoch {epoch + 1:>2}/{args.epochs}", disable=args.quiet,
                    leave=True, unit="step")
    for idx in progress:
      model, opt_state, loss = train_step(model, opt_state, optimizer,
                                          jnp.asarray(data.x_train[idx]), jnp.asarray(data.y_train[idx]))
      progress.set_postfix(loss=f"{float(loss):.4f}", refresh=False)

  test_accuracy = float(accuracy(model, jnp.asarray(data.x_test), jnp.asarray(data.y_test)))
  print(f"test accuracy: {test_accuracy:.3f}")
  return test_accuracy


if __name__ == "__main__":
  main()
