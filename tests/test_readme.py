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
