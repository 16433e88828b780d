"""The sampling CLI: reproducible images, mixing and interpolation semantics."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from gigagan_jax import sample

PROMPTS = ['a red circle', 'two blue squares on a yellow background']


@pytest.fixture
def run_dir(micro_run):
  """A workdir holding checkpoints 0 and 5 of the micro config (conftest)."""
  return micro_run


@pytest.fixture(scope='module')
def sampler(micro_run):
  config, _, params = sample.load_run(micro_run)
  return sample.Sampler(config, params, batch_size=4)


def test_every_image_regenerates_from_its_settings(run_dir, tmp_path):
  out = str(tmp_path / 'grid')
  settings = sample.run(run_dir, prompts=PROMPTS, seeds=[0, 1, 2], batch_size=4, out=out)
  assert settings['step'] == 5 and len(settings['images']) == 6  # the latest
  images = [np.asarray(Image.open(os.path.join(out, r['file']))) for r in settings['images']]
  assert not np.array_equal(images[0], images[1])  # seeds differ
  assert not np.array_equal(images[0], images[3])  # prompts differ
  rec = settings['images'][4]
  again = sample.run(run_dir, prompts=[rec['prompt']], seeds=[rec['seed']], batch_size=4,
                     out=str(tmp_path / 'one'))
  np.testing.assert_array_equal(
      np.asarray(Image.open(os.path.join(tmp_path / 'one', again['images'][0]['file']))),
      images[4])
  with open(os.path.join(out, 'settings.json')) as f:
    assert json.load(f)['images'][4] == dict(rec)


def test_style_mix_crossover_picks_the_scales(sampler):
  s = sampler.num_scales
  plain = sampler.images([0, 7], PROMPTS)
  np.testing.assert_array_equal(sampler.style_mix([0, 7], [5, 5], PROMPTS, crossover=s), plain)
  np.testing.assert_array_equal(sampler.style_mix([5, 5], [0, 7], PROMPTS, crossover=0), plain)
  mixed = sampler.style_mix([0, 7], [5, 5], PROMPTS, crossover=s // 2)
  assert not np.array_equal(mixed, plain)


def test_prompt_mix_and_truncation(sampler, run_dir):
  s = sampler.num_scales
  a = sampler.images([3], PROMPTS[:1])
  np.testing.assert_array_equal(sampler.prompt_mix([3], PROMPTS[:1], PROMPTS[1:], s), a)
  assert not np.array_equal(sampler.prompt_mix([3], PROMPTS[:1], PROMPTS[1:], 1), a)
  config, _, params = sample.load_run(run_dir)
  at_mean = sample.Sampler(config, params, psi=0.0, batch_size=4).images([0, 1, 2], PROMPTS[:1] * 3)
  assert np.abs(at_mean.astype(int) - at_mean[:1]).max() <= 1  # every seed gives the mean image


def test_interpolation_ends_are_the_end_images(sampler, run_dir, tmp_path):
  frames = sampler.interpolate([0], [1], PROMPTS[:1], PROMPTS[1:], np.linspace(0, 1, 5))
  assert frames.shape[:2] == (1, 5)
  np.testing.assert_array_equal(frames[0, 0], sampler.images([0], PROMPTS[:1])[0])
  np.testing.assert_array_equal(frames[0, -1], sampler.images([1], PROMPTS[1:])[0])
  out = str(tmp_path / 'interp')
  sample.run(run_dir, prompts=PROMPTS[:1], seeds=[0, 1, 2], mode='interp_latent', frames=5,
             batch_size=4, out=out)
  gif = Image.open(os.path.join(out, 'interp_001.gif'))
  assert gif.n_frames == 8  # 5 forward, 3 back (ping-pong loop)


def test_missing_checkpoint_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match='no checkpoints/ in'):
    sample.load_run(str(tmp_path))
