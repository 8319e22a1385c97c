"""Find a learning rate for the digits MLP with a learning-rate range test.

The test (Smith, "Cyclical Learning Rates for Training Neural Networks", 2017) trains from a fresh
initialisation for a hundred-odd minibatch steps while the learning rate grows exponentially from tiny
to far too large, and records the loss at each step. The loss first stays flat (too small to matter),
then falls (useful), then blows up (too large). A good learning rate sits where the loss falls fastest.

What it shows:

* `gradxform.inject_hyperparams(gradxform.adam)(learning_rate=...)` keeps the learning rate in the
  optimizer state, and `gradxform.set_hyperparams(state, learning_rate=lr)` changes it before every step
  without recompiling the jitted step (the script counts the traces: one);
* `gradxform.hyperparams(state)` reads back the learning rate each step actually used;
* the loss against the learning rate, smoothed by a bias-corrected exponential moving average, plotted
  to a PNG (log-scale learning rate), with the suggestion marked.

The suggestion is the learning rate at the steepest descent of the smoothed loss (per unit of log
learning rate), searched only below the loss's minimum, where the curve is still trustworthy. With the
defaults it lands near the 1e-3..1e-2 that the other digits examples use for Adam.

    python examples/lr_finder.py --out lr_finder.png       # prints "suggested learning rate: ..."
    python examples/lr_finder.py --steps 60 --quiet
"""

import argparse
import math
from collections.abc import Sequence

import jax
import numpy as np
from matplotlib.figure import Figure  # the object-oriented API: no pyplot, renders with Agg
from tqdm import tqdm

import gradxform
from _digits import batch_indices, init_mlp, load_data, loss_fn

BATCH_SIZE = 64
SMOOTHING = 0.9      # EMA factor of the loss: about the last ten steps
DIVERGENCE = 4.0     # stop once the smoothed loss exceeds this multiple of its best value


def learning_rates(min_lr: float, max_lr: float, steps: int) -> np.ndarray:
  """`steps` learning rates from min_lr to max_lr, evenly spaced in log scale."""
  return np.geomspace(min_lr, max_lr, steps)


def smooth(losses: Sequence[float], beta: float = SMOOTHING) -> np.ndarray:
  """Exponential moving average with Adam-style bias correction (so the first values are not ~0)."""
  average, out = 0.0, []
  for i, loss in enumerate(losses, start=1):
    average = beta * average + (1 - beta) * loss
    out.append(average / (1 - beta**i))
  return np.asarray(out)


def suggest(lrs: np.ndarray, smoothed: np.ndarray, skip: int = 10) -> float:
  """The learning rate where the smoothed loss falls fastest per unit of log(lr), before its minimum.

  The first `skip` points are left out: the moving average is still settling there.
  """
  end = int(np.argmin(smoothed)) + 1
  if end - skip < 3:
    raise ValueError("the loss reached its minimum too early: lower --min-lr or add --steps")
  slopes = np.gradient(smoothed[skip:end], np.log(lrs[skip:end]))
  return float(lrs[skip + int(np.argmin(slopes))])


def plot(lrs, losses, smoothed, suggestion, path: str) -> None:
  fig = Figure(figsize=(7, 4.5), layout="constrained")
  ax = fig.subplots()
  ax.plot(lrs, losses, color="0.75", linewidth=1, label="loss per step")
  ax.plot(lrs, smoothed, color="C0", linewidth=2, label=f"smoothed (EMA {SMOOTHING})")
  ax.axvline(suggestion, color="C3", linestyle="--", label=f"suggestion {suggestion:.2g}")
  ax.set_xscale("log")
  # Keep the blow-up at the end from squashing the interesting part of the curve.
  ax.set_ylim(0.9 * float(np.min(smoothed)), 1.5 * float(smoothed[0]))
  ax.set_xlabel("learning rate (Adam)")
  ax.set_ylabel("training loss (cross-entropy)")
  ax.set_title("Learning-rate range test: MLP on scikit-learn digits")
  ax.legend()
  fig.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> float:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=100, help="minibatch steps in the sweep")
  parser.add_argument("--min-lr", type=float, default=1e-5, help="the first learning rate")
  parser.add_argument("--max-lr", type=float, default=1.0, help="the last learning rate")
  parser.add_argument("--seed", type=int, default=0, help="seeds the initialisation and the shuffling")
  parser.add_argument("--out", default="lr_finder.png", help="where to save the plot")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  args = parser.parse_args(argv)

  data = load_data()
  init_key, shuffle_key = jax.random.split(jax.random.key(args.seed))
  params = init_mlp(init_key)
  # The learning rate lives in the state (float32, like the params), not in the compiled step.
  optimizer = gradxform.inject_hyperparams(gradxform.adam)(learning_rate=args.min_lr)
  opt_state = optimizer.init(params)

  traces = 0

  @jax.jit
  def train_step(params, opt_state, x, y):
    nonlocal traces
    traces += 1  # runs only while jax traces the function, so it counts compilations
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return gradxform.apply_updates(params, updates), opt_state, loss

  steps_per_epoch = len(data.x_train) // BATCH_SIZE
  batches = np.concatenate([  # enough shuffled epochs for the sweep, one row per step
      batch_indices(jax.random.fold_in(shuffle_key, epoch), len(data.x_train), BATCH_SIZE)
      for epoch in range(math.ceil(args.steps / steps_per_epoch))])

  used_lrs, losses = [], []
  progress = tqdm(learning_rates(args.min_lr, args.max_lr, args.steps), desc="lr range test",
                  disable=args.quiet, unit="step")
  for step, lr in enumerate(progress):
    opt_state = gradxform.set_hyperparams(opt_state, learning_rate=lr)
    idx = batches[step]
    params, opt_state, loss = train_step(params, opt_state, data.x_train[idx], data.y_train[idx])
    used_lrs.append(float(gradxform.hyperparams(opt_state)["learning_rate"]))
    losses.append(float(loss))
    progress.set_postfix(lr=f"{lr:.2e}", loss=f"{losses[-1]:.4f}", refresh=False)
    smoothed = smooth(losses)
    if not math.isfinite(losses[-1]) or smoothed[-1] > DIVERGENCE * float(np.min(smoothed)):
      break  # diverged: the rest of the sweep would only be noise
  progress.close()

  lrs, smoothed = np.asarray(used_lrs), smooth(losses)
  suggestion = suggest(lrs, smoothed)
  best = int(np.argmin(smoothed))
  print(f"swept {len(lrs)} steps, learning rate {lrs[0]:.1e} to {lrs[-1]:.1e} "
        f"(traces of the train step: {traces})")
  print(f"lowest smoothed loss {smoothed[best]:.4f} at learning rate {lrs[best]:.2e}")
  plot(lrs, losses, smoothed, suggestion, args.out)
  print(f"plot saved to {args.out}")
  print(f"suggested learning rate: {suggestion:.2e}")
  return suggestion


if __name__ == "__main__":
  main()
