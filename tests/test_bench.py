"""bench/train_step.py and bench/sample.py run on CPU at CI-friendly sizes (issue 9, acceptance 1).

Both scripts run as subprocesses, started together by one module fixture so
that their compilations overlap: the train step of t2i_micro at batch 2, 2
timed steps; sampling from t2i_micro at batch 1 and 2, chained with a
narrow SRCNN (4x) as the upsampler, tiled with 16 px tiles (the GigaGAN
upsampler of the default up_tiny runs through the same code and would add
~25 s of compilation; BENCHMARKS.md's CPU run covers it). Each runs on one CPU device (the test
session's 8 fake devices would make the default mesh data-parallel over 8)
with XLA's backend optimisation off, as the rest of the suite. What is
checked: the JSON lines parse, carry the documented keys, and every time,
rate, FLOP and byte figure is positive. The peak table is checked directly.
"""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench import peaks  # pylint: disable=g-import-not-at-top,wrong-import-position
from conftest import xla_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

TRAIN_CMD = ['bench/train_step.py', '--config=configs/t2i_micro.py', '--batch_size=2',
             '--steps=2', '--warmup=1']
SAMPLE_CMD = ['bench/sample.py', '--config=configs/t2i_micro.py', '--batch=2',
              '--up_config=configs/sr_baselines.py:srcnn', '--up_config.upsampler.channels=(8,8)',
              '--pipeline_batch=1', '--repeats=1', '--tiled_out=96', '--tile=16',
              '--tile_batch=4']

TRAIN_KEYS = {'bench', 'config', 'task', 'batch_size', 'mesh', 'devices', 'device', 'device_kind',
              'peak_tflops', 'params_g', 'params_d', 'text_backbone', 'lower_s', 'compile_s',
              'step_times_s', 'step_time_s', 'step_time_mean_s', 'img_per_s', 'img_per_s_mean',
              'xla_flops_per_device', 'xla_flops_total', 'xla_flops_no_r1_per_device',
              'tflops_per_s_per_device', 'mfu', 'peak_bytes', 'peak_bytes_source', 'xla_memory',
              'skipped_steps', 'commit', 'date'}
SAMPLE_KEYS = {'bench', 'case', 'config', 'batch', 'resolution_out', 'ms_per_call_median',
               'ms_per_image', 'img_per_s', 'times_ms', 'text_backbone', 'device', 'device_kind',
               'commit', 'date'}


@pytest.fixture(scope='module')
def outputs(tmp_path_factory):
  """{'train': (rc, stdout, stderr), 'sample': ...} of the two benches, run concurrently."""
  tmp = tmp_path_factory.mktemp('bench')
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), JAX_PLATFORMS='cpu')
  procs = {}
  for name, cmd in (('train', TRAIN_CMD + [f'--json_out={tmp}/train.jsonl']),
                    ('sample', SAMPLE_CMD)):
    procs[name] = subprocess.Popen([sys.executable] + cmd, cwd=REPO, env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  out = {}
  try:
    for name, p in procs.items():
      stdout, stderr = p.communicate(timeout=600)
      out[name] = (p.returncode, stdout, stderr)
  finally:
    for p in procs.values():
      if p.poll() is None:
        p.kill()
  out['train_jsonl'] = (tmp / 'train.jsonl').read_text() if (tmp / 'train.jsonl').exists() else ''
  return out


def _lines(result):
  rc, stdout, stderr = result
  assert rc == 0, stderr[-3000:]
  return stdout.strip().splitlines()


def test_train_step_bench_prints_json_and_summary(outputs):
  lines = _lines(outputs['train'])
  assert len(lines) == 2, lines
  rec = json.loads(lines[0])
  assert TRAIN_KEYS <= set(rec), TRAIN_KEYS - set(rec)
  assert rec['bench'] == 'train_step' and rec['task'] == 't2i'
  assert rec['config'] == 'configs/t2i_micro.py' and rec['batch_size'] == 2
  assert rec['mesh'] == {'data': 1, 'fsdp': 1, 'tensor': 1} and rec['devices'] == 1
  assert len(rec['step_times_s']) == 2
  for key in ('lower_s', 'compile_s', 'step_time_s', 'step_time_mean_s', 'img_per_s',
              'img_per_s_mean', 'xla_flops_per_device', 'tflops_per_s_per_device', 'peak_bytes',
              'params_g', 'params_d'):
    assert rec[key] > 0, key
  assert rec['img_per_s'] == pytest.approx(2 / rec['step_time_s'])
  assert 0 < rec['xla_flops_no_r1_per_device'] < rec['xla_flops_per_device']  # R1: a 2nd D pass
  assert rec['device_kind'] == 'cpu' and rec['mfu'] is None  # no CPU peak
  assert rec['peak_bytes_source'] == 'xla.memory_analysis'
  assert rec['xla_memory']['temp'] > 0
  assert json.loads(outputs['train_jsonl']) == rec  # --json_out
  assert lines[1].startswith('train_step bench [configs/t2i_micro.py')
  assert 'img/s' in lines[1] and 'MFU n/a' in lines[1]
  assert f'GFLOP/image {rec["xla_flops_per_device"] / 2e9:.2f} with R1' in lines[1]


@pytest.mark.parametrize('config', ['configs/t2i_micro.py', 'configs/t2i_tiny.py:long'])
def test_synthetic_batch_has_every_entry_the_step_takes(config):
  """The bench's batch has the step's entries (train/step.py batch_ndims), the
  hard negatives of t2i_tiny.py:long included; the cached features aside,
  which the bench adds from its warm FeatureCache."""
  from bench import train_step as bench_step
  from gigagan_jax.config_utils import load_config, validate
  from gigagan_jax.train.step import batch_ndims
  cfg = validate(load_config(os.path.join(REPO, config)))
  batch = bench_step.synthetic_batch(cfg, 2, 100, 0)
  expected = {k for k in batch_ndims(cfg) if not k.endswith('features')}
  assert set(batch) == expected
  assert all(batch[k].ndim == batch_ndims(cfg)[k] for k in expected)


def test_sample_bench_prints_json_and_summary(outputs):
  lines = _lines(outputs['sample'])
  records = [json.loads(line) for line in lines[:-1]]
  assert [(r['case'], r['batch']) for r in records] == [
      ('generator', 1), ('generator', 2), ('pipeline', 1), ('tiled', 1)]
  for r in records:
    assert SAMPLE_KEYS <= set(r), SAMPLE_KEYS - set(r)
    assert r['ms_per_image'] > 0 and r['img_per_s'] > 0 and r['ms_per_call_median'] > 0
  gen, pipe, tiled = records[0], records[2], records[3]
  assert gen['resolution_out'] == 32 and gen['params'] > 0
  assert (pipe['resolution_in'], pipe['resolution_out']) == (32, 128)  # SRCNN: 4x
  assert pipe['up_config'] == 'configs/sr_baselines.py:srcnn' and pipe['params_up'] > 0
  assert pipe['overrides'] == ['--up_config.upsampler.channels=(8,8)']
  assert (tiled['resolution_in'], tiled['resolution_out'], tiled['tiles']) == (24, 96, 4)
  assert tiled['ms_per_tile'] > 0
  assert lines[-1].startswith('sample bench [cpu:cpu]') and 'tiled 24->96px' in lines[-1]


def test_peak_table():
  assert peaks.detect('NVIDIA H100 80GB HBM3') == 'h100'
  assert peaks.detect('NVIDIA H100 PCIe') == 'h100_pcie'
  assert peaks.detect('NVIDIA H200') == 'h200'
  assert peaks.detect('NVIDIA A100-SXM4-80GB') == 'a100'
  assert peaks.detect('TPU v4') == 'tpu_v4'
  assert peaks.detect('TPU v5 lite') == 'tpu_v5e'
  assert peaks.detect('TPU v5') == 'tpu_v5p'
  assert peaks.detect('cpu', 'cpu') == 'cpu'
  assert peaks.detect('Some future chip') is None
  assert peaks.PEAK_TFLOPS['h100'] == 989 and peaks.PEAK_TFLOPS['a100'] == 312
  # 494.5 TFLOP in one second on an H100 SXM: half its peak.
  assert peaks.mfu(494.5e12, 1.0, peaks.PEAK_TFLOPS['h100']) == pytest.approx(0.5)
  assert peaks.mfu(1e12, 1.0, peaks.PEAK_TFLOPS['cpu']) is None
