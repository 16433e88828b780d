"""train() leaves nothing running behind it, however it ends: the checkpoint
manager (its async save threads), the TensorBoard writer (its writer thread),
the staged logs and the data loader's worker processes are closed on a Ctrl-C,
a refused config, a preemption and the normal end. (NonFiniteError:
test_train.py's non-finite test.) The preemption is one process's SIGTERM path,
which the CLI takes too."""
import json
import os
import signal
import threading
import time

import jax
import pytest

import conftest
from gigagan_jax.data.pipeline import make_dataset
from gigagan_jax.text.tokenizer import make_tokenizer
from gigagan_jax.train import loop
from gigagan_jax.train.checkpoint import ConfigMismatchError
from gigagan_jax.train.step import make_train_step

# t2i_micro's single-device step of this process's XLA setup: compiled once in that group.
pytestmark = [pytest.mark.crash, pytest.mark.xdist_group('micro_programs')]


class InterruptAt:
  """The run's data iterator, with a Ctrl-C (KeyboardInterrupt) arriving at batch `n`,
  or, with `preempt`, a SIGTERM to this process (a preemption notice)."""

  def __init__(self, iterator, n, preempt=False):
    self.iterator, self.n, self.preempt, self.served = iterator, n, preempt, 0

  def __iter__(self):
    return self

  def __next__(self):
    if self.served == self.n:
      if not self.preempt:
        raise KeyboardInterrupt
      os.kill(os.getpid(), signal.SIGTERM)  # handled by train(): it saves after this batch
    self.served += 1
    return next(self.iterator)

  def close(self):
    self.iterator.close()

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


def child_processes() -> set[int]:
  """Running (not zombie) child processes of this process."""
  pids = set()
  for task in os.listdir('/proc/self/task'):
    with open(f'/proc/self/task/{task}/children') as f:
      pids.update(int(p) for p in f.read().split())
  def running(pid):
    try:
      with open(f'/proc/{pid}/stat') as f:
        return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except FileNotFoundError:
      return False
  return {pid for pid in pids if running(pid)}


def new_children(before) -> set[int]:
  """Child processes started since `before` still running 5 s later."""
  deadline = time.time() + 5
  while (left := child_processes() - before) and time.time() < deadline:
    time.sleep(0.1)
  return left


def test_ctrl_c_a_refused_config_a_preemption_and_the_end_leave_nothing_running(micro_data_dir, tmp_path,
                                                                              capsys, monkeypatch):
  config = conftest.micro_config(micro_data_dir)
  # Each experiment's step is built once in a process (loop._jitted_step): the
  # resume and the new run of `config` below reuse the first run's.
  built = []
  monkeypatch.setattr(loop, '_STEPS', {})
  monkeypatch.setattr(loop, 'make_train_step',
                      lambda *a, **k: built.append(1) or make_train_step(*a, **k))
  workdir = str(tmp_path / 'run')
  devices = jax.devices()[:1]
  # Every run reads through a grain worker process (only these iterators read with
  # data.num_workers=1; the run's config is unchanged).
  workers = config.data.copy_and_resolve_references()
  workers.num_workers = 1
  with_workers = lambda tokenize: make_dataset(workers, tokenize=tokenize, seed=config.seed,
                                               process_index=0, process_count=1)
  # The first worker process starts two things that live as long as this process,
  # shared by all later loaders: multiprocessing's resource tracker (a process)
  # and grain's thread pool that frees shared memory. Started before the snapshot.
  warm_up = with_workers(make_tokenizer(config.text))
  next(warm_up)
  warm_up.close()
  before, children = set(threading.enumerate()), child_processes()

  # Ctrl-C right after checkpoint 3 was handed to the async saver.
  with pytest.raises(KeyboardInterrupt):
    loop.train(config, workdir, make_iterator=lambda tok: InterruptAt(with_workers(tok), 3),
               devices=devices)
  assert new_threads(before) == [] and new_children(children) == set()

  changed = conftest.micro_config(micro_data_dir)
  changed.loss.r1_gamma = 1.0
  with pytest.raises(ConfigMismatchError):
    loop.train(changed, workdir, make_iterator=with_workers, devices=devices)
  assert new_threads(before) == [] and new_children(children) == set()

  loop.train(config, workdir, make_iterator=with_workers, devices=devices)  # resumes 3 -> 6
  assert new_threads(before) == [] and new_children(children) == set()

  # A new run, reading through a grain worker process, preempted in its first step:
  # one process's SIGTERM path (the CLI returns from train() and exits 0, as
  # test_preemption.py's processes do).
  capsys.readouterr()
  preempted = lambda tokenize: InterruptAt(with_workers(tokenize), 0, preempt=True)
  loop.train(config, str(tmp_path / 'preempted'), make_iterator=preempted, devices=devices)
  assert os.listdir(tmp_path / 'preempted' / 'checkpoints') == ['1']  # saved, then returned
  assert 'preempted (SIGTERM): saved checkpoint 1' in capsys.readouterr().out
  assert new_threads(before) == [] and new_children(children) == set()
  assert len(built) == 2  # config's and changed's
