"""Preemption of a multi-process run: SIGTERM to any process makes all of them save
the same step and exit 0 (JAX's preemption sync point), and the run resumes exactly.

Two gloo CPU processes of one device each. The first run is started by
launch/local.sh for real, checkpointing every step, and process 1 alone is
signalled; its checkpoints are the uninterrupted reference of the resume,
which starts the processes directly (so that the test can signal each at its
own moment). The first run is also checked against one process reading both
data shards.
"""
import json
import os
import shutil
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

ENDLESS = ('--config.train.steps=100000', '--config.train.ckpt_every=100000')
RESUMED_FROM = 2  # the resume starts from the launched run's checkpoint 2


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


def logged_step(workdir) -> int:
  """The last step process 0 logged in metrics.jsonl (0 before any)."""
  try:
    return json.loads((epath.Path(workdir) / 'metrics.jsonl').read_text().splitlines()[-1])['step']
  except (FileNotFoundError, IndexError, ValueError):  # none yet, or a line half written
    return 0


def wait_for_step(procs, workdir, step: int):
  """Until process 0 has logged `step`; `procs` must keep running meanwhile."""
  deadline = time.time() + 300
  while logged_step(workdir) < step:
    for proc in procs:
      assert proc.poll() is None, proc.communicate()[0] or f'exited {proc.returncode}'
    assert time.time() < deadline, f'step {step} not reached in 300 s'
    time.sleep(0.1)


def process_of(launcher: subprocess.Popen, process_id: int) -> int:
  """The pid of launch/local.sh's training process `process_id`."""
  deadline = time.time() + 60
  while time.time() < deadline:
    with open(f'/proc/{launcher.pid}/task/{launcher.pid}/children') as f:
      for pid in f.read().split():
        try:
          with open(f'/proc/{pid}/cmdline', 'rb') as cmd:
            if f'--process_id={process_id}'.encode() in cmd.read().split(b'\0'):
              return int(pid)
        except FileNotFoundError:  # a short-lived child (mkdir) that has exited
          pass
    time.sleep(0.1)
  raise AssertionError(f'launch/local.sh started no process {process_id} within 60 s')


def checkpoints(workdir) -> list[int]:
  return sorted(int(p.name) for p in (epath.Path(workdir) / 'checkpoints').iterdir()
                if p.name.isdigit())


@pytest.fixture(scope='module')
def preempted(tmp_path_factory):
  """launch/local.sh's two processes, a checkpoint every step, SIGTERM to process 1
  only after step 6; its checkpoint 2, resumed by two processes started directly,
  SIGTERM to process 0 and half a second later to process 1. Returns what each
  run left and printed."""
  root = tmp_path_factory.mktemp('preemption')
  launched, resumed = str(root / 'launched'), str(root / 'resumed')

  # On a fresh data_dir: process 0 builds captioned_shapes while process 1 waits
  # (two builders of one data_dir used to collide with FileExistsError).
  fresh_data = str(root / 'fresh_data')
  log = open(root / 'launcher.log', 'w+')  # a file, not a pipe nobody reads until the end
  launcher = subprocess.Popen(
      ['bash', 'launch/local.sh', '--config=configs/t2i_micro.py', f'--workdir={launched}',
       '--nprocs=2', f'--port={cloud.free_port()}', f'--python={sys.executable}',
       f'--extra={" ".join(ENDLESS)} --config.train.ckpt_every=1 --config.train.keep_last=100 '
       f'--config.data.data_dir={fresh_data}'],
      cwd=conftest.REPO, env=dict(os.environ, XLA_FLAGS=conftest.xla_flags(1)),
      stdout=log, stderr=subprocess.STDOUT, text=True)
  process_1 = process_of(launcher, 1)
  wait_for_step([launcher], launched, 6)
  os.kill(process_1, signal.SIGTERM)
  launcher.wait(timeout=300)
  log.seek(0)
  launcher_out = log.read()
  log.close()
  first = checkpoints(launched)

  # The launched run as if it had been preempted at RESUMED_FROM.
  shutil.copytree(launched, resumed)
  for step in first[RESUMED_FROM:]:
    shutil.rmtree(f'{resumed}/checkpoints/{step}')
  metrics = epath.Path(resumed) / 'metrics.jsonl'
  metrics.write_text(''.join(metrics.read_text().splitlines(keepends=True)[:RESUMED_FROM]))
  procs = start_two(resumed, fresh_data, *ENDLESS)
  wait_for_step(procs, resumed, RESUMED_FROM + 1)
  procs[0].send_signal(signal.SIGTERM)
  time.sleep(0.5)
  procs[1].send_signal(signal.SIGTERM)
  second_outs = finish_two(procs)
  second = [s for s in checkpoints(resumed) if s > RESUMED_FROM]
  return dict(launched=launched, resumed=resumed, first=first, launcher=launcher,
              launcher_out=launcher_out, second=second, second_outs=second_outs,
              fresh_data=fresh_data)


def test_sigterm_to_one_process_saves_one_agreed_step_and_both_exit_zero(preempted):
  """Only process 1 was signalled; process 0 stopped at the same step (else the
  save, a collective of both, would hang) and says which; both exited 0, as
  launch/local.sh reports."""
  first, out, launched = preempted['first'], preempted['launcher_out'], preempted['launched']
  log_1 = epath.Path(launched) / 'launch_logs' / 'process_1.log'
  assert preempted['launcher'].returncode == 0, out + (log_1.read_text() if log_1.exists() else '')
  assert '# all 2 processes exited 0' in out
  assert "mesh {'data': 2" in out and '2 process(es)' in out
  assert first == list(range(1, first[-1] + 1)) and first[-1] >= 6, first
  assert f'preempted (SIGTERM): saved checkpoint {first[-1]}' in out, out
  assert cloud.logged(launched)[-1, 0] == first[-1]  # no step after the agreed one


def test_sigterm_to_both_at_different_moments_saves_one_step(preempted):
  second, outs = preempted['second'], preempted['second_outs']
  assert f'resumed from {preempted["resumed"]}/checkpoints/{RESUMED_FROM}' in outs[0], outs[0]
  assert len(second) == 1, second
  assert f'preempted (SIGTERM): saved checkpoint {second[0]}' in outs[0], outs[0]


def test_preempted_and_resumed_equals_the_uninterrupted_run(preempted):
  """The resumed run's agreed checkpoint equals the launched run's at the same step
  (which ran through it uninterrupted), bitwise, and so do both processes'
  data-iterator positions and the losses logged on the way."""
  step, launched, resumed = preempted['second'][0], preempted['launched'], preempted['resumed']
  assert step in preempted['first'], (step, preempted['first'])
  config = conftest.micro_config(preempted['fresh_data'])
  cloud.assert_trees_equal(cloud.saved_state(config, resumed, step),
                           cloud.saved_state(config, launched, step))
  for i in range(2):
    data = lambda wd: (epath.Path(wd) / f'checkpoints/{step}/data/process_{i}-of-2.json'
                       ).read_text()
    assert data(resumed) == data(launched)
  np.testing.assert_array_equal(cloud.logged(resumed), cloud.logged(launched)[:step])


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
  one process reading both shards, up to float32 reduction order (checkpoint 4:
  the differences grow with the steps)."""
  multi, step = preempted['launched'], 4
  config = conftest.micro_config(preempted['fresh_data'])
  config.train.steps, config.train.ckpt_every = step, 100000

  def both_shards(tokenizer):
    return ConcatShards([make_dataset(config.data, tokenize=tokenizer, seed=config.seed,
                                      process_index=i, process_count=2) for i in range(2)])

  single = str(tmp_path / 'one_process')
  loop.train(config, single, make_iterator=both_shards, devices=jax.devices()[:1])
  np.testing.assert_allclose(cloud.logged(multi)[:step], cloud.logged(single), rtol=1e-4,
                             atol=1e-5)
  multi_state, single_state = cloud.saved_state(config, multi, step), cloud.saved_state(
      config, single, step)
  for key in ('g', 'd', 'ema'):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(multi_state[key]),
                            jax.tree.leaves(single_state[key])):
      np.testing.assert_allclose(x, y, rtol=1e-3, atol=2e-5, err_msg=jax.tree_util.keystr(path))
