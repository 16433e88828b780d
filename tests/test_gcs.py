"""gs:// run directories end to end, against a real GCS emulator on localhost.

The emulator (fake-gcs-server, from a PyPI wheel) speaks GCS's JSON API; etils.epath
(gcsfs) and Orbax (tensorstore for arrays) write to it as they would to a
bucket, pointed there by STORAGE_EMULATOR_HOST alone (gigagan_jax.storage).
Nothing of the storage layer is mocked.
"""
import io
import json
import os
import signal
import sys

import numpy as np
import pytest
from etils import epath
from PIL import Image

import cloud
import conftest
from gigagan_jax import inference
from gigagan_jax import sample
from gigagan_jax import storage
from gigagan_jax.train import loop

# In the probe's xdist group: the evaluate test needs the trained probe, and the
# module's tests share one emulator and one run (conftest's groups are per file).
pytestmark = [pytest.mark.gcs, pytest.mark.xdist_group('session_runs')]


@pytest.fixture(scope='module')
def gcs():
  """The emulator, and this process's clients pointed at it."""
  emulator = cloud.Emulator()
  saved = dict(os.environ)
  os.environ.update(emulator.env)
  storage.use_emulator_from_env()
  yield emulator
  emulator.stop()
  os.environ.clear()
  os.environ.update(saved)


@pytest.fixture(scope='module')
def gcs_run(gcs, micro_data_dir, straight_run):
  """A 6-step run in the bucket, SIGKILLed after checkpoint 3 and resumed, and the
  same run uninterrupted on local disk (conftest.py): (gs:// workdir, local workdir)."""
  local, run = straight_run, f'gs://{gcs.bucket}/micro'
  rc, out = cloud.finish(cloud.start(cloud.train_cmd(run, micro_data_dir),
                                     env=dict(gcs.env, GIGAGAN_SIGKILL_AFTER_SAVE='3')))
  assert rc == -signal.SIGKILL, out
  assert inference.checkpoint_steps(run) == [3]
  rc, out = cloud.finish(cloud.start(cloud.train_cmd(run, micro_data_dir), env=gcs.env))
  assert rc == 0 and f'resumed from {run}/checkpoints/3' in out, out
  return run, local


def test_killed_and_resumed_in_gcs_equals_an_uninterrupted_local_run(gcs_run, micro_data_dir):
  """Checkpoint 6, the logged losses and the data position: bitwise."""
  run, local = gcs_run
  config = conftest.micro_config(micro_data_dir)
  cloud.assert_trees_equal(cloud.saved_state(config, run, 6), cloud.saved_state(config, local, 6))
  np.testing.assert_array_equal(cloud.logged(run), cloud.logged(local))
  data = lambda wd: (epath.Path(wd) / 'checkpoints/6/data/process_0-of-1.json').read_text()
  assert data(run) == data(local)


def test_samples_and_tensorboard_events_land_in_the_bucket(gcs_run, tmp_path):
  """Sample grids of steps 0 (the killed process) and 6 (the resumed one) as drawn
  locally; TensorBoard holds every logged step across both processes' event files
  (object stores cannot append: written locally, uploaded whole)."""
  run, local = gcs_run
  for step in (0, 6):
    name = f'samples/step_{step:07d}.png'
    assert (epath.Path(run) / name).read_bytes() == (epath.Path(local) / name).read_bytes()
  from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
  files = list(epath.Path(run).glob('events.out.tfevents.*'))
  assert len(files) == 2, files
  logged_steps = []
  for events in files:
    copy = tmp_path / events.name
    copy.write_bytes(events.read_bytes())
    logged_steps += [e.step for e in EventFileLoader(str(copy)).Load()
                     if any(v.tag == 'd_loss' for v in e.summary.value)]
  assert sorted(logged_steps) == [1, 2, 3, 4, 5, 6]


def test_evaluate_reads_the_gcs_run_and_writes_its_report_there(gcs, gcs_run, probe_dir):
  """The evaluate CLI on the gs:// run: metrics.json, report.html, the sample grid and
  TensorBoard events under gs://.../eval/shapes/."""
  run, _ = gcs_run
  cmd = [sys.executable, '-m', 'gigagan_jax.evaluate', f'--workdir={run}',
         f'--eval_config.probe_dir={probe_dir}', '--eval_config.num_samples=8',
         '--eval_config.batch_size=8', f'--eval_config.cache_dir={run}/eval_cache']
  rc, out = cloud.finish(cloud.start(cmd, env=gcs.env))
  assert rc == 0, out
  out_dir = epath.Path(run) / 'eval/shapes'
  record = json.loads((out_dir / 'metrics.json').read_text())
  assert list(record['steps']) == ['6'] and 0 <= record['steps']['6']['attribute_accuracy'] <= 1
  assert '<h2>Metrics</h2>' in (out_dir / 'report.html').read_text()
  assert Image.open(io.BytesIO((out_dir / 'samples_6.png').read_bytes())).size[0] > 0
  assert list(out_dir.glob('events.out.tfevents.*'))


def test_sample_reads_g_ema_from_the_bucket_and_writes_there(gcs_run):
  run, _ = gcs_run
  settings = sample.run(run, prompts=['a red circle'], seeds=[0, 1], batch_size=2,
                        out=f'{run}/samples_cli')
  assert settings['step'] == 6 and settings['workdir'] == run
  saved = json.loads((epath.Path(run) / 'samples_cli/settings.json').read_text())
  assert [r['file'] for r in saved['images']] == ['0000.png', '0001.png']
  first = Image.open(io.BytesIO((epath.Path(run) / 'samples_cli/0000.png').read_bytes()))
  assert first.size == (32, 32)


def test_a_missing_bucket_or_an_empty_run_is_named(gcs, micro_data_dir, tmp_path):
  """A bucket that does not exist, or a local directory that cannot be made, fails at
  start-up, before any work, naming it; a gs:// run without checkpoints is named by
  sample/evaluate's loader. (The emulator has no permissions, so a bucket that
  exists but refuses writes takes the same path untested: check_writable's write.)"""
  with pytest.raises(storage.StorageError, match="bucket 'no-such-bucket' does not exist"):
    loop.train(conftest.micro_config(micro_data_dir), 'gs://no-such-bucket/run')
  a_file = tmp_path / 'a_file'
  a_file.write_text('not a directory')
  with pytest.raises(storage.StorageError, match=f'cannot write to {a_file}/run: '):
    loop.train(conftest.micro_config(micro_data_dir), str(a_file / 'run'))
  with pytest.raises(inference.NoCheckpointError, match=f'no checkpoints/ in gs://{gcs.bucket}/'
                     'empty'):
    inference.load_run(f'gs://{gcs.bucket}/empty')
  # A run whose first save never finished: its directory exists, no checkpoint in it.
  (epath.Path(f'gs://{gcs.bucket}/unfinished/checkpoints') / 'readme.txt').write_text('x')
  with pytest.raises(inference.NoCheckpointError, match='no complete checkpoint in gs://'):
    inference.checkpoint_steps(f'gs://{gcs.bucket}/unfinished')
