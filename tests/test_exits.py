"""train() leaves nothing running behind it, however it ends: the checkpoint
manager (its async save threads), the TensorBoard writer (its writer thread)
and the staged logs are closed on a Ctrl-C, a refused config and the normal end."""
import json
import threading

import jax
import pytest

import conftest
from gigagan_jax.data.pipeline import make_dataset
from gigagan_jax.train import loop
from gigagan_jax.train.checkpoint import ConfigMismatchError

# t2i_micro's single-device step of this process's XLA setup: compiled once in that group.
pytestmark = [pytest.mark.crash, pytest.mark.xdist_group('micro_programs')]


class InterruptAt:
  """The run's data iterator, with a Ctrl-C (KeyboardInterrupt) arriving at batch `n`."""

  def __init__(self, iterator, n):
    self.iterator, self.n, self.served = iterator, n, 0

  def __iter__(self):
    return self

  def __next__(self):
    if self.served == self.n:
      raise KeyboardInterrupt
    self.served += 1
    return next(self.iterator)

  def get_state(self) -> bytes:  # grain's checkpoint handler takes bytes from a non-grain iterator
    return json.dumps(self.iterator.get_state()).encode()

  def set_state(self, state: bytes):
    self.iterator.set_state(json.loads(state))


def new_threads(before) -> list[str]:
  """Threads started since `before` that do not end within 5 s (a pool that was shut
  down without waiting, like the default executor of Orbax's closed event loops,
  ends a moment later; a writer or saver that was never closed does not)."""
  new = [t for t in threading.enumerate() if t not in before]
  for t in new:
    t.join(timeout=5)
  return [t.name for t in new if t.is_alive()]


def test_ctrl_c_a_refused_config_and_the_end_leave_no_thread(micro_data_dir, tmp_path):
  config = conftest.micro_config(micro_data_dir)
  workdir = str(tmp_path / 'run')
  devices = jax.devices()[:1]
  data = lambda tokenize, n=None: (lambda it: InterruptAt(it, n) if n else it)(make_dataset(
      config.data, tokenize=tokenize, seed=config.seed, process_index=0, process_count=1))
  before = set(threading.enumerate())

  # Ctrl-C right after checkpoint 3 was handed to the async saver.
  with pytest.raises(KeyboardInterrupt):
    loop.train(config, workdir, make_iterator=lambda tok: data(tok, 3), devices=devices)
  assert new_threads(before) == []

  changed = conftest.micro_config(micro_data_dir)
  changed.loss.r1_gamma = 1.0
  with pytest.raises(ConfigMismatchError):
    loop.train(changed, workdir, make_iterator=data, devices=devices)
  assert new_threads(before) == []

  loop.train(config, workdir, make_iterator=data, devices=devices)  # resumes 3 -> 6
  assert new_threads(before) == []
