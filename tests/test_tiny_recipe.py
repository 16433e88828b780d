"""t2i_tiny's departures from the paper's training, together on a sharded mesh.

What configs/t2i_tiny.py adds to GigaGAN (the projection D and its
contrastive term, whitened sentence embeddings in G's and D's T, G's input
from w, cached backbone features, a learning-rate schedule) must give the
same steps on a (2,2,2) mesh, data, fsdp and tensor axes, as on one device.
One test compiles both programs for all of them.
"""
import jax
import numpy as np
import pytest

import test_train
from gigagan_jax import parallel
from gigagan_jax.config_utils import validate
from gigagan_jax.data.pipeline import make_dataset
from gigagan_jax.text import whitening
from gigagan_jax.text.tokenizer import make_tokenizer
from gigagan_jax.train.step import batch_ndims, jit_train_step, make_train_step
from test_whitening import whitening_config

FEATURE_DIM = 384  # MiniLM's


@pytest.mark.slow
def test_sharded_steps_with_the_tiny_recipe_match_single_device(micro_data_dir):
  """Two t2i_micro steps with every departure on, on cached (here random)
  backbone features, equal on a (2,2,2) mesh and on one device."""
  config = whitening_config(micro_data_dir)
  config.update_from_flattened_dict({
      'generator.input_from_w': True,
      'text.feature_cache': True,  # the batch brings the features: no MiniLM run here
      'discriminator.kind': 'projection', 'discriminator.projection_channels': (8, 16, 16),
      'discriminator.projection_fc': 32, 'loss.contrastive_weight': 1.0,
      'data.hard_negatives': True,
      'optim.lr_schedule': ((0, 1.0), (1, 0.5))})
  config = validate(config)
  data = make_dataset(config.data, tokenize=make_tokenizer(config.text), seed=0,
                      process_index=0, process_count=1)
  rng = np.random.default_rng(0)
  batches = []
  for b in (next(data) for _ in range(2)):
    batch = {k: b[k] for k in ('image', 'tokens', 'eot', 'negative_tokens', 'negative_eot')}
    for prefix in ('', 'negative_'):
      batch[prefix + 'features'] = rng.normal(
          size=b['tokens'].shape + (FEATURE_DIM,)).astype(np.float32)
    batches.append(batch)
  stats = whitening.fit(np.concatenate([
      whitening.sentence_embedding(b['features'], b['eot']) for b in batches]))

  def run(mesh_shape):
    mesh, _, parts = test_train.mesh_parts(config, mesh_shape, FEATURE_DIM)
    step = jit_train_step(make_train_step(parts.g, parts.d, parts.g_tx, parts.d_tx, config),
                          parts.shardings, mesh, batch_ndims(config))
    state = parts.init(config)
    state = dict(state, **{k: whitening.set_stats(state[k], stats) for k in ('g', 'd', 'ema')})
    losses = []
    for batch in batches:
      state, metrics = step(state, parallel.global_batch(batch, mesh), {})
      losses.append([float(metrics[k]) for k in
                     ('d_loss', 'g_loss', 'r1', 'd_contrastive', 'g_contrastive')])
    return jax.device_get(state), np.array(losses)

  ref_state, ref_losses = run((1, 1, 1))
  assert 'input_proj' in ref_state['g'] and whitening.has_stats(ref_state['d'])
  assert np.all(np.isfinite(ref_losses)) and ref_losses[0, 2] > 0  # R1 ran at step 0
  assert np.all(ref_losses[:, 3:] > 0)
  state, losses = run((2, 2, 2))
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-4, atol=1e-5)
  # atol 2e-4, a tenth of a step at lr 0.0025: on these random features a few
  # weights of one G conv (0.11% of it, over assert_trees_close's 0.1% of
  # outliers) end up to 1.4e-4 apart, Adam's rounding noise after step 2.
  for key in ('g', 'd', 'ema'):
    test_train.assert_trees_close(state[key], ref_state[key], rtol=1e-3, atol=2e-4,
                                  outlier_atol=2 * 2 * max(config.optim.g_lr, config.optim.d_lr))
