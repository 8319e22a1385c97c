"""The README's Python examples run as written, and its first shell block holds exactly the two set-up commands."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def _blocks(language):
  return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_quickstart_runs_and_trains():
  (quickstart,) = [b for b in _blocks("python") if "train_step" in b]
  namespace = {}
  exec(compile(quickstart, str(README), "exec"), namespace)  # pylint: disable=exec-used
  start = float(namespace["loss"]({"w": namespace["jnp"].zeros((3,)), "b": namespace["jnp"].zeros(())}))
  assert float(namespace["value"]) < 0.05 * start


def test_first_shell_block_is_the_two_setup_commands():
  commands = [line for line in _blocks("bash")[0].splitlines() if line.strip() and not line.startswith("#")]
  assert len(commands) == 2
  assert "examples/train_digits.py" in commands[0] and "pytest" in commands[1]


def test_beyond_optax_snippets_run(tmp_path, monkeypatch):
  # The "Beyond optax" snippets continue a user's script: give them params, a transformation and its state.
  import jax
  import jax.numpy as jnp
  import numpy

  import gradxform
  monkeypatch.chdir(tmp_path)  # the state_dict snippet writes a file
  params = {"embed": {"w": jnp.ones((4, 3))}, "encoder": {"w": jnp.ones((3, 3)), "bias": jnp.zeros(3)},
            "norm": {"scale": jnp.ones(3)}}
  snippets = [b for b in _blocks("python") if "train_step" not in b]
  assert len(snippets) >= 3
  for snippet in snippets:
    tx = gradxform.adam(1e-3)
    namespace = {"jax": jax, "jnp": jnp, "numpy": numpy, "np": numpy, "gradxform": gradxform,
                 "params": params, "tx": tx, "opt_state": tx.init(params), "grads": params}
    exec(compile(snippet, str(README), "exec"), namespace)  # pylint: disable=exec-used
