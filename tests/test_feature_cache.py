"""text/feature_cache.py: MiniLM features once per distinct caption, fed to the train step.

The cache must give the backbone's features, the same bits for a caption
whatever batch it arrives in (a resumed run starts with an empty cache), and a
training loop that uses it must train as one that runs the backbone in the step.
"""
import jax
import numpy as np
import pytest

import conftest
from gigagan_jax.config_utils import validate
from gigagan_jax.text import whitening
from gigagan_jax.text.backbone import make_backbone
from gigagan_jax.text.feature_cache import FeatureCache
from gigagan_jax.text.tokenizer import make_tokenizer
from gigagan_jax.train import loop

CAPTIONS = ['a red circle', 'two small blue squares on the left', 'a red circle',
            'three green crosses on a white background', '', 'a red circle',
            'one large yellow triangle']


def _minilm(config):
  config.text.update(dict(tokenizer='minilm', backbone='minilm', max_len=16))
  return config


def test_features_equal_the_backbone_and_do_not_depend_on_the_batch():
  text_cfg = _minilm(conftest.micro_config()).text
  backbone, tokenize = make_backbone(text_cfg), make_tokenizer(text_cfg)
  t = tokenize(CAPTIONS)
  tokens, eot = np.asarray(t['tokens']), np.asarray(t['eot'])

  cache = FeatureCache(backbone, block=4)  # 5 distinct captions: two blocks, one padded
  feats = cache(tokens, eot)
  assert feats.shape == (7, 16, backbone.dim) and feats.dtype == np.float32
  assert (len(cache), cache.misses, cache.hits) == (5, 5, 2)
  direct = np.asarray(backbone.apply(backbone.params, tokens, eot))
  np.testing.assert_allclose(feats, direct, rtol=1e-4, atol=1e-4)  # one row vs a batch
  assert not np.array_equal(feats[0], feats[1])  # different captions, different features

  # Seen again, in another order: no new computation, the same bits.
  order = np.array([6, 0, 3])
  np.testing.assert_array_equal(cache(tokens[order], eot[order]), feats[order])
  assert (cache.misses, cache.hits) == (5, 5)

  # A fresh cache meeting each caption alone, or with other batch-mates and
  # block positions, computes the same bits as the first one, with this
  # test's block or the loop's default.
  for fresh_cache in (lambda: FeatureCache(backbone, block=4), lambda: FeatureCache(backbone)):
    for batch_rows in ([1], [4, 1, 6], [3, 3, 0, 4, 1, 6], [6, 4, 3, 1, 0]):
      rows = np.array(batch_rows)
      np.testing.assert_array_equal(fresh_cache()(tokens[rows], eot[rows]), feats[rows])


def test_training_with_the_cache_matches_the_backbone_in_the_step(micro_data_dir, tmp_path):
  """A step of t2i_micro on MiniLM features: cached on the host vs computed in
  the step gives the same losses (float32 rounding apart)."""
  results = {}
  for cached in (False, True):
    config = _minilm(conftest.micro_config(micro_data_dir))
    config.text.feature_cache = cached
    config.train.update(steps=1, log_every=1, ckpt_every=1, sample_every=100)
    workdir = tmp_path / str(cached)
    metrics = loop.train(validate(config), str(workdir), devices=jax.devices()[:1])
    results[cached] = metrics
  for key in ('d_loss', 'g_loss'):
    np.testing.assert_allclose(results[True][key], results[False][key], rtol=1e-4, err_msg=key)


def test_whitening_fitted_through_the_cache_leaves_its_captions_cached():
  """With the cache, the sentence whitening is fitted on the cache's features
  (the loop's path when both are on): the statistics of the backbone's own
  batched features, and every fitted caption is then a hit for training."""
  text_cfg = _minilm(conftest.micro_config()).text
  backbone, tokenize = make_backbone(text_cfg), make_tokenizer(text_cfg)
  captions = [f'{n} {c} {s}' for n in ('one', 'two') for c in ('red', 'blue', 'green')
              for s in ('circle', 'square', 'star', 'cross')] + CAPTIONS
  direct = whitening.fit_captions(backbone, tokenize, captions, block=8)
  cache = FeatureCache(backbone, block=4)
  cached = whitening.fit_captions(backbone, tokenize, captions, block=8, cache=cache)
  np.testing.assert_allclose(cached[whitening.MEAN], direct[whitening.MEAN], atol=1e-6)
  # Every fitted caption is cached: looking them all up again computes none.
  t = tokenize(captions)
  emb = np.asarray(whitening.sentence_embedding(cache(t['tokens'], t['eot']), t['eot']))
  assert len(cache) == cache.misses == len(set(captions))

  def gram(stats):  # each principal direction's sign is free, inner products are not
    w = whitening.whiten(emb, stats[whitening.MEAN], stats[whitening.MATRIX])
    return np.asarray(w @ w.T)

  np.testing.assert_allclose(gram(cached), gram(direct), atol=1e-3 * np.abs(gram(direct)).max())


@pytest.mark.parametrize('attributes', [None, ('count', 'position')])
def test_counterfactuals_cached_at_the_start_make_every_hard_negative_a_hit(micro_data_dir,
                                                                          attributes):
  """With data.hard_negatives the loop computes the features of every
  counterfactual of the training captions (in data.hard_negative_attributes)
  before the first step: an epoch of the pipeline then brings no hard
  negative the cache lacks (the captions themselves are cached by the
  whitening fit, tested above)."""
  from gigagan_jax.data.pipeline import make_dataset
  config = _minilm(conftest.micro_config(micro_data_dir))
  config.update_from_flattened_dict({'text.feature_cache': True, 'data.hard_negatives': True,
                                     'loss.contrastive_weight': 1.0,
                                     'discriminator.kind': 'projection',
                                     'discriminator.projection_channels': (8, 16, 16)})
  if attributes:
    config.data.hard_negative_attributes = attributes
  config = validate(config)
  backbone, tokenize = make_backbone(config.text), make_tokenizer(config.text)
  cache = FeatureCache(backbone)
  loop._cache_counterfactuals(config, tokenize, cache)
  computed = cache.misses
  assert computed > 2 * config.data.num_examples  # several per caption
  negatives = 0
  for batch in make_dataset(config.data, tokenize=tokenize, seed=0, process_index=0,
                            process_count=1, num_epochs=1):
    cache(batch['negative_tokens'], batch['negative_eot'])
    negatives += len(batch['negative_caption'])
  assert cache.misses == computed and negatives == config.data.num_examples
