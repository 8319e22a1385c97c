"""Connectionist temporal classification (Graves et al., 2006): the CTC loss and its forward variables.

The forward recursion runs in log space with `log_epsilon` standing in for log(0), so every quantity
stays finite and gradients never meet inf - inf. The alignment states of a label sequence of length
N are kept as two arrays per step: "blank" states phi[0..N] (a blank after n labels) and "emit" states
emit[0..N-1] (the n-th label being emitted).
"""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp

from gradxform import _numerics
from gradxform.losses import _checks

__all__ = ["ctc_loss_with_forward_probs", "ctc_loss"]


def _check_inputs(fn, logits, logit_paddings, labels, label_paddings, blank_id):
  _checks.rank(fn, "logits", logits, 3, "[batch, frames, classes]")
  _checks.rank(fn, "labels", labels, 2, "[batch, label positions]")
  _checks.same_shape(fn, "labels", labels, "label_paddings", label_paddings)
  if logit_paddings.shape != logits.shape[:2]:
    raise _checks.LossShapeError(
        f"{fn}: `logit_paddings` must have shape [batch, frames] = {list(logits.shape[:2])} to match "
        f"`logits` {_checks.describe(logits)}, got {_checks.describe(logit_paddings)}")
  if labels.shape[0] != logits.shape[0]:
    raise _checks.LossShapeError(
        f"{fn}: `labels` {_checks.describe(labels)} and `logits` {_checks.describe(logits)} must have "
        "the same batch size")
  if logits.shape[1] == 0:
    raise _checks.LossShapeError(f"{fn}: `logits` {_checks.describe(logits)} has no frames")
  try:
    blank = operator.index(blank_id)
  except TypeError:
    raise _checks.LossArgumentError(
        f"{fn}: `blank_id` must be a Python int, got {type(blank_id).__name__} {blank_id!r}") from None
  if not 0 <= blank < logits.shape[2]:
    raise _checks.LossArgumentError(
        f"{fn}: `blank_id`={blank_id} is not a class of `logits` {_checks.describe(logits)} "
        f"(must be in [0, {logits.shape[2]}))")


def _log_add_to_phi(phi, added):
  """phi[:, 1:] += added in log space (phi[:, 0], no label read yet, has no predecessor)."""
  return jnp.concatenate([phi[:, :1], jnp.logaddexp(phi[:, 1:], added)], axis=-1)


def ctc_loss_with_forward_probs(
    logits: jax.typing.ArrayLike,
    logit_paddings: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    label_paddings: jax.typing.ArrayLike,
    *,
    blank_id: int = 0,
    log_epsilon: jax.typing.ArrayLike = -1e5,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""CTC loss, with the log forward probabilities of the blank and label states.

  The forward variables are alpha_blank(t, n), the probability of having read n labels and being in
  a blank at frame t, and alpha_label(t, n), that of emitting label n at frame t; the loss is
  -log alpha_blank(T, N) after the final epsilon transition (Graves et al., 2006).

  Args:
    logits: [B, T, K] logits per frame; K counts the blank class.
    logit_paddings: [B, T], 1.0 for padded frames and 0.0 for real ones.
    labels: [B, N] integer label sequences, right-padded.
    label_paddings: [B, N], 1.0 for padding and 0.0 for real labels (zeros then ones in each row).
    blank_id: class index of the blank symbol.
    log_epsilon: finite stand-in for log(0).

  Returns:
    `(loss, logalpha_blank, logalpha_label)`: the [B] per-sequence losses and the [T, B, N+1] and
    [T, B, N] log forward probabilities.
  """
  fn = "ctc_loss_with_forward_probs"
  logits, logit_paddings = jnp.asarray(logits), jnp.asarray(logit_paddings)
  labels, label_paddings = jnp.asarray(labels), jnp.asarray(label_paddings)
  _check_inputs(fn, logits, logit_paddings, labels, label_paddings, blank_id)
  return _forward(logits, logit_paddings, labels, label_paddings, blank_id, log_epsilon)


def _forward(logits, logit_paddings, labels, label_paddings, blank_id, log_epsilon):
  batch, _, num_classes = logits.shape
  max_labels = labels.shape[1]
  log_probs = jax.nn.log_softmax(logits)
  label_lengths = max_labels - jnp.sum(label_paddings, axis=1).astype(jnp.int32)

  # repeated[b, n]: label n equals label n + 1, so the path must pass through a blank between them.
  repeated = (labels[:, :-1] == labels[:, 1:]).astype(jnp.float32)
  repeated = jnp.pad(repeated, ((0, 0), (0, 1)))

  # Time-major inputs for the scan: [T, B, 1] blank and [T, B, N] label log-probabilities.
  blank_log_probs = jnp.transpose(log_probs[:, :, blank_id:blank_id + 1], (1, 0, 2))
  label_one_hot = jax.nn.one_hot(labels, num_classes=num_classes)
  label_log_probs = jnp.einsum("btk,bnk->btn", *_numerics.promote(log_probs, label_one_hot))
  label_log_probs = jnp.transpose(label_log_probs, (1, 0, 2))

  phi_start = _numerics.mul(jnp.ones((batch, max_labels + 1)), log_epsilon).at[:, 0].set(0.0)
  emit_start = _numerics.mul(jnp.ones((batch, max_labels)), log_epsilon)
  block_repeat = _numerics.mul(log_epsilon, repeated)  # forbids emit -> blank-skip into a repeat
  block_new = _numerics.mul(log_epsilon, 1.0 - repeated)  # emit -> blank -> same label only for repeats

  def step(carry, frame):
    phi, emit = carry
    emit_log_prob, blank_log_prob, pad = frame
    # Epsilon transition: finishing label n also means being "after n labels" (unless n repeats).
    phi_eps = _log_add_to_phi(phi, _numerics.add(emit, block_repeat))
    new_emit = jnp.logaddexp(_numerics.add(phi_eps[:, :-1], emit_log_prob),
                             _numerics.add(emit, emit_log_prob))
    new_phi = _numerics.add(phi_eps, blank_log_prob)
    new_phi = _log_add_to_phi(new_phi, _numerics.add(_numerics.add(emit, blank_log_prob), block_new))
    # Padded frames leave the state as it was.
    pad = pad.reshape((batch, 1))
    keep = _numerics.sub(1.0, pad)
    new_emit = _numerics.add(_numerics.mul(pad, emit), _numerics.mul(keep, new_emit))
    new_phi = _numerics.add(_numerics.mul(pad, phi), _numerics.mul(keep, new_phi))
    return (new_phi, new_emit), (new_phi, new_emit)

  frames = (label_log_probs, blank_log_probs, logit_paddings.transpose((1, 0)))
  _, (log_alpha_phi, log_alpha_emit) = jax.lax.scan(step, (phi_start, emit_start), frames)

  # The last frame still owes its closing epsilon transition.
  final_phi = _log_add_to_phi(log_alpha_phi[-1], log_alpha_emit[-1])
  log_alpha_phi = log_alpha_phi.at[-1].set(final_phi)
  at_length = jax.nn.one_hot(label_lengths, num_classes=max_labels + 1)
  loss = -jnp.einsum("bn,bn->b", *_numerics.promote(final_phi, at_length))
  return loss, log_alpha_phi, log_alpha_emit


def ctc_loss(
    logits: jax.typing.ArrayLike,
    logit_paddings: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    label_paddings: jax.typing.ArrayLike,
    *,
    blank_id: int = 0,
    log_epsilon: jax.typing.ArrayLike = -1e5,
) -> jax.Array:
  """CTC loss per sequence: -log of the total probability of the alignments of `labels`.

  See `ctc_loss_with_forward_probs` for the recursion.

  Args:
    logits: [B, T, K] logits per frame; K counts the blank class.
    logit_paddings: [B, T], 1.0 for padded frames and 0.0 for real ones.
    labels: [B, N] integer label sequences, right-padded.
    label_paddings: [B, N], 1.0 for padding and 0.0 for real labels (zeros then ones in each row).
    blank_id: class index of the blank symbol.
    log_epsilon: finite stand-in for log(0).

  Returns:
    the [B] per-sequence losses.
  """
  fn = "ctc_loss"
  logits, logit_paddings = jnp.asarray(logits), jnp.asarray(logit_paddings)
  labels, label_paddings = jnp.asarray(labels), jnp.asarray(label_paddings)
  _check_inputs(fn, logits, logit_paddings, labels, label_paddings, blank_id)
  return _forward(logits, logit_paddings, labels, label_paddings, blank_id, log_epsilon)[0]
