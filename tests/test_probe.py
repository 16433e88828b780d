"""The attribute probe: held-out accuracy, Frechet distance on its features, scoring rules."""
import json
import os

import numpy as np
import pytest

from gigagan_jax.evaluate import probe as probe_lib
from gigagan_jax.evaluate.fid import FeatureStats
from gigagan_jax.evaluate.train_probe import load_split


@pytest.fixture(scope='session')
def probe(probe_dir):
  return probe_lib.Probe.load(probe_dir)


def test_probe_reaches_95_percent_on_heldout_images(probe_dir):
  with open(os.path.join(probe_dir, 'probe.json')) as f:
    acc = json.load(f)['metrics']['heldout_accuracy']
  assert acc['mean'] >= 0.95, acc
  assert all(acc[k] >= 0.85 for k in probe_lib.ATTRIBUTES), acc
  assert acc['chance'] < 0.4


def test_reloaded_probe_scores_like_the_report(probe, probe_dir):
  """The Orbax round trip keeps the weights: the saved accuracy is reproduced,
  up to one prediction.

  Why one: the report was scored in the training subprocess (XLA's default
  optimisation level, one CPU device), this in the test process (level 0, 8
  host devices). Other fusions and reduction orders move logits by float32
  rounding (~1e-6 relative), which flips an argmax only where an image's two
  top logits are that close: among the split's N = 1000 images we expect
  no such near-tie on any attribute, so at most one flipped
  (image, attribute) pair is allowed, i.e. a mean accuracy within
  1/labelled and each attribute's within 1/(its labelled count). A weight
  the round trip loses changes more (measured: one GroupNorm's bias zeroed
  flips 6 pairs, one head's kernel zeroed 854, a fresh init ~3900).
  """
  config = probe.config
  images, targets = load_split(config, 'test')
  acc = probe_lib.attribute_accuracy(probe(images)[1], targets)
  with open(os.path.join(probe_dir, 'probe.json')) as f:
    metrics = json.load(f)['metrics']
  saved = metrics['heldout_accuracy']
  assert metrics['heldout_examples'] == len(images) == 1000
  # These depend on the labels only, not on the weights: exactly equal.
  assert (acc['labelled'], acc['chance']) == (saved['labelled'], saved['chance'])
  labelled = {k: int((np.asarray(targets[k]) >= 0).sum()) for k in probe_lib.ATTRIBUTES}
  hits = lambda a: {k: round(a[k] * m) for k, m in labelled.items() if m}
  flipped = {k: abs(hits(acc)[k] - hits(saved)[k]) for k in hits(acc)}
  assert sum(flipped.values()) <= 1, (flipped, acc, saved)
  assert abs(acc['mean'] - saved['mean']) <= 1 / acc['labelled'] + 1e-12, (acc, saved)


def test_frechet_distance_on_probe_features(probe):
  """Real vs real is near 0, far below noise or a mis-coloured copy.

  Real vs real is not exactly 0: with 128-d features and 1000 vs 2000 images
  the estimator's finite-sample bias is ~35 (measured), against ~200 for the
  mis-coloured copy and ~8000 for noise.
  """
  config = probe.config
  test_images, _ = load_split(config, 'test')
  train_images, _ = load_split(config, 'train', limit=2000)
  real = FeatureStats().update(probe.features(test_images))
  fd = lambda images: FeatureStats().update(probe.features(images)).frechet_distance(real)
  real_fd = fd(train_images)
  rng = np.random.default_rng(0)
  noise_fd = fd(rng.integers(0, 256, test_images.shape, dtype=np.uint8))
  recoloured_fd = fd(test_images[..., ::-1])  # RGB -> BGR: red becomes blue, ...
  assert real_fd < 0.25 * recoloured_fd, (real_fd, recoloured_fd)
  assert real_fd < 0.01 * noise_fd, (real_fd, noise_fd)


def test_attribute_accuracy_counts_only_named_attributes():
  prompts = ['a red circle', 'two blue squares on a yellow background', 'a star at the top left']
  targets = probe_lib.prompt_targets(prompts)
  assert targets['count'].tolist() == [0, 1, 0]           # count 1..3 -> class 0..2
  assert targets['position'].tolist() == [-1, -1, 0]
  assert targets['background'].tolist() == [-1, 3, -1]
  pred = {k: np.where(v >= 0, v, 0) for k, v in targets.items()}
  pred['shape'] = np.array([0, 1, 4])                     # the star is called a cross
  acc = probe_lib.attribute_accuracy(pred, targets)
  # named: circle/red/1, squares/blue/2/yellow, star/1/top-left = 10 pairs, 1 wrong
  assert acc['labelled'] == 10
  assert acc['mean'] == pytest.approx(0.9)
  assert acc['shape'] == pytest.approx(2 / 3)
  assert acc['size'] is None
  k = probe_lib.ATTRIBUTES
  want_chance = (3 / k['shape'] + 2 / k['color'] + 3 / k['count'] + 1 / k['background'] +
                 1 / k['position']) / 10
  assert acc['chance'] == pytest.approx(want_chance)

