"""gradxform inside the JAX ecosystem: flax (NNX and linen), equinox, orbax and optax.

Each test is a real, small training run (a tiny MLP on a fixed regression batch, a few jitted steps) that
checks the loss goes down and, where a reference exists, that the result equals optax's. The flax,
equinox and orbax sections skip when the `interop` extra is not installed; in CI it is.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform
from equivalence import canonical

STEPS = 8

# One fixed regression batch: y = sum of the four inputs, plus a little curvature.
X = jax.random.normal(jax.random.key(1), (32, 4), jnp.float32)
Y = jnp.sum(X, axis=1, keepdims=True) + 0.1 * X[:, :1] ** 2


def _assert_decreasing(losses):
  assert all(np.isfinite(losses)), losses
  assert losses[-1] < 0.7 * losses[0], f"the loss did not go down: {losses}"


# ----------------------------------------------------------------------------------------------
# flax NNX: nnx.Optimizer(model, tx, wrt=nnx.Param), optimizer.update(model, grads).


def _nnx_mlp():
  nnx = pytest.importorskip("flax.nnx")

  class MLP(nnx.Module):

    def __init__(self, rngs):
      self.hidden = nnx.Linear(4, 16, rngs=rngs)
      self.out = nnx.Linear(16, 1, rngs=rngs)
      self.calls = nnx.Variable(jnp.array(0, jnp.int32))  # not a Param: not in the optimizer's state

    def __call__(self, x):
      self.calls[...] += 1
      return self.out(jax.nn.relu(self.hidden(x)))

  return nnx, MLP(nnx.Rngs(0))


def test_flax_nnx_optimizer_trains():
  nnx, model = _nnx_mlp()
  optimizer = nnx.Optimizer(model, gradxform.adamw(1e-2, weight_decay=1e-4), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(train_step(model, optimizer, X, Y)) for _ in range(STEPS)]
  _assert_decreasing(losses)
  assert int(model.calls[...]) == STEPS
  assert int(optimizer.step[...]) == STEPS
  # The state is gradxform's (chain of scale_by_adam, add_decayed_weights, scale_by_learning_rate),
  # stored by flax as variables; its count is int32 and advanced once per step.
  adam_state = optimizer.opt_state[0]
  assert type(adam_state).__name__ == "ScaleByAdamState"
  assert adam_state.count[...].dtype == jnp.int32 and int(adam_state.count[...]) == STEPS


def test_flax_nnx_optimizer_passes_extra_args():
  # optimizer.update(model, grads, value=loss) forwards `value` to tx.update: Polyak's step size uses it.
  nnx, model = _nnx_mlp()
  optimizer = nnx.Optimizer(model, gradxform.polyak_sgd(max_learning_rate=0.05), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads, value=loss)
    return loss

  _assert_decreasing([float(train_step(model, optimizer, X, Y)) for _ in range(STEPS)])


# ----------------------------------------------------------------------------------------------
# flax linen: TrainState.create(..., tx=gradxform.chain(...)) and apply_gradients, equal to optax.


def _linen_run(tx, steps=STEPS):
  nn = pytest.importorskip("flax.linen")
  train_state = pytest.importorskip("flax.training.train_state")

  class MLP(nn.Module):

    @nn.compact
    def __call__(self, x):
      return nn.Dense(1)(nn.relu(nn.Dense(16)(x)))

  model = MLP()
  params = model.init(jax.random.key(0), X)["params"]
  state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

  @jax.jit
  def train_step(state, x, y):
    def loss_fn(params):
      return jnp.mean((state.apply_fn({"params": params}, x) - y) ** 2)
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss

  losses = []
  for _ in range(steps):
    state, loss = train_step(state, X, Y)
    losses.append(float(loss))
  return state, losses


def test_flax_linen_train_state_equals_optax():
  ours, our_losses = _linen_run(gradxform.chain(gradxform.clip_by_global_norm(1.0),
                                                gradxform.adamw(1e-2, weight_decay=1e-3)))
  with jax.numpy_dtype_promotion("standard"):  # optax relies on implicit promotion
    theirs, their_losses = _linen_run(optax.chain(optax.clip_by_global_norm(1.0),
                                                  optax.adamw(1e-2, weight_decay=1e-3)))
  _assert_decreasing(our_losses)
  np.testing.assert_allclose(our_losses, their_losses, rtol=1e-6)
  chex.assert_trees_all_close(ours.params, theirs.params, rtol=1e-6, atol=1e-7)
  # Same state classes, field names and values (the classes are each library's own).
  chex.assert_trees_all_close(canonical(ours.opt_state), canonical(theirs.opt_state), rtol=1e-6, atol=1e-7)
  assert int(ours.step) == STEPS


# ----------------------------------------------------------------------------------------------
# equinox: init on eqx.filter(model, eqx.is_array); filtered gradients with None leaves.


def test_equinox_filtered_model_with_buffers_trains():
  eqx = pytest.importorskip("equinox")

  class MLP(eqx.Module):
    layers: tuple
    calls: jax.Array       # an int32 buffer: an array, but not differentiable
    activation: str        # a non-array field

    def __init__(self, key):
      k1, k2 = jax.random.split(key)
      self.layers = (eqx.nn.Linear(4, 16, key=k1), eqx.nn.Linear(16, 1, key=k2))
      self.calls = jnp.array(0, jnp.int32)
      self.activation = "relu"

    def __call__(self, x):
      return self.layers[1](getattr(jax.nn, self.activation)(self.layers[0](x)))

  model = MLP(jax.random.key(0))
  tx = gradxform.chain(gradxform.clip_by_global_norm(1.0), gradxform.adamw(5e-2, weight_decay=1e-4))
  state = tx.init(eqx.filter(model, eqx.is_array))  # the int32 buffer is in, the string is not

  @eqx.filter_value_and_grad
  def loss_fn(model, x, y):
    return jnp.mean((jax.vmap(model)(x) - y) ** 2)

  @eqx.filter_jit
  def train_step(model, state, x, y):
    loss, grads = loss_fn(model, x, y)
    updates, state = tx.update(grads, state, eqx.filter(model, eqx.is_array))
    model = eqx.apply_updates(model, updates)
    model = eqx.tree_at(lambda m: m.calls, model, model.calls + 1)  # the buffer is live
    return model, state, loss, grads, updates

  losses = []
  for _ in range(STEPS):
    model, state, loss, grads, updates = train_step(model, state, X, Y)
    losses.append(float(loss))
  _assert_decreasing(losses)

  # Not differentiable: None in the gradients and None in the updates, in the same places.
  assert grads.calls is None and grads.activation is None
  assert updates.calls is None and updates.activation is None
  is_none = lambda x: x is None
  assert jax.tree.structure(grads, is_leaf=is_none) == jax.tree.structure(updates, is_leaf=is_none)
  assert updates.layers[0].weight.shape == (16, 4)
  # The buffer kept its dtype and its own value; its optimizer state was never touched.
  assert model.calls.dtype == jnp.int32 and int(model.calls) == STEPS
  assert model.activation == "relu"
  adam_state = state[1][0]
  assert adam_state.mu.calls.dtype == jnp.int32 and int(adam_state.mu.calls) == 0
  assert int(adam_state.count) == STEPS


def test_equinox_filter_jit_optimizer_argument_does_not_retrace():
  # eqx.filter_jit treats non-array arguments as static: a gradxform optimizer rebuilt with equal
  # arguments is equal, so each call reuses the first compilation.
  eqx = pytest.importorskip("equinox")
  traces = 0

  @eqx.filter_jit
  def train_step(tx, params, state):
    nonlocal traces
    traces += 1
    grads = jax.tree.map(lambda p: 2 * p, params)
    updates, state = tx.update(grads, state, params)
    return gradxform.apply_updates(params, updates), state

  params = {"w": jnp.ones((3,), jnp.float32)}
  state = gradxform.adam(0.1).init(params)
  for _ in range(3):
    params, state = train_step(gradxform.adam(0.1), params, state)
  assert traces == 1


# ----------------------------------------------------------------------------------------------
# orbax: checkpoint the optimizer state mid-training, restore into an abstract target, continue.

# float32 and bfloat16 parameters, so the state holds bf16 moments next to f32 ones and int32 counts.
ORBAX_PARAMS = {
    "hidden": {"w": jax.random.normal(jax.random.key(2), (4, 8), jnp.float32) * 0.5,
               "b": jnp.zeros((8,), jnp.bfloat16)},
    "out": {"w": jax.random.normal(jax.random.key(3), (8, 1), jnp.float32) * 0.5,
            "b": jnp.zeros((1,), jnp.float32)},
}
ORBAX_TX = gradxform.chain(gradxform.clip_by_global_norm(1.0),
                           gradxform.inject_hyperparams(gradxform.adamw)(learning_rate=1e-2))


def _orbax_loss(params, x, y):
  h = jax.nn.relu(x @ params["hidden"]["w"] + params["hidden"]["b"].astype(jnp.float32))
  return jnp.mean((h @ params["out"]["w"] + params["out"]["b"] - y) ** 2)


@jax.jit
def _orbax_step(params, state):
  loss, grads = jax.value_and_grad(_orbax_loss)(params, X, Y)
  updates, state = ORBAX_TX.update(grads, state, params)
  return gradxform.apply_updates(params, updates), state, loss


def _orbax_train(params, state, steps):
  losses = []
  for _ in range(steps):
    params, state, loss = _orbax_step(params, state)
    losses.append(float(loss))
  return params, state, losses


@functools.cache
def _uninterrupted():
  return _orbax_train(ORBAX_PARAMS, ORBAX_TX.init(ORBAX_PARAMS), 2 * STEPS)


def _assert_bit_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype and x.shape == y.shape
    assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


def _save_and_restore_standard(ocp, path, params, state):
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path / "step_8", {"params": params, "opt_state": state})
  checkpointer.wait_until_finished()
  # A fresh process knows only the model: the target comes from eval_shape, nothing is allocated.
  target = {"params": jax.eval_shape(lambda: ORBAX_PARAMS),
            "opt_state": jax.eval_shape(ORBAX_TX.init, ORBAX_PARAMS)}
  restored = checkpointer.restore(path / "step_8", target)
  checkpointer.close()
  return restored["params"], restored["opt_state"]


def _save_and_restore_manager(ocp, path, params, state):
  options = ocp.CheckpointManagerOptions(max_to_keep=2)
  with ocp.CheckpointManager(path / "manager", options=options) as manager:
    manager.save(STEPS, args=ocp.args.StandardSave({"params": params, "opt_state": state}))
    manager.wait_until_finished()
  with ocp.CheckpointManager(path / "manager", options=options) as manager:
    assert manager.latest_step() == STEPS
    # The target from the live state's shapes and dtypes, as orbax's docs do it.
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params, "opt_state": state})
    restored = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(target))
  return restored["params"], restored["opt_state"]


def _save_and_restore_state_dict(ocp, path, params, state):
  # gradxform.state_dict's flat {"1/0/mu/hidden/w": array} dict through orbax's PyTreeCheckpointer.
  checkpointer = ocp.PyTreeCheckpointer()
  checkpointer.save(path / "state_dict", {"params": params, "opt_state": gradxform.state_dict(state)})
  # Restored as numpy arrays (no sharding to look up), into the keys a fresh init gives.
  keys = {"params": ORBAX_PARAMS, "opt_state": gradxform.state_dict(ORBAX_TX.init(ORBAX_PARAMS))}
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), keys)
  restored = checkpointer.restore(path / "state_dict", args=ocp.args.PyTreeRestore(restore_args=as_numpy))
  return (jax.tree.map(jnp.asarray, restored["params"]),
          gradxform.load_state_dict(jax.eval_shape(ORBAX_TX.init, ORBAX_PARAMS), restored["opt_state"]))


@pytest.mark.parametrize("how", ["StandardCheckpointer", "CheckpointManager", "state_dict"])
def test_orbax_resume_is_bit_equal(how, tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  save_and_restore = {"StandardCheckpointer": _save_and_restore_standard,
                      "CheckpointManager": _save_and_restore_manager,
                      "state_dict": _save_and_restore_state_dict}[how]
  params, state, first_losses = _orbax_train(ORBAX_PARAMS, ORBAX_TX.init(ORBAX_PARAMS), STEPS)
  params, state = save_and_restore(ocp, tmp_path, params, state)
  params, state, last_losses = _orbax_train(params, state, STEPS)

  expected_params, expected_state, expected_losses = _uninterrupted()
  _assert_decreasing(expected_losses)
  assert first_losses + last_losses == expected_losses
  _assert_bit_equal(params, expected_params)
  _assert_bit_equal(state, expected_state)
  # The restored state has the classes and dtypes of a fresh init: bf16 moments, int32 count.
  adam_state = state[1].inner_state[0]
  assert type(adam_state).__name__ == "ScaleByAdamState"
  assert adam_state.mu["hidden"]["b"].dtype == jnp.bfloat16
  assert adam_state.count.dtype == jnp.int32 and int(adam_state.count) == 2 * STEPS


# ----------------------------------------------------------------------------------------------
# optax both ways: gradxform pieces in optax.chain, optax pieces in gradxform.chain.

OPTAX_PARAMS = {"w": jnp.linspace(-1.0, 1.0, 12, dtype=jnp.float32).reshape(4, 3),
                "b": jnp.array([0.5, -0.25, 1.0], jnp.float32)}


def _optax_grads(params, step):
  return jax.tree.map(lambda p: jnp.cos(3 * p + step) + p, params)


def _run_chain(tx, steps=5, **extra_args):
  params, state = OPTAX_PARAMS, tx.init(OPTAX_PARAMS)
  history = []
  for step in range(steps):
    updates, state = tx.update(_optax_grads(params, step), state, params, **extra_args)
    params = optax.apply_updates(params, updates)
    history.append(updates)
  return history, params, state


def _mixed_chains(gx, ox):
  return {
      "all optax": ox.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam(b1=0.8),
                            optax.add_decayed_weights(1e-2), optax.scale_by_learning_rate(0.1)),
      "gradxform in optax.chain": optax.chain(gx.clip_by_global_norm(1.0), optax.scale_by_adam(b1=0.8),
                                              gx.add_decayed_weights(1e-2), optax.scale_by_learning_rate(0.1)),
      "optax in gradxform.chain": gx.chain(optax.clip_by_global_norm(1.0), gx.scale_by_adam(b1=0.8),
                                           optax.add_decayed_weights(1e-2), gx.scale_by_learning_rate(0.1)),
      "nested": gx.chain(optax.chain(gx.clip_by_global_norm(1.0), gx.scale_by_adam(b1=0.8)),
                         gx.chain(optax.add_decayed_weights(1e-2), optax.scale_by_learning_rate(0.1))),
  }


def test_mixed_chains_equal_the_all_optax_chain():
  with jax.numpy_dtype_promotion("standard"):  # the optax pieces rely on implicit promotion
    chains = _mixed_chains(gradxform, optax)
    reference = jax.jit(_run_chain, static_argnums=0)(chains.pop("all optax"))
    for name, tx in chains.items():
      result = jax.jit(_run_chain, static_argnums=0)(tx)
      for ours, theirs in zip(jax.tree.leaves(result), jax.tree.leaves(reference)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7, err_msg=name)
      assert jax.tree.structure(result[:2]) == jax.tree.structure(reference[:2]), name


def test_extra_args_pass_between_optax_and_gradxform():
  value = jnp.asarray(2.5, jnp.float32)
  with jax.numpy_dtype_promotion("standard"):
    expected = _run_chain(optax.chain(optax.clip(1.0), optax.polyak_sgd(max_learning_rate=0.5)),
                          value=value)
    # optax's polyak_sgd inside gradxform.chain gets `value` (gradxform's chain forwards extra args to
    # every transformation that takes them, optax's included).
    chex.assert_trees_all_close(
        _run_chain(gradxform.chain(gradxform.clip(1.0), optax.polyak_sgd(max_learning_rate=0.5)),
                   value=value)[:2],
        expected[:2], rtol=1e-6)
    # optax.chain forwards extra args only to optax's own GradientTransformationExtraArgs class: a
    # gradxform transformation needing one says so, and converting it makes optax forward them.
    gx_polyak = gradxform.polyak_sgd(max_learning_rate=0.5)
    with pytest.raises(gradxform.GradxformError, match=r"needs the keyword argument\(s\) value.*optax"):
      _run_chain(optax.chain(optax.clip(1.0), gx_polyak), value=value)
    chex.assert_trees_all_close(
        _run_chain(optax.chain(optax.clip(1.0), optax.GradientTransformationExtraArgs(*gx_polyak)),
                   value=value)[:2],
        expected[:2], rtol=1e-6)
    # Extra args a gradxform transformation does not use are ignored, inside optax.chain or not.
    _run_chain(optax.chain(gradxform.adam(0.1)), steps=1, value=value, grad=OPTAX_PARAMS)
    _run_chain(gradxform.adam(0.1), steps=1, value=value, grad=OPTAX_PARAMS)


# ----------------------------------------------------------------------------------------------
# jax.jit with the optimizer as a static argument.


def test_optimizer_as_static_jit_argument_does_not_retrace():
  traces = 0

  @functools.partial(jax.jit, static_argnums=0)
  def train_step(tx, params, state):
    nonlocal traces
    traces += 1
    grads = _optax_grads(params, 0)
    updates, state = tx.update(grads, state, params)
    return gradxform.apply_updates(params, updates), state

  def make_optimizer(peak):
    schedule = gradxform.warmup_cosine_decay_schedule(0.0, peak_value=peak, warmup_steps=2, decay_steps=10)
    return gradxform.chain(gradxform.clip_by_global_norm(1.0), gradxform.adamw(schedule, weight_decay=1e-4))

  params, state = OPTAX_PARAMS, make_optimizer(0.1).init(OPTAX_PARAMS)
  for _ in range(3):
    tx = make_optimizer(0.1)  # built again every step, equal to the last one
    params, state = train_step(tx, params, state)
  assert traces == 1
  params, state = train_step(make_optimizer(0.2), params, state)  # other arguments: a new optimizer
  assert traces == 2

  # Optax's transformations compare by identity: the same loop retraces every step there.
  optax_traces = 0

  @functools.partial(jax.jit, static_argnums=0)
  def optax_step(tx, params, state):
    nonlocal optax_traces
    optax_traces += 1
    return tx.update(_optax_grads(params, 0), state, params)

  with jax.numpy_dtype_promotion("standard"):
    state = optax.adam(0.1).init(OPTAX_PARAMS)
    for _ in range(2):
      optax_step(optax.adam(0.1), OPTAX_PARAMS, state)
  assert optax_traces == 2
