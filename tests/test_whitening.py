"""text/whitening.py: T's whitened sentence embedding (text_encoder.sentence_whitening).

The statistics must whiten what they were fitted on, T must add exactly a
dense layer of the whitened embedding to t_global, and a training run must fit
them on its captions before the first step and never change them after.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import conftest
from gigagan_jax import parallel
from gigagan_jax.config_utils import ConfigError, validate
from gigagan_jax.data.pipeline import read_captions
from gigagan_jax.text import whitening
from gigagan_jax.text.backbone import make_backbone
from gigagan_jax.text.encoder import TextEncoder
from gigagan_jax.text.tokenizer import make_tokenizer
from gigagan_jax.train import loop
from gigagan_jax.train import state as state_lib
from gigagan_jax.train.checkpoint import Checkpointer


def test_fit_whitens_the_embeddings_and_maps_empty_directions_to_zero():
  rng = np.random.default_rng(0)
  # 500 embeddings of width 12 that span 8 directions, at very different scales.
  x = rng.normal(size=(500, 8)) * np.geomspace(0.1, 3, 8) @ rng.normal(size=(8, 12)) + 5
  stats = whitening.fit(x)
  assert stats[whitening.MEAN].shape == (12,) and stats[whitening.MATRIX].shape == (12, 12)
  white = (x - stats[whitening.MEAN]) @ stats[whitening.MATRIX]
  np.testing.assert_allclose(white.mean(0), 0, atol=1e-4)
  eig = np.sort(np.linalg.eigvalsh(np.cov(white, rowvar=False)))
  np.testing.assert_allclose(eig[:4], 0, atol=1e-6)   # the 4 directions x lacks
  np.testing.assert_allclose(eig[4:], 1, rtol=1e-3)   # each of the 8 it spans: unit variance
  with pytest.raises(ValueError, match=r'need \[N >= 2, D\]'):
    whitening.fit(x[:1])


def test_t_global_gains_a_dense_layer_of_the_whitened_sentence_embedding():
  rng = np.random.default_rng(1)
  b, length, d = 3, 7, 10
  features = jnp.asarray(rng.normal(size=(b, length, d)), jnp.float32)
  tokens, eot = jnp.zeros((b, length), jnp.int32), jnp.array([2, 6, 4], jnp.int32)
  kw = dict(dim=8, num_layers=1, num_heads=2, max_len=length)
  with_white = TextEncoder(sentence_whitening=True, **kw)
  params = nn.unbox(with_white.init(jax.random.PRNGKey(0), tokens, eot, features)['params'])
  stats = whitening.fit(rng.normal(size=(50, d)) * np.linspace(0.1, 2, d))
  params = whitening.set_stats(params, stats)
  assert whitening.has_stats(params)
  _, t_global, _ = with_white.apply({'params': params}, tokens, eot, features)

  # Reference: T without the layer, plus the layer computed in numpy.
  plain = {k: v for k, v in params.items() if k not in
           (whitening.MEAN, whitening.MATRIX, 'proj_sentence')}
  _, base, _ = TextEncoder(**kw).apply({'params': plain}, tokens, eot, features)
  f = np.asarray(features, np.float64)
  sentence = np.stack([f[i, :eot[i] + 1].mean(0) for i in range(b)])  # start to end token
  sentence /= np.linalg.norm(sentence, axis=-1, keepdims=True)
  white = (sentence - stats[whitening.MEAN]) @ stats[whitening.MATRIX]
  layer = params['proj_sentence']
  expected = np.asarray(base) + white @ np.asarray(layer['kernel']) + np.asarray(layer['bias'])
  np.testing.assert_allclose(t_global, expected, rtol=1e-4, atol=1e-5)
  assert not np.allclose(t_global, base, atol=1e-3)  # the layer is not a no-op


def whitening_config(data_dir=''):
  config = conftest.micro_config(data_dir)
  config.text.update(dict(tokenizer='minilm', backbone='minilm', max_len=16,
                          whitening_captions=48))
  config.generator.text_encoder.sentence_whitening = True
  config.discriminator.text_encoder.sentence_whitening = True
  return config


def test_config_errors_name_the_field():
  config = whitening_config()
  config.text.update(dict(tokenizer='byte', backbone='none'))
  with pytest.raises(ConfigError, match=r'generator.text_encoder.sentence_whitening.*backbone'):
    validate(config)
  config = whitening_config()
  config.text.whitening_captions = 1
  with pytest.raises(ConfigError, match=r'text.whitening_captions.*>= 2'):
    validate(config)


def test_training_fits_the_statistics_on_its_captions_and_never_trains_them(micro_data_dir,
                                                                           tmp_path):
  config = validate(whitening_config(micro_data_dir))
  config.train.update(steps=2, log_every=1, ckpt_every=1, sample_every=100, keep_last=3)
  loop.train(config, str(tmp_path), devices=jax.devices()[:1])

  backbone = make_backbone(config.text)
  expected = whitening.fit_captions(backbone, make_tokenizer(config.text),
                                    read_captions(config.data, 48))
  assert len(read_captions(config.data, 48)) == 48
  mesh = parallel.make_mesh(config.mesh, jax.devices()[:1])
  parts = state_lib.build(config, mesh, make_tokenizer(config.text).vocab_size, backbone.dim)
  ckpt = Checkpointer(str(tmp_path), config.train)
  try:
    first, last = (jax.device_get(ckpt.restore(s, parts.abstract)) for s in (1, 2))
  finally:
    ckpt.close()
  for key in ('g', 'd', 'ema'):
    t = last[key]['text_encoder']
    for name in (whitening.MEAN, whitening.MATRIX):  # fitted, then never moved
      np.testing.assert_allclose(t[name], expected[name], rtol=1e-5, atol=1e-6,
                                 err_msg=f'{key} {name}')
      before = first[key]['text_encoder'][name]
      if key == 'ema':  # an average of a constant: the constant, up to rounding
        np.testing.assert_allclose(t[name], before, rtol=1e-6, atol=1e-30)
      else:  # Adam's update of a zero gradient is exactly zero
        np.testing.assert_array_equal(t[name], before, err_msg=f'{key} {name}')
  # The dense layer on top of it does train.
  for key in ('g', 'd'):
    assert not np.array_equal(last[key]['text_encoder']['proj_sentence']['kernel'],
                              first[key]['text_encoder']['proj_sentence']['kernel'])


def test_a_run_saved_before_whitening_and_input_from_w_existed_resumes_without_them():
  from configs import base
  from gigagan_jax.train.checkpoint import config_to_dict, diff_configs, with_added_defaults
  current = config_to_dict(base.get_base_config())
  saved = config_to_dict(base.get_base_config())
  del saved['text']['whitening_captions']
  for block in ('generator', 'discriminator'):
    del saved[block]['text_encoder']['sentence_whitening']
  del saved['generator']['input_from_w']
  assert diff_configs(saved, current)
  assert diff_configs(with_added_defaults(saved), current) == []
