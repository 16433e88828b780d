"""SR inference and evaluation: the upsample CLI, `evaluate --task=sr`, bench/upsample.py.

One tiny SRCNN run directory (configs/sr_baselines.py:srcnn, shrunk, on 64
captioned_shapes images) serves every test. It is written with the
Checkpointer directly, as the training loop writes it (the resolved config
and the full state dict, 'ema' = freshly initialised SRCNN params; D and the
optimiser states as zeros): compiling D's init and a train step would cost
~30 s here, and training is tested elsewhere. What is checked is the
plumbing (checkpoint -> model -> tiles -> PNG; data -> metrics -> table),
not image quality; SRCNN compiles in a second.
"""
import json
import os
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from flax import linen as nn

from configs import sr_baselines
from gigagan_jax import parallel
from gigagan_jax import upsample
from gigagan_jax.config_utils import load_config, validate
from gigagan_jax.evaluate import sr as sr_eval
from gigagan_jax.evaluate import sr_metrics
from gigagan_jax.frozen import lpips
from gigagan_jax.models.baselines import bicubic_upsample
from gigagan_jax.models.build import build_models, example_g_inputs
from gigagan_jax.sample import load_run
from gigagan_jax.text.tokenizer import make_tokenizer
from gigagan_jax.train import state as state_lib
from gigagan_jax.train.checkpoint import Checkpointer
from gigagan_jax.train.samples import to_uint8

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_srcnn_config(data_dir):
  c = sr_baselines.get_config('srcnn')
  c.upsampler.channels = (8, 8)
  c.upsampler.kernel_sizes = (5, 3, 3)
  c.data.data_dir = str(data_dir)
  c.data.num_examples = 64          # + 6 held-out ('test') examples
  c.data.batch_size = 4
  c.text.max_len = 8
  c.discriminator.channels = (8, 8, 8, 8, 8)  # part of the state; never run (gan_weight 0)
  return c


def write_sr_run(config, workdir: str, step: int = 2, perturb: float = 0.0):
  """A run directory whose checkpoint `step` holds G = G_ema = init params of config's
  upsampler, plus Gaussian noise of std `perturb` (0: none)."""
  config = validate(config)
  mesh = parallel.make_mesh(config.mesh, jax.devices()[:1])
  parts = state_lib.build(config, mesh, make_tokenizer(config.text).vocab_size, 0)
  state = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), parts.abstract)
  @jax.jit  # one program: op by op, the init of a GigaGAN upsampler takes seconds
  def init():
    g = nn.meta.unbox(parts.g.init(jax.random.PRNGKey(0), *example_g_inputs(config, 1))['params'])
    keys = iter(jax.random.split(jax.random.PRNGKey(1), len(jax.tree.leaves(g))))
    return jax.tree.map(lambda x: x + perturb * jax.random.normal(next(keys), x.shape, x.dtype), g)
  state['g'] = state['ema'] = jax.device_get(init())
  ckpt = Checkpointer(workdir, config.train)
  ckpt.save(step, state, None, config, force=True)
  ckpt.wait()
  ckpt.close()


@pytest.fixture(scope='module')
def sr_run(tmp_path_factory):
  root = tmp_path_factory.mktemp('sr')
  workdir = str(root / 'srcnn_run')
  write_sr_run(tiny_srcnn_config(root / 'data'), workdir)
  return workdir


def _save(path, array):
  Image.fromarray(array).save(path)
  return str(path)


def test_upsample_one_tile_equals_direct_apply(sr_run, tmp_path):
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (24, 24, 3), np.uint8)
  out = str(tmp_path / 'out.png')
  info = upsample.run(sr_run, _save(tmp_path / 'in.png', image), out=out, tile=64, bicubic=True)
  result = np.asarray(Image.open(out))
  assert result.shape == (96, 96, 3) and info['out_size'] == [96, 96]
  assert info['passes'][0]['tiles'] == 1 and info['kind'] == 'srcnn' and info['step'] == 2
  assert np.asarray(Image.open(info['bicubic'])).shape == (96, 96, 3)
  # The same checkpoint applied directly, without the CLI's tiling and padding.
  config, _, params = load_run(sr_run)
  g, _ = build_models(config, make_tokenizer(config.text).vocab_size)
  lr = image[None].astype(np.float32) / 127.5 - 1
  direct = to_uint8(g.apply({'params': params}, lr))[0]
  assert np.abs(result.astype(int) - direct.astype(int)).max() <= 1


def test_upsample_tiled_and_chained_sizes(sr_run, tmp_path):
  image = np.random.default_rng(1).integers(0, 256, (20, 36, 3), np.uint8)
  src = _save(tmp_path / 'in.png', image)
  info = upsample.run(sr_run, src, out=str(tmp_path / 'tiled.png'), tile=16, overlap=4, batch=4)
  assert info['passes'][0]['tiles'] == 2 * 3  # 20 px: 2 tiles of 16; 36 px: 3
  assert np.asarray(Image.open(info['out'])).shape == (80, 144, 3)
  model = upsample.SRModel.from_run(sr_run)
  out, passes = upsample.upsample_image(model, image[:10, :12], tile=16, times=2)
  assert out.shape == (160, 192, 3) and out.dtype == np.uint8  # 10x12 * 4 * 4
  assert [p['in_size'] for p in passes] == [[10, 12], [40, 48]]
  # The default tile is the training LR side: 64 px HR crops / 4.
  assert model.train_tile == 16
  _, passes = upsample.upsample_image(model, image)
  assert passes[0]['tile'] == 16 and passes[0]['tiles'] == 2 * 3


def test_upsample_errors_name_the_file(sr_run, tmp_path):
  with pytest.raises(upsample.UpsampleError, match='missing.png'):
    upsample.run(sr_run, str(tmp_path / 'missing.png'))
  bad = tmp_path / 'bad.png'
  bad.write_text('not an image')
  with pytest.raises(upsample.UpsampleError, match='bad.png'):
    upsample.run(sr_run, str(bad))
  good = _save(tmp_path / 'ok.png', np.zeros((8, 8, 3), np.uint8))
  with pytest.raises(FileNotFoundError, match='no_such_run'):
    upsample.run(str(tmp_path / 'no_such_run'), good)


def test_evaluate_sr_table_and_bicubic_reference(sr_run, tmp_path):
  out = str(tmp_path / 'eval')
  # LPIPS with a random VGG trunk: checks the plumbing, not the metric (test_eval_lpips.py).
  img = np.zeros((1, 32, 32, 3), np.float32)
  lpips_params = lpips.LPIPS().init(jax.random.PRNGKey(0), img, img)['params']
  lpips_path = str(tmp_path / 'lpips.npz')
  lpips.save_params_npz(lpips_params, lpips_path)
  record = sr_eval.evaluate_runs([sr_run], out_dir=out, num_images=4, batch_size=2,
                                 lpips_path=lpips_path, verbose=False)
  with open(os.path.join(out, 'sr_metrics.json')) as f:
    saved = json.load(f)
  table = open(os.path.join(out, 'sr_table.md')).read()
  assert [r['name'] for r in saved['rows']] == ['bicubic', 'srcnn_run']
  assert '| bicubic | bicubic |' in table and '| srcnn_run | srcnn |' in table
  assert saved['protocol']['crop_border'] == 4 and saved['protocol']['num_images'] == 4
  assert os.path.isfile(os.path.join(out, 'sr_crops.png'))
  # Bicubic's PSNR recomputed directly from the same held-out arrays.
  config, _ = sr_eval.run_config(sr_run)
  pairs = sr_eval.load_pairs(config, num_images=4)
  assert pairs['lr'].shape == (4, 16, 16, 3) and pairs['hr'].shape == (4, 64, 64, 3)
  bic = to_uint8(bicubic_upsample(pairs['lr'].astype(np.float32) / 127.5 - 1, 4))
  want = float(np.mean(sr_metrics.psnr(bic, pairs['hr'], crop_border=4)))
  assert saved['rows'][0]['psnr'] == pytest.approx(want, abs=1e-4)
  x, y = (a.astype(np.float32) / 127.5 - 1 for a in (bic, pairs['hr']))
  # In batches of 2 as the evaluation ran: the compiled program is reused.
  want_lpips = [lpips.lpips_distance(lpips_params, x[i:i + 2], y[i:i + 2]) for i in (0, 2)]
  assert saved['rows'][0]['lpips'] == pytest.approx(float(np.mean(want_lpips)), rel=1e-4)
  assert np.isfinite(saved['rows'][1]['lpips'])
  assert record['rows'][1]['params'] > 0 and record['rows'][1]['ms_per_image'] > 0
  # By default each model runs on tiles of its training LR side (here the
  # whole 16 px input); --tile=8 runs 3 x 3 tiles of 8 px per image, as the
  # upsample CLI would, and --tile=0 whole images in batches.
  assert record['rows'][1]['tile'] == 16 and '| srcnn_run | srcnn | - | 16 |' in table
  model = upsample.SRModel.from_run(sr_run)
  tiled = [upsample.upsample_image(model, lr, seed=i, tile=8)[0] for i, lr in enumerate(pairs['lr'])]
  whole, _ = sr_eval.evaluate_model(model, pairs, batch_size=2)
  for tile, want in ((8, np.stack(tiled)), (0, whole)):
    rec = sr_eval.evaluate_runs([sr_run], out_dir=out, num_images=4, batch_size=2, tile=tile,
                                verbose=False)
    assert rec['protocol']['tile'] == tile and rec['rows'][1]['tile'] == tile
    assert rec['rows'][1]['per_image']['psnr'] == sr_eval.metrics_of(want, pairs['hr'], 4)['psnr']
  assert not np.array_equal(tiled, whole)  # the seams of 8 px tiles show
  with pytest.raises(ValueError, match='--tile=-1'):
    sr_eval.evaluate_runs([sr_run], tile=-1)
  # --data_dir: the same data, moved, gives the same figures; a missing one is named.
  moved = str(tmp_path / 'moved_data')
  shutil.copytree(config.data.data_dir, moved)
  rec = sr_eval.evaluate_runs([sr_run], out_dir=out, num_images=4, batch_size=2, data_dir=moved,
                              verbose=False)
  assert rec['protocol']['data_dir'] == moved
  assert [r['psnr'] for r in rec['rows']] == [r['psnr'] for r in record['rows']]
  with pytest.raises(FileNotFoundError, match='no_data_here'):
    sr_eval.evaluate_runs([sr_run], data_dir=str(tmp_path / 'no_data_here'))


def test_evaluate_sr_gives_each_prompt_setting_its_own_row(tmp_path):
  """A GigaGAN upsampler with perturbed weights (untrained, it is exactly bicubic
  and ignores the text) gets one row per prompt setting, each computed from its
  own prompts: the three differ, and 'own' equals a direct call with the captions."""
  config = load_config('configs/up_tiny.py')
  config.data.resolution, config.data.degradation.hr_size = 32, 32
  config.data.data_dir, config.data.num_examples = str(tmp_path / 'data'), 64  # 6 held out
  config.discriminator.channels, config.discriminator.levels = (16, 16, 16, 16), 2
  workdir = str(tmp_path / 'up_run')
  write_sr_run(config, workdir, perturb=0.2)
  record = sr_eval.evaluate_runs([workdir], out_dir=str(tmp_path / 'eval'), num_images=4,
                                 batch_size=4, verbose=False)
  rows = record['rows']
  assert [(r['name'], r['prompt']) for r in rows] == [
      ('bicubic', None), ('up_run', 'own'), ('up_run', 'other'), ('up_run', 'empty')]
  psnr = {r['prompt']: r['per_image']['psnr'] for r in rows[1:]}
  assert psnr['own'] != psnr['other'] != psnr['empty'] != psnr['own'], psnr
  assert '| up_run | gigagan | other |' in record['table']
  model = upsample.SRModel.from_run(workdir)
  pairs = sr_eval.load_pairs(model.config, num_images=4)
  sr, _ = sr_eval.evaluate_model(model, pairs, batch_size=4)
  assert sr_eval.metrics_of(sr, pairs['hr'], 4)['psnr'] == psnr['own']
  # 'own' is the whole caption: the run's training word dropout stays in training.
  whole = ml_collections.ConfigDict(model.config.to_dict())
  assert whole.data.word_dropout > 0
  whole.data.word_dropout = 0.0
  assert pairs['captions'] == sr_eval.load_pairs(whole, num_images=4)['captions']
  # Prompts the tokenizer cannot keep whole: empty (also after whitespace
  # cleaning) is start + end token; too long is cut, keeping the end token
  # (gigagan_jax/text/tokenizer.py); any Unicode is bytes. The model runs on all.
  text = model.text(['', '   ', 'x' * 1000, '🙂 ünïcode'])
  max_len = model.config.text.max_len
  assert text['eot'].tolist()[0] == 1 and text['eot'].tolist()[2] == max_len - 1
  lr = pairs['lr'].astype(np.float32) / 127.5 - 1
  assert np.all(np.isfinite(np.asarray(model(lr, text, model.latents(range(4))))))
  with pytest.raises(ValueError, match='--prompts=mine'):
    sr_eval.evaluate_runs([workdir], prompts=['mine'])


def test_other_prompts_are_never_the_image_s_own_caption():
  captions = ['a red circle', 'a red circle', 'two blue squares', 'a green star']
  assert sr_eval.prompts_for('other', captions) == [
      'two blue squares', 'a green star', 'a red circle', 'a red circle']
  assert sr_eval.prompts_for('other', ['a', 'b', 'b']) == ['b', 'a', 'a']
  assert sr_eval.prompts_for('other', ['same', 'same']) is None
  assert sr_eval.prompts_for('empty', captions) == [''] * 4
  assert sr_eval.prompts_for('own', captions) == captions


def test_evaluate_sr_refuses_other_scale_or_data(sr_run, tmp_path):
  config, _ = sr_eval.run_config(sr_run)
  linked = config.copy_and_resolve_references()
  linked.data.data_dir = str(tmp_path / 'link')
  os.symlink(config.data.data_dir, linked.data.data_dir)
  sr_eval.check_compatible({'a': config, 'b': linked})  # the same data by another path
  linked.data.data_dir = str(tmp_path)
  with pytest.raises(sr_eval.IncompatibleRunsError, match='data_dir'):
    sr_eval.check_compatible({'a': config, 'b': linked})
  other = config.copy_and_resolve_references()
  other.upsampler.scale = 2
  with pytest.raises(sr_eval.IncompatibleRunsError, match='scale'):
    sr_eval.check_compatible({'a': config, 'b': other})
  other = config.copy_and_resolve_references()
  other.data.degradation.mode = 'realesrgan'
  with pytest.raises(sr_eval.IncompatibleRunsError, match='degradation.mode'):
    sr_eval.check_compatible({'a': config, 'b': other})
  sr_eval.check_compatible({'a': config, 'b': config.copy_and_resolve_references()})


def test_bench_upsample_prints_json():
  cmd = [sys.executable, 'bench/upsample.py', '--config=configs/sr_baselines.py:srcnn',
         '--config.upsampler.channels=(8,8)', '--lr_size=16', '--batch=2', '--repeats=1',
         '--tiled_in=24', '--tile=16', '--tile_batch=2']
  res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-2000:]
  lines = res.stdout.strip().splitlines()
  records = [json.loads(line) for line in lines[:-1]]
  assert [(r['case'], r['batch']) for r in records] == [('direct', 1), ('direct', 2), ('tiled', 1)]
  assert records[0]['out'] == 64 and records[2]['out'] == 96 and records[2]['tiles'] == 4
  assert all(r['ms_per_image'] > 0 for r in records)
  assert lines[-1].startswith('upsample bench')


def test_sample_cli_chains_the_upsampler(sr_run, micro_run, tmp_path):
  """sample --upsampler: each generated image also comes out upsampled, equal to the
  SR model applied to the saved low-res image."""
  from gigagan_jax import sample
  out = str(tmp_path / 'out')
  settings = sample.run(micro_run, prompts=['a red circle'], seeds=[0, 1], batch_size=2, out=out,
                        upsampler=sr_run)
  assert settings['upsampler']['step'] == 2 and settings['upsampler']['kind'] == 'srcnn'
  config, _, params = load_run(sr_run)
  g, _ = build_models(config, make_tokenizer(config.text).vocab_size)
  for rec in settings['images']:
    low = np.asarray(Image.open(os.path.join(out, rec['file'])))
    high = np.asarray(Image.open(os.path.join(out, rec['upsampled'])))
    assert rec['upsampled'].endswith('_x4.png') and high.shape == (128, 128, 3)
    direct = to_uint8(g.apply({'params': params}, low[None].astype(np.float32) / 127.5 - 1))[0]
    assert np.abs(high.astype(int) - direct.astype(int)).max() <= 1
