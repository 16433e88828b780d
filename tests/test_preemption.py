"""Preemption of a multi-process run: SIGTERM to any process makes all of them save
the same step and exit 0 (JAX's preemption sync point), and the run resumes exactly.

Two gloo CPU processes of one device each, started as launch/local.sh starts
them, but directly, so that the test can signal one process and not the other.
The uninterrupted reference is launch/local.sh itself, and it is also checked
against one process reading both data shards.
"""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from etils import epath

import cloud
import conftest
from gigagan_jax.data.pipeline import make_dataset
from gigagan_jax.train import loop

pytestmark = pytest.mark.preemption


def start_two(workdir, data_dir, *flags):
  port = cloud.free_port()
  return [cloud.start(cloud.train_cmd(workdir, data_dir, f'--coordinator_address=localhost:{port}',
                                      '--num_processes=2', f'--process_id={i}',
                                      '--cpu_collectives=gloo', *flags))
          for i in range(2)]


def finish_two(procs) -> list[str]:
  outs = []
  for i, proc in enumerate(procs):
    rc, out = cloud.finish(proc, timeout=300)
    assert rc == 0, f'process {i} exited {rc}:\n{out}'
    outs.append(out)
  return outs


def wait_for_step(procs, workdir, step: int):
  """Until process 0 has logged `step` (metrics.jsonl)."""
  metrics = epath.Path(workdir) / 'metrics.jsonl'
  deadline = time.time() + 300
  while not (metrics.exists() and len(metrics.read_text().splitlines()) >= step):
    for proc in procs:
      assert proc.poll() is None, proc.communicate()[0]
    assert time.time() < deadline, f'step {step} not reached in 300 s'
    time.sleep(0.1)


def checkpoints(workdir) -> list[int]:
  return sorted(int(p.name) for p in (epath.Path(workdir) / 'checkpoints').iterdir()
                if p.name.isdigit())


@pytest.fixture(scope='module')
def preempted(micro_data_dir, tmp_path_factory):
  """Two processes, SIGTERM to process 1 only; resumed, SIGTERM to process 0 and
  half a second later to process 1; an uninterrupted two-process run, started by
  launch/local.sh, to the step of the second save. Returns what each phase left
  and printed."""
  root = tmp_path_factory.mktemp('preemption')
  run, straight = str(root / 'preempted'), str(root / 'straight')
  endless = ('--config.train.steps=100000', '--config.train.ckpt_every=100000')

  procs = start_two(run, micro_data_dir, *endless)
  wait_for_step(procs, run, 1)  # as early as possible: each step costs ~2 s with gloo
  procs[1].send_signal(signal.SIGTERM)
  first_outs, first = finish_two(procs), checkpoints(run)

  procs = start_two(run, micro_data_dir, *endless)
  wait_for_step(procs, run, first[-1] + 1)
  procs[0].send_signal(signal.SIGTERM)
  time.sleep(0.5)
  procs[1].send_signal(signal.SIGTERM)
  second_outs, second = finish_two(procs), checkpoints(run)

  # The reference, by launch/local.sh, on a fresh data_dir: process 0 builds
  # captioned_shapes while process 1 waits (two builders of one data_dir used to
  # collide with FileExistsError); the build is deterministic, so same data.
  fresh_data = str(root / 'fresh_data')
  launched = subprocess.run(
      ['bash', 'launch/local.sh', '--config=configs/t2i_micro.py', f'--workdir={straight}',
       '--nprocs=2', f'--port={cloud.free_port()}', f'--python={sys.executable}',
       f'--extra=--config.train.steps={second[-1]} --config.train.ckpt_every=100000 '
       f'--config.data.data_dir={fresh_data}'],
      cwd=conftest.REPO, env=dict(os.environ, XLA_FLAGS=conftest.xla_flags(1)),
      capture_output=True, text=True, timeout=600)
  return dict(run=run, straight=straight, first=first, first_outs=first_outs, second=second,
              second_outs=second_outs, launched=launched, fresh_data=fresh_data)


def test_sigterm_to_one_process_saves_one_agreed_step_and_both_exit_zero(preempted):
  """Only process 1 was signalled; process 0 stopped at the same step (else the
  save, a collective of both, would hang) and says which; both exited 0."""
  first = preempted['first']
  assert len(first) == 1 and first[0] >= 1, first
  assert f'preempted (SIGTERM): saved checkpoint {first[0]}' in preempted['first_outs'][0]


def test_sigterm_to_both_at_different_moments_saves_one_step(preempted):
  first, second, outs = preempted['first'], preempted['second'], preempted['second_outs']
  assert f'resumed from {preempted["run"]}/checkpoints/{first[0]}' in outs[0], outs[0]
  assert len(second) == 2 and second[0] == first[0] and second[1] > first[0], second
  assert f'preempted (SIGTERM): saved checkpoint {second[1]}' in outs[0], outs[0]


def test_preempted_twice_and_resumed_equals_an_uninterrupted_run(preempted, micro_data_dir):
  """The second agreed checkpoint equals the uninterrupted run's at the same step,
  bitwise, and so do both processes' data-iterator positions."""
  step, run, straight = preempted['second'][-1], preempted['run'], preempted['straight']
  assert checkpoints(straight) == [step]
  config = conftest.micro_config(micro_data_dir)
  cloud.assert_trees_equal(cloud.saved_state(config, run, step),
                           cloud.saved_state(config, straight, step))
  for i in range(2):
    data = lambda wd: (epath.Path(wd) / f'checkpoints/{step}/data/process_{i}-of-2.json'
                       ).read_text()
    assert data(run) == data(straight)


class ConcatShards:
  """What N processes read together, as one iterator: the single-process
  reference for the multi-process run. Checkpointable like a grain iterator."""

  def __init__(self, iterators):
    self.iterators = iterators

  def __iter__(self):
    return self

  def __next__(self):
    parts = [next(it) for it in self.iterators]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def get_state(self) -> bytes:
    return json.dumps([it.get_state() for it in self.iterators]).encode()

  def set_state(self, state: bytes):
    for it, s in zip(self.iterators, json.loads(state)):
      it.set_state(s)

  def start_prefetch(self):
    pass


def test_two_processes_launched_by_local_sh_match_one(preempted, tmp_path):
  """launch/local.sh for real: its two gloo processes' losses and weights equal
  one process reading both shards."""
  launched, multi, step = preempted['launched'], preempted['straight'], preempted['second'][-1]
  log_1 = epath.Path(multi) / 'launch_logs' / 'process_1.log'
  assert launched.returncode == 0, launched.stdout + launched.stderr + (
      log_1.read_text() if log_1.exists() else '')
  assert '# all 2 processes exited 0' in launched.stdout
  assert "mesh {'data': 2" in launched.stdout and '2 process(es)' in launched.stdout

  config = conftest.micro_config(preempted['fresh_data'])
  config.train.steps, config.train.ckpt_every = step, 100000

  def both_shards(tokenizer):
    return ConcatShards([make_dataset(config.data, tokenize=tokenizer, seed=config.seed,
                                      process_index=i, process_count=2) for i in range(2)])

  single = str(tmp_path / 'one_process')
  loop.train(config, single, make_iterator=both_shards, devices=jax.devices()[:1])
  np.testing.assert_allclose(cloud.logged(multi), cloud.logged(single), rtol=1e-4, atol=1e-5)
  multi_state, single_state = cloud.saved_state(config, multi, step), cloud.saved_state(
      config, single, step)
  for key in ('g', 'd', 'ema'):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(multi_state[key]),
                            jax.tree.leaves(single_state[key])):
      np.testing.assert_allclose(x, y, rtol=1e-3, atol=2e-5, err_msg=jax.tree_util.keystr(path))
