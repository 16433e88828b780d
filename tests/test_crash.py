"""Abrupt ends: a SIGKILL in the middle of an asynchronous checkpoint save, and
what the next start (training, evaluation) makes of the partial checkpoint."""
import os
import shutil
import signal
import sys

import numpy as np
import pytest
from etils import epath

import cloud
import conftest
from gigagan_jax import inference
from gigagan_jax.train.checkpoint import unfinished_saves

# With straight_run and the CLI's one-device micro step of the other subprocess runs.
pytestmark = [pytest.mark.crash, pytest.mark.xdist_group('session_runs')]


@pytest.fixture(scope='module')
def killed_mid_save(micro_data_dir, straight_run, tmp_path_factory):
  """The uninterrupted 6-step run (conftest.py), and one killed while checkpoint 6
  was being written (checkpoint 3 complete), plus a copy of the latter as it was left."""
  root = tmp_path_factory.mktemp('crash')
  straight, killed = straight_run, str(root / 'killed')
  rc, out = cloud.finish(cloud.start(cloud.train_cmd(killed, micro_data_dir),
                                     env={'GIGAGAN_SIGKILL_DURING_SAVE': '6'}))
  assert rc == -signal.SIGKILL, out
  as_left = str(root / 'as_left')
  shutil.copytree(killed, as_left)
  return straight, killed, as_left


def test_sigkill_during_a_save_resumes_from_the_last_complete_checkpoint(micro_data_dir,
                                                                        killed_mid_save):
  """The kill landed after files of checkpoint 6 existed and before its commit; the
  next start says it ignores that partial save, resumes from 3, saves 6 again, and
  equals the uninterrupted run bitwise (state, data position, losses of 4-6)."""
  straight, killed, _ = killed_mid_save
  directory = epath.Path(killed) / 'checkpoints'
  partial = unfinished_saves(directory)
  assert len(partial) == 1 and partial[0].startswith('6.'), partial
  assert any(files for _, _, files in os.walk(directory / partial[0]))
  assert inference.checkpoint_steps(killed) == [3]  # read-only: removes nothing

  rc, out = cloud.finish(cloud.start(cloud.train_cmd(killed, micro_data_dir)))
  assert rc == 0, out
  assert f'ignored and removed unfinished checkpoint save(s) {partial[0]}' in out, out
  assert f'resumed from {killed}/checkpoints/3' in out, out
  assert unfinished_saves(directory) == []
  config = conftest.micro_config(micro_data_dir)
  cloud.assert_trees_equal(cloud.saved_state(config, killed, 6),
                           cloud.saved_state(config, straight, 6))
  data = lambda wd: (epath.Path(wd) / 'checkpoints/6/data/process_0-of-1.json').read_text()
  assert data(killed) == data(straight)
  # metrics.jsonl: the killed process logged steps 1-6; the resumed one drops 4-6, which
  # it replays, and logs them again: each step once, with the uninterrupted run's losses.
  assert 'metrics.jsonl: dropped 3 record(s) after step 3' in out, out
  log, ref = cloud.logged(killed), cloud.logged(straight)
  assert log[:, 0].tolist() == [1, 2, 3, 4, 5, 6]
  np.testing.assert_array_equal(log, ref)


def test_a_run_with_only_a_partial_checkpoint_cannot_be_sampled_or_evaluated(killed_mid_save,
                                                                             tmp_path):
  """Evaluation and sampling need a complete checkpoint and say so: the evaluate CLI
  exits 1 naming the run; nothing of the run is removed by looking at it."""
  _, _, as_left = killed_mid_save
  run = str(tmp_path / 'only_partial')
  shutil.copytree(as_left, run)
  shutil.rmtree(f'{run}/checkpoints/3')  # as if killed during the first save
  before = sorted(p.name for p in (epath.Path(run) / 'checkpoints').iterdir())
  with pytest.raises(inference.NoCheckpointError, match=f'no complete checkpoint in {run}'):
    inference.load_run(run)
  rc, out = cloud.finish(cloud.start([sys.executable, '-m', 'gigagan_jax.evaluate',
                                      f'--workdir={run}']))
  assert rc == 1 and f'evaluate: error: no complete checkpoint in {run}/checkpoints' in out, out
  assert sorted(p.name for p in (epath.Path(run) / 'checkpoints').iterdir()) == before
  # No checkpoints/ at all: a workdir where nothing was trained.
  rc, out = cloud.finish(cloud.start([sys.executable, '-m', 'gigagan_jax.evaluate',
                                      f'--workdir={tmp_path}']))
  assert rc == 1 and f'evaluate: error: no checkpoints/ in {tmp_path}' in out, out
