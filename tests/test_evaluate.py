"""Checkpoint evaluation: the CLI's outputs, data-parallel = single-device numbers, config errors."""
import glob
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from gigagan_jax.config_utils import load_config, validate
from gigagan_jax.evaluate import probe as probe_lib
from gigagan_jax.evaluate.evaluator import Evaluator, check_eval_config
from gigagan_jax.evaluate.fid import FeatureStats
from gigagan_jax.sample import Sampler, load_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def run_dir(micro_run):
  """Checkpoints 0 and 5 of the micro config: initial, and with perturbed G_ema (conftest)."""
  return micro_run


def eval_config(probe_dir, **overrides):
  ev = load_config(os.path.join(REPO, 'configs/eval_shapes.py'))
  ev.probe_dir, ev.num_samples, ev.batch_size = probe_dir, 40, 16
  ev.update(overrides)
  return ev


def test_cli_writes_json_html_and_tensorboard(run_dir, probe_dir):
  cmd = [sys.executable, '-m', 'gigagan_jax.evaluate', f'--workdir={run_dir}', '--all',
         f'--eval_config.probe_dir={probe_dir}', '--eval_config.num_samples=40',
         '--eval_config.batch_size=16']
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  out_dir = os.path.join(run_dir, 'eval', 'shapes')
  with open(os.path.join(out_dir, 'metrics.json')) as f:
    record = json.load(f)
  assert sorted(record['steps']) == ['0', '5']
  for metrics in record['steps'].values():
    assert 0 <= metrics['attribute_accuracy'] <= 1 and metrics['probe_fd'] > 0
    assert 0 < metrics['attribute_chance'] < 0.5
  assert record['steps']['0'] != record['steps']['5']  # different weights, different scores
  assert record['protocol']['num_generated'] == 40
  assert record['protocol']['probe']['metrics']['heldout_accuracy']['mean'] >= 0.95
  html = open(os.path.join(out_dir, 'report.html')).read()
  for name in ('plot_attribute_accuracy.png', 'plot_probe_fd.png', 'samples_0.png',
               'samples_5.png'):
    assert name in html and os.path.exists(os.path.join(out_dir, name)), name
  assert glob.glob(os.path.join(out_dir, 'events.out.tfevents.*'))
  # Evaluated steps are kept, not redone.
  again = subprocess.run([c for c in cmd if c != '--all'] + ['--step=5'],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0 and 'already in' in again.stdout, again.stderr[-3000:]
  assert 'nothing new' in again.stdout  # and the networks were not built for nothing
  # Other settings never share a table with these numbers ...
  changed = [c.replace('num_samples=40', 'num_samples=24') for c in cmd if c != '--all']
  refused = subprocess.run(changed + ['--step=5'], cwd=REPO, capture_output=True, text=True,
                           timeout=600)
  assert refused.returncode != 0 and 'other eval_config settings' in refused.stderr
  # ... unless --overwrite starts the table afresh: only the new step, new settings.
  redone = subprocess.run(changed + ['--step=5', '--overwrite'], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
  assert redone.returncode == 0, redone.stderr[-3000:]
  with open(os.path.join(out_dir, 'metrics.json')) as f:
    record = json.load(f)
  assert sorted(record['steps']) == ['5']
  assert record['eval_config']['num_samples'] == record['protocol']['num_generated'] == 24


def test_data_parallel_evaluation_matches_one_device(run_dir, probe_dir):
  """Images and metrics of the 8-device evaluator equal a plain 1-device computation."""
  ev = eval_config(probe_dir)
  evaluator = Evaluator(run_dir, ev, log=lambda *_: None)
  assert evaluator.mesh.devices.size == jax.device_count() == 8
  metrics, images = evaluator.evaluate(5)

  config, _, params = load_run(run_dir, 5)
  single = Sampler(config, params, batch_size=ev.batch_size).images(evaluator.seeds,
                                                                   evaluator.prompts)
  assert np.abs(single.astype(int) - images).max() <= 1
  probe = probe_lib.Probe.load(probe_dir, batch_size=ev.batch_size)
  feats, pred = probe(images)
  acc = probe_lib.attribute_accuracy(pred, probe_lib.prompt_targets(evaluator.prompts))
  assert metrics['attribute_accuracy'] == pytest.approx(acc['mean'])
  real = FeatureStats().update(probe.features(evaluator.real_images))
  assert metrics['probe_fd'] == pytest.approx(
      FeatureStats().update(feats).frechet_distance(real), rel=1e-4)


def test_prompt_diversity_is_the_spread_over_latents_and_zero_when_g_ignores_z(run_dir,
                                                                                probe_dir):
  ev = eval_config(probe_dir, metrics=('prompt_diversity',), diversity_prompts=3,
                   diversity_seeds=4)
  evaluator = Evaluator(run_dir, ev, log=lambda *_: None)
  metrics, _ = evaluator.evaluate(5)
  # Direct: one device, per caption the std over its 4 latents.
  config, _, params = load_run(run_dir, 5)
  captions = list(dict.fromkeys(evaluator.prompts))[:3]
  sampler = Sampler(config, params, batch_size=ev.batch_size)
  spreads = [(sampler.images([ev.seed + j for j in range(4)], [c] * 4) / 255).std(axis=0).mean()
             for c in captions]
  assert metrics['prompt_diversity'] == pytest.approx(np.mean(spreads), abs=2e-3)
  assert metrics['prompt_diversity'] > 0.01
  # Cut z out of the mapping network (its first layer's weights on z): w, and
  # so every image of a caption, no longer depend on the latent.
  z_dim = config.generator.z_dim
  params = jax.tree.map(np.array, params)
  params['mapping']['fc0']['kernel'][:z_dim] = 0
  evaluator.sampler.set_params(params)
  assert evaluator.prompt_diversity() < 1e-6


@pytest.mark.parametrize('overrides, field', [
    (dict(metrics=('fid',)), 'eval_config.inception_path'),
    (dict(metrics=('clip_score',)), 'eval_config.clip_dir'),
    (dict(metrics=('precision',)), 'eval_config.metrics'),
    (dict(batch_size=12), 'eval_config.batch_size'),
    (dict(num_examples=-2), 'eval_config.num_examples'),
    (dict(dataset='image_folder'), 'eval_config.metrics'),
    (dict(metrics=('prompt_diversity',), diversity_seeds=1), 'eval_config.diversity_seeds'),
])
def test_bad_eval_config_names_the_field(overrides, field):
  run_config = validate(load_config(os.path.join(REPO, 'configs/t2i_micro.py')))
  with pytest.raises(ValueError, match=field):
    check_eval_config(eval_config('unused', **overrides), run_config)


def test_eval_num_examples_reads_the_held_out_split_of_that_build(tmp_path):
  """Runs trained on captioned_shapes builds of different sizes can be scored on
  one caption set: eval_config.num_examples picks the build whose split is read
  (built on first use), -1 keeps the run's."""
  from conftest import micro_config
  from gigagan_jax.data import captioned_shapes
  from gigagan_jax.evaluate.evaluator import held_out
  run_config = micro_config(str(tmp_path))
  run_config.data.num_examples = 256
  captions = lambda source: [x['caption'] for x in source.__getitems__(range(len(source)))]
  sizes = {}
  for n, build in ((-1, 256), (128, 128)):
    _, source, count, _, _ = held_out(run_config, eval_config('unused', num_examples=n))
    want = captioned_shapes.builder(run_config.data.resolution, build,
                                    str(tmp_path)).as_data_source('test')
    assert count == len(want) and captions(source) == captions(want)
    sizes[n] = count
  assert sizes[128] < sizes[-1]  # another build's split, not the run's


def test_fid_reference_is_the_stored_images_at_eval_size_and_cached_by_what_changes_it(
    run_dir, tmp_path, monkeypatch):
  """KID of the 32 px micro run, at 64 px, against captioned_shapes stored at
  64 px, with a random-weight FID Inception. (FID shares the reference
  statistics; on 16 images of 2048 features its covariances are too singular
  for the matrix square root, as in pytorch-fid.) The real images go to 64 px
  straight from their stored size (not through the generator's 32 px); the
  statistics are cached, reused while nothing changed, and kept apart from
  those of other data (here the run's own 32 px build)."""
  from gigagan_jax.data import captioned_shapes
  from gigagan_jax.evaluate import preprocess
  from test_eval_inception import _random_fid_network
  net, _ = _random_fid_network()
  weights = str(tmp_path / 'fid_inception.npz')
  np.savez(weights, **{k: v.numpy() for k, v in net.state_dict().items()})
  data64 = captioned_shapes.builder(64, 256, str(tmp_path / 'data64'))
  data64.download_and_prepare()
  ev = eval_config('unused', metrics=('kid',), inception_path=weights, num_samples=16,
                   num_real=16, batch_size=16, resolution=64, dataset=str(data64.data_dir),
                   cache_dir=str(tmp_path / 'cache'), kid_subsets=4, kid_subset_size=8)
  evaluator = Evaluator(run_dir, ev, log=lambda *_: None)
  reference = evaluator.reference['inception']

  stored = [np.asarray(x['image']) for x in data64.as_data_source('test').__getitems__(range(16))]
  assert stored[0].shape == (64, 64, 3)
  straight = evaluator._inception_stats([stored], 16)
  through_g = evaluator._inception_stats(
      [[preprocess.crop_resize(x, 32) for x in stored]], 16)  # the old protocol: 64 -> 32 -> 64
  gap = lambda a, b: np.abs(a.mean - b.mean).max()
  assert gap(reference, straight) < 1e-5 < 1e-3 * gap(reference, through_g), (
      gap(reference, straight), gap(reference, through_g))

  metrics, _ = evaluator.evaluate(5)
  assert np.isfinite(metrics['kid']) and metrics['kid'] > 0, metrics
  cached = os.listdir(ev.cache_dir)
  assert len(cached) == 1 and cached[0].startswith('captioned_shapes_test_16_64px')

  # Nothing changed: the file is read, the statistics are not computed again.
  monkeypatch.setattr(Evaluator, '_inception_stats', lambda *_: pytest.fail('recomputed'))
  again = Evaluator(run_dir, ev, log=lambda *_: None).reference['inception']
  np.testing.assert_array_equal(again.mean, reference.mean)
  monkeypatch.undo()
  # Other data (the run's own build, stored at 32 px): other statistics, another file.
  ev.dataset = ''
  own = Evaluator(run_dir, ev, log=lambda *_: None).reference['inception']
  assert len(os.listdir(ev.cache_dir)) == 2
  assert gap(own, reference) > 1e-2, gap(own, reference)
