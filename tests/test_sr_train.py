"""Super-resolution training (config.task='sr'): every upsampler config learns a
fixed batch through the SR train step. (Sharding is the t2i step's machinery,
tested in test_train.py; compiling the SR step for a second mesh here would cost
another ~80 s of CI.)"""
import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from gigagan_jax import parallel
from gigagan_jax.config_utils import ConfigError, load_config, validate
from gigagan_jax.data import captioned_shapes as cs
from gigagan_jax.data import degrade
from gigagan_jax.frozen import lpips
from gigagan_jax.text.tokenizer import make_tokenizer
from gigagan_jax.train import loop
from gigagan_jax.train import state as state_lib
from gigagan_jax.train.sr_step import make_sr_train_step
from gigagan_jax.train.step import batch_ndims, jit_train_step

HR = 32  # HR crop side of the tests (LR 8 px at 4x)
# test_train_step.py's SR tests run small_up_tiny's program: one group compiles it once.
pytestmark = pytest.mark.xdist_group('sr_programs')


def small(config):
  """A config shrunk to 32 px HR crops and a batch of 8."""
  config.data.resolution = 64
  config.data.degradation.hr_size = HR
  config.data.batch_size = 8
  d = config.discriminator
  d.channels, d.levels = (32, 32, 16, 16), 2
  # R1 every step: one compiled step variant instead of two (the lazy choice
  # is tested in test_train_step.py), and these steps are cheap next to a compile.
  config.loss.r1_interval = 1
  return validate(config)


def small_up_tiny():
  """up_tiny shrunk by `small`, its GAN term ramped in after a pixel-loss start
  (0 up to step 10, full from step 20), as SR models train, and G at 3x its
  learning rate (30 steps then show learning; the config's rate needs ~40).
  test_train_step.py checks that schedule on this same config, so one SR
  program serves both files."""
  config = load_config('configs/up_tiny.py')
  config.loss.gan_weight_schedule = ((0, 0.0), (10, 0.0), (20, 1.0))
  config.optim.g_lr *= 3
  return small(config)


def fixed_batch(config):
  """8 (HR crop, bicubic LR) pairs of captioned_shapes images with their captions."""
  examples = [cs.generate_example('train', i, 64) for i in range(8)]
  deg = config.data.degradation
  pairs = [degrade.make_pair(e['image'], deg, seed=i) for i, e in enumerate(examples)]
  batch = make_tokenizer(config.text)([e['caption'] for e in examples])
  batch['lr'] = np.stack([p[0] for p in pairs])
  batch['image'] = np.stack([p[1] for p in pairs])
  return {k: batch[k] for k in batch_ndims(config)}


def run_steps(config, batch, steps, mesh_shape=(1, 1, 1), frozen_lpips=None):
  n = int(np.prod(mesh_shape))
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = mesh_shape
  mesh = parallel.make_mesh(config.mesh, jax.devices()[:n])
  parts = state_lib.build(config, mesh, make_tokenizer(config.text).vocab_size, 0)
  step = jit_train_step(make_sr_train_step(parts.g, parts.d, parts.g_tx, parts.d_tx, config),
                        parts.shardings, mesh, batch_ndims(config))
  frozen = {'backbone': {}, 'lpips': frozen_lpips or {}}
  state, history = parts.init(config), []
  for _ in range(steps):
    state, metrics = step(state, parallel.global_batch(batch, mesh), frozen)
    history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
  return state, history


def natural_batch(config):
  """fixed_batch with its images replaced by crops of natural photos (scikit-image's
  astronaut, coffee, chelsea, rocket at 128 px): flat shapes leave bicubic too little
  to add."""
  from skimage import data as samples  # pylint: disable=g-import-not-at-top
  names = ('astronaut', 'coffee', 'chelsea', 'rocket')
  images = [np.asarray(Image.fromarray(getattr(samples, n)()).resize((128, 128), Image.BICUBIC))
            for n in names]
  pairs = [degrade.make_pair(images[i % len(names)], config.data.degradation, seed=i)
           for i in range(config.data.batch_size)]
  batch = fixed_batch(config)
  batch['lr'] = np.stack([p[0] for p in pairs])
  batch['image'] = np.stack([p[1] for p in pairs])
  return batch


def test_gigagan_upsampler_learns_a_fixed_batch():
  """up_tiny (GAN + matching-aware + L1, batch sharded over 2 devices) starts as
  exactly bicubic and learns to beat it on a fixed batch of natural crops: the L1
  to the HR images falls below the first step's (bicubic's); D and R1 run."""
  config = small_up_tiny()
  _, history = run_steps(config, natural_batch(config), 30, mesh_shape=(2, 1, 1))
  assert history[0]['r1'] > 0 and history[0]['d_loss'] > 0
  pixel = [h['pixel'] for h in history]
  assert np.mean(pixel[-5:]) < 0.95 * pixel[0], pixel


@pytest.mark.parametrize('kind', ['srcnn', 'esrgan', 'swinir'])
def test_baseline_configs_learn_a_fixed_batch(kind, tmp_path):
  config = small(load_config(f'configs/sr_baselines.py:{kind}'))
  if kind == 'esrgan':
    config.upsampler.num_blocks = 1  # one RRDB of the two: a smaller program to compile
  frozen_lpips = None
  if config.loss.lpips_weight > 0:  # ESRGAN's perceptual term, random VGG weights
    params = lpips.LPIPS().init(jax.random.PRNGKey(0), np.zeros((1, 16, 16, 3)),
                                np.zeros((1, 16, 16, 3)))['params']
    config.loss.lpips_path = str(tmp_path / 'lpips.npz')
    lpips.save_params_npz(params, config.loss.lpips_path)
    frozen_lpips = lpips.load_params_npz(config.loss.lpips_path)
  _, history = run_steps(config, fixed_batch(config), 8, frozen_lpips=frozen_lpips)
  # What G fits: its loss without the adversarial part (most of ESRGAN's g_loss
  # here), a game with D that over 8 steps rises or falls by chance. (8 steps:
  # LPIPS's VGG16 costs ESRGAN 2.6 s a step; its loss is at 0.55 of the first by step 8.)
  loss = [h['g_loss'] - h.get('gan_weight', 0.0) * h.get('g_adv', 0.0) for h in history]
  assert np.all(np.isfinite(loss)) and np.mean(loss[-3:]) < 0.8 * loss[0], loss
  if kind == 'esrgan':
    assert history[0]['lpips'] > 0 and history[0]['d_loss'] > 0  # all three terms ran


def test_sr_config_errors_name_the_field():
  config = load_config('configs/up_tiny.py')
  config.data.degradation.scale = 8
  with pytest.raises(ConfigError, match=r'data.degradation.scale: 8 differs from upsampler.scale 4'):
    validate(config)
  config = load_config('configs/up_tiny.py')
  config.data.degradation.hr_size = 48
  with pytest.raises(ConfigError, match='data.degradation.hr_size'):
    validate(config)
  config = load_config('configs/up_tiny.py')
  config.train.shared_fakes = True  # the t2i step's option, which the SR step would ignore
  with pytest.raises(ConfigError, match='train.shared_fakes'):
    validate(config)
  config = load_config('configs/sr_baselines.py:srcnn')
  config.upsampler.kernel_sizes = (9, 5)
  with pytest.raises(ConfigError, match='upsampler.kernel_sizes'):
    validate(config)


def test_a_run_without_d_stops_at_its_time_budget_as_at_its_last_step(micro_data_dir, tmp_path):
  """SRCNN (no D, so no R1 among its metrics) through the training loop on the micro
  data, with train.max_minutes already spent at the first log step: the run ends
  there as at train.steps, with that step logged, saved and sampled."""
  config = small(load_config('configs/sr_baselines.py:srcnn'))
  config.data.data_dir = micro_data_dir
  config.data.resolution, config.data.num_examples = 32, 256  # t2i_micro's data
  config.train.steps, config.train.log_every, config.train.max_minutes = 100, 2, 1e-6
  workdir = tmp_path / 'run'
  last = loop.train(config, str(workdir), devices=jax.devices()[:1])
  lines = [json.loads(line) for line in open(workdir / 'metrics.jsonl')]
  assert [line['step'] for line in lines] == [2] and 'r1' not in last, lines
  assert os.listdir(workdir / 'checkpoints') == ['2']
  assert sorted(os.listdir(workdir / 'samples')) == ['step_0000000.png', 'step_0000002.png']


def test_on_the_budgets_clock_a_resumed_run_goes_on_from_its_saved_seconds(micro_data_dir,
                                                                           tmp_path):
  """optim.lr_schedule_clock='budget': the first run spends its budget by the
  first log step and saves its seconds; resumed, it goes on from them, so its
  steps train at the schedule's end (0.1) and it stops at its next log step.
  A resume that started its clock afresh would read the schedule at its step
  instead (0.973 at step 3)."""
  config = small(load_config('configs/sr_baselines.py:srcnn'))
  config.data.data_dir = micro_data_dir
  config.data.resolution, config.data.num_examples = 32, 256  # t2i_micro's data
  config.train.steps, config.train.log_every, config.train.max_minutes = 100, 2, 1e-6
  config.optim.lr_schedule, config.optim.lr_schedule_clock = ((0, 1.0), (100, 0.1)), 'budget'
  workdir = tmp_path / 'run'
  for _ in range(2):
    loop.train(config, str(workdir), devices=jax.devices()[:1])
  lines = [json.loads(line) for line in open(workdir / 'metrics.jsonl')]
  assert [line['step'] for line in lines] == [2, 4], lines
  # Step 2 ran at step 1's multiplier: the clock is read at log steps.
  np.testing.assert_allclose([line['lr_multiplier'] for line in lines], [0.991, 0.1], rtol=1e-6)
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4']
