"""Preemption of a multi-process run: SIGTERM to any process makes all of them save
the same step and exit 0 (JAX's preemption sync point), and the run resumes exactly.

Two gloo CPU processes of one device each, started as launch/local.sh starts
them, but directly, so that the test can signal one process and not the other.
"""
import signal
import time

import pytest
from etils import epath

import cloud
import conftest

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
  half a second later to process 1; an uninterrupted two-process run to the step
  of the second save. Returns what each phase left and printed."""
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

  finish_two(start_two(straight, micro_data_dir, f'--config.train.steps={second[-1]}',
                       '--config.train.ckpt_every=100000'))
  return dict(run=run, straight=straight, first=first, first_outs=first_outs, second=second,
              second_outs=second_outs)


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
