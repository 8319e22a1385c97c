"""Train a flax NNX MLP on the handwritten digits with a gradxform optimizer.

What it shows:

* a gradxform optimizer is a drop-in `tx` for `nnx.Optimizer(model, tx, wrt=nnx.Param)`: flax calls its
  `init` on the model's parameters and its `update` in `optimizer.update(model, grads)`;
* the optimizer is a chain: clip the gradients' global norm to 1, then AdamW with a warmup + cosine
  learning-rate schedule and no weight decay on the biases (`gradxform.masks.decay_mask`);
* the NNX training loop: a `nnx.jit`-compiled step that takes `nnx.value_and_grad` of the loss and
  updates the model and the optimizer in place.

The data is scikit-learn's bundled digits set (1797 8x8 images, no download). Needs the `interop` and
`examples` extras (`pip install -e ".[interop,examples]"`):

    python examples/flax_nnx_mlp.py            # progress bar per epoch, then "test accuracy: 0.9xx"
    python examples/flax_nnx_mlp.py --epochs 3 --seed 1 --quiet
"""

import argparse
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from tqdm import tqdm

import gradxform
from _digits import LAYER_SIZES, batch_indices, load_data

BATCH_SIZE = 64
PEAK_LEARNING_RATE = 1e-2
WEIGHT_DECAY = 1e-4


class MLP(nnx.Module):
  """Dense layers with ReLUs between them: 64 pixels in, ten logits out."""

  def __init__(self, sizes: Sequence[int], *, rngs: nnx.Rngs):
    # He initialisation (variance 2 / fan_in) suits ReLU layers; flax's default is LeCun's.
    init = nnx.initializers.he_normal()
    self.layers = nnx.List([nnx.Linear(fan_in, fan_out, kernel_init=init, rngs=rngs)
                            for fan_in, fan_out in zip(sizes[:-1], sizes[1:])])

  def __call__(self, x: jax.Array) -> jax.Array:
    for layer in self.layers[:-1]:
      x = jax.nn.relu(layer(x))
    return self.layers[-1](x)


def make_optimizer(total_steps: int) -> gradxform.GradientTransformation:
  schedule = gradxform.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=PEAK_LEARNING_RATE, warmup_steps=max(1, total_steps // 10),
      decay_steps=total_steps)
  return gradxform.chain(
      gradxform.clip_by_global_norm(1.0),
      # decay_mask is True for leaves with ndim >= 2: the kernels decay, the biases do not.
      gradxform.adamw(schedule, weight_decay=WEIGHT_DECAY, mask=gradxform.masks.decay_mask),
  )


def loss_fn(model: MLP, x: jax.Array, y: jax.Array) -> jax.Array:
  log_probs = jax.nn.log_softmax(model(x))
  return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))


@nnx.jit
def train_step(model: MLP, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> jax.Array:
  loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
  optimizer.update(model, grads)  # gradxform's update, then apply_updates, on the nnx.Param leaves
  return loss


@nnx.jit
def accuracy(model: MLP, x: jax.Array, y: jax.Array) -> jax.Array:
  return jnp.mean((jnp.argmax(model(x), axis=1) == y).astype(jnp.float32))


def main(argv: Sequence[str] | None = None) -> float:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=int, default=20, help="passes over the training set")
  parser.add_argument("--seed", type=int, default=0, help="seeds the initialisation and the shuffling")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  args = parser.parse_args(argv)

  data = load_data()
  model = MLP(LAYER_SIZES, rngs=nnx.Rngs(args.seed))
  steps_per_epoch = len(data.x_train) // BATCH_SIZE
  optimizer = nnx.Optimizer(model, make_optimizer(args.epochs * steps_per_epoch), wrt=nnx.Param)

  shuffle_key = jax.random.key(args.seed + 1)
  for epoch in range(args.epochs):
    batches = batch_indices(jax.random.fold_in(shuffle_key, epoch), len(data.x_train), BATCH_SIZE)
    progress = tqdm(batches, desc=f"epoch {epoch + 1:>2}/{args.epochs}", disable=args.quiet,
                    leave=True, unit="step")
    for idx in progress:
      loss = train_step(model, optimizer, jnp.asarray(data.x_train[idx]), jnp.asarray(data.y_train[idx]))
      progress.set_postfix(loss=f"{float(loss):.4f}", refresh=False)

  test_accuracy = float(accuracy(model, jnp.asarray(data.x_test), jnp.asarray(data.y_test)))
  print(f"test accuracy: {test_accuracy:.3f}")
  return test_accuracy


if __name__ == "__main__":
  main()
