"""The memory planner: per-device state bytes follow the mesh; XLA's analysis is read."""
import json
import os
import re
import subprocess
import sys

import pytest

from gigagan_jax import plan
from gigagan_jax.config_utils import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_state_bytes_shrink_by_the_fsdp_factor():
  config = load_config(os.path.join(REPO, 'configs/t2i_micro.py'))
  flat = plan.plan(config, {'data': 8, 'fsdp': 1, 'tensor': 1}, 2**30, compile_step=False)
  fsdp4 = plan.plan(config, {'data': 2, 'fsdp': 4, 'tensor': 1}, 2**30, compile_step=False)
  fsdp8 = plan.plan(config, {'data': 1, 'fsdp': 8, 'tensor': 1}, 2**30, compile_step=False)
  for part in ('g', 'd', 'ema', 'g_opt', 'd_opt'):
    # Small arrays (biases, an fromRGB with 3 inputs) stay replicated, so a
    # little more than 1/4 (1/8) of the replicated bytes remains per device.
    assert 0.25 <= fsdp4['state'][part] / flat['state'][part] < 0.32, part
    assert 0.125 <= fsdp8['state'][part] / flat['state'][part] < 0.2, part
  assert flat['batch_size'] == config.data.batch_size


def test_temporaries_do_not_grow_with_fsdp_at_a_fixed_per_device_batch():
  """Activations stay split over the batch (parallel.shard_batch), and
  mesh.conv_weights='auto' runs a layer weight-stationary only where its
  partial sums, the whole data group's output, are at most about twice its
  kernel. So at 2 images per device t2i_micro's per-device temporaries on
  fsdp 8 are within 10% of fsdp 2's (measured 6.13 -> 6.21 MB), below those
  of gathered kernels (8.38 MB on fsdp 2). Without the activation constraints
  they grew 3.3x (7.2 -> 23.8 MiB, BENCHMARKS.md): each device held every
  sample at a slice of the channels; with a factor 1 for 2 in the rule, 6.19
  -> 8.29 MB."""
  temps = {}
  for policy, fsdp in (('auto', 2), ('auto', 8), ('gathered', 2)):
    config = load_config(os.path.join(REPO, 'configs/t2i_micro.py'))
    config.data.batch_size = 2 * fsdp
    config.mesh.conv_weights = policy
    temps[policy, fsdp] = plan.plan(config, {'data': 1, 'fsdp': fsdp, 'tensor': 1})['xla']['temp']
  assert temps['auto', 8] <= 1.1 * temps['auto', 2], temps
  assert temps['auto', 2] <= temps['gathered', 2], temps


# The (2,4,1) step of test_train.py's sharded test: compiled once for both.
@pytest.mark.xdist_group('micro_programs')
def test_cli_compiles_and_says_whether_it_fits():
  """A real compile on 8 fake devices; 1 MiB cannot hold the step, 16 GiB can.

  The CLI says the first; plan() in this process (same XLA flags and device
  count, so its compile is a hit in the session's persistent compilation
  cache, tests/conftest.py) the second, for the same peak.
  """
  out = subprocess.run(
      [sys.executable, '-m', 'gigagan_jax.plan', '--config=configs/t2i_micro.py',
       '--mesh=data:2,fsdp:4,tensor:1', '--device_memory=1MiB'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'DOES NOT FIT' in out.stdout and '= 8 devices' in out.stdout
  temp = re.search(r'temporaries\s+([\d.]+) (\w+)', out.stdout)
  assert temp and _mib(' '.join(temp.groups())) > 0
  peak = re.search(r'peak estimate\s+([\d.]+ \w+)', out.stdout)
  assert peak and 1 < _mib(peak.group(1)) < 16 * 2**10
  roomy = plan.format_plan(plan.plan(load_config(os.path.join(REPO, 'configs/t2i_micro.py')),
                                     plan.parse_mesh('data:2,fsdp:4,tensor:1'), 16 * 2**30))
  assert re.search(r'of 16\.00 GiB: FITS \(\d+%\)', roomy), roomy
  assert peak.group(0) in roomy  # same step, same estimate


def test_nocompile_gives_the_paper_size_state_split_by_fsdp():
  """`plan --nocompile --json` for configs/t2i_paper.py on fsdp 8: state bytes from shapes
  alone, as one JSON object.

  models.summary (README): G 682.8M float32 parameters; Adam keeps mu and nu.
  """
  out = subprocess.run([sys.executable, '-m', 'gigagan_jax.plan', '--config=configs/t2i_paper.py',
                        '--mesh=data:1,fsdp:8,tensor:1', '--nocompile', '--json'],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  p = json.loads(out.stdout)
  assert 'xla' not in p and p['devices'] == 8 and p['mesh']['fsdp'] == 8
  state = p['state']
  assert 0.125 <= state['g'] / (682.8e6 * 4) < 0.14
  assert state['g_opt'] == pytest.approx(2 * state['g'], rel=0.02)
  assert state['ema'] == state['g']
  # The losses on a frozen CLIP ViT-B/32, from shapes (no loss.clip_dir), in
  # bfloat16 (the paper config's compute dtype), replicated: both towers
  # (151.3M params) and the vision-aided tower + projection (88.0M;
  # frozen.sizes, tests/test_frozen.py).
  assert p['frozen'] == {'clip': 151_277_312 * 2, 'vision_aided': 88_045_056 * 2}
  assert 0 < p['vision_aided_heads'] < 0.01 * state['d']


@pytest.mark.parametrize('text, want', [('16GiB', 16 * 2**30), ('80GB', 80 * 10**9),
                                        ('1.5 MiB', int(1.5 * 2**20))])
def test_byte_sizes(text, want):
  assert plan.parse_bytes(text) == want


def test_bad_mesh_and_memory_are_named():
  with pytest.raises(ValueError, match='--mesh'):
    plan.parse_mesh('data:2,fdsp:4')
  with pytest.raises(ValueError, match='--device_memory'):
    plan.parse_bytes('16 gigs')


@pytest.mark.paper_compile
def test_train_cli_compiles_the_paper_size_step_on_8_devices_with_fsdp8(tmp_path):
  """python -m gigagan_jax.train --compile_only on configs/t2i_paper.py, mesh (1, 8, 1), batch 8:
  the step compiles and parameters + optimiser state are split 8 ways.

  About 4 minutes on 2 cores, so not in the default run (pyproject.toml):
  `python -m pytest -m paper_compile tests/test_plan.py`. CI covers the same
  state split with `plan --nocompile` above.
  """
  out = subprocess.run(
      [sys.executable, '-m', 'gigagan_jax.train', '--config=configs/t2i_paper.py',
       f'--workdir={tmp_path}', '--config.mesh.data=1', '--config.mesh.fsdp=8',
       '--config.data.batch_size=8', '--compile_only'],
      cwd=REPO, capture_output=True, text=True, timeout=1500)  # 8 fake devices: conftest's XLA_FLAGS
  assert out.returncode == 0, out.stderr[-3000:]
  assert "mesh {'data': 1, 'fsdp': 8, 'tensor': 1} = 8 devices, global batch 8" in out.stdout
  mib = lambda name: _mib(re.search(rf'{name}\s+([\d.]+ \w+)', out.stdout).group(1))
  g_unsharded = 682.8e6 * 4 / 2**20  # models.summary: G 682.8M float32 parameters
  assert 0.125 <= mib('G params') / g_unsharded < 0.14
  assert mib('G optimiser') == pytest.approx(2 * mib('G params'), rel=0.02)  # Adam mu + nu
  assert mib('temporaries') > 0
  assert not os.listdir(tmp_path)  # nothing trained, nothing written


def _mib(text: str) -> float:
  value, unit = text.split()
  return float(value) * {'B': 2**-20, 'KiB': 2**-10, 'MiB': 1, 'GiB': 2**10}[unit]
