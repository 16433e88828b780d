"""The train steps' loss plumbing: the static lazy-R1 variants, Eq. 8 pairs
with repeated captions, shared fakes, R1 of the SR step on the HR image only,
loss-weight schedules read from state['step'].

Each step is compiled once per variant. Apart from the shared-fakes step,
which compiles its own, the programs are the ones other files compile too:
t2i_micro on one device (test_train.py's reference); up_tiny shrunk to 32 px
crops on a 2-device batch-sharded mesh (test_sr_train.py's upsampler). The tests run in those files' xdist groups,
after them, and read the programs from the session's persistent compilation
cache (tests/conftest.py).
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gigagan_jax import losses, parallel
from gigagan_jax.text.tokenizer import make_tokenizer
from gigagan_jax.train import state as state_lib
from gigagan_jax.train.augment import translate
from gigagan_jax.train.sr_step import box_pyramid, hr_r1_penalty, make_sr_train_step, with_low_res
from gigagan_jax.train.step import (augment_keys, batch_ndims, jit_train_step, make_train_step,
                                    mismatched_text, r1_weight, real_pyramid, step_keys,
                                    text_features)
from test_sr_train import HR, small_up_tiny

pytestmark = pytest.mark.slow
MICRO = pytest.mark.xdist_group('micro_programs')
SR = pytest.mark.xdist_group('sr_programs')

# Repeats, as captioned_shapes has: neighbours 0/1 and 4/5/6 share captions.
CAPTIONS = ['a red circle', 'a red circle', 'two blue squares', 'a green star',
            'a yellow triangle', 'a yellow triangle', 'a yellow triangle', 'a small red circle']


def _mesh(shape):
  cfg = dict(zip(('data', 'fsdp', 'tensor'), shape))
  import ml_collections  # pylint: disable=g-import-not-at-top
  return parallel.make_mesh(ml_collections.ConfigDict(cfg), jax.devices()[:int(np.prod(shape))])


def _batch(config, captions, resolution, lr_side=None, seed=0):
  rng = np.random.default_rng(seed)
  batch = dict(make_tokenizer(config.text)(captions))
  batch['image'] = rng.integers(0, 256, (len(captions), resolution, resolution, 3), np.uint8)
  if lr_side:
    batch['lr'] = rng.integers(0, 256, (len(captions), lr_side, lr_side, 3), np.uint8)
  return {k: np.asarray(batch[k]) for k in batch_ndims(config)}


# ------------------------------------------------------------ text-to-image

@pytest.fixture(scope='module')
def t2i(micro_step):
  """t2i_micro as it is, on one device: conftest.micro_step, shared with
  test_train.py's sharded test (which also draws mismatched pairs across batch
  shards)."""
  return micro_step


D_TERMS = ('d_acc', 'real_score', 'fake_score', 'd_match_real', 'd_match_fake', 'match_valid')


@MICRO
def test_r1_variants_differ_only_by_the_r1_term(t2i):
  config, mesh, parts, step = t2i
  batch = parallel.global_batch(_batch(config, CAPTIONS, config.generator.resolution), mesh)
  _, with_r1 = step(parts.init(config), batch, {}, True)
  _, without = step(parts.init(config), batch, {}, False)
  with_r1, without = jax.device_get((with_r1, without))
  assert with_r1['r1'] > 0 and without['r1'] == 0
  np.testing.assert_allclose(with_r1['d_loss'] - r1_weight(config.loss) * with_r1['r1'],
                             without['d_loss'], rtol=1e-5, atol=1e-6)
  for key in D_TERMS:
    np.testing.assert_allclose(with_r1[key], without[key], rtol=1e-5, atol=1e-6, err_msg=key)
  # Both halves of Eq. 8 are in D's loss; 6 of the 8 captions have another one
  # to pair with, so every pair is valid.
  assert with_r1['d_match_real'] > 0 and with_r1['d_match_fake'] > 0 and with_r1['g_match'] > 0
  assert with_r1['match_valid'] == 1.0
  # G's self-attention (8 px in t2i_micro) is logged: with tied-L2 logits of order
  # one at init, tokens spread over many others (with the old 1/sqrt(d) scale a
  # token's weight on itself was 0.9992: entropy near 0).
  entropy = {k: v for k, v in with_r1.items() if k.startswith('attn_entropy/')}
  assert list(entropy) == ['attn_entropy/b8_layer0/self_attn'], list(with_r1)
  assert 0.5 < entropy['attn_entropy/b8_layer0/self_attn'] <= 1.0


@MICRO
def test_the_host_picks_r1_every_interval(t2i):
  config, _, parts, _ = t2i
  make = lambda cfg: make_train_step(parts.g, parts.d, parts.g_tx, parts.d_tx, cfg)  # no compile
  lazy = config.copy_and_resolve_references()
  lazy.loss.r1_interval = 3
  assert [make(lazy).r1_due(i) for i in range(7)] == [i % 3 == 0 for i in range(7)]
  no_r1 = config.copy_and_resolve_references()
  no_r1.loss.r1_gamma = 0.0
  assert not make(no_r1).r1_due(0)


@MICRO
def test_matching_in_g_off_keeps_eq8_in_d_only(t2i):
  """The ablation's "matching-aware loss in D only": D still scores both
  mismatched pairs, G's loss has no matching term (traced, not compiled)."""
  config, mesh, parts, _ = t2i
  batch = parallel.global_batch(_batch(config, CAPTIONS, config.generator.resolution), mesh)
  keys = {}
  for in_g in (True, False):
    cfg = config.copy_and_resolve_references()
    cfg.loss.matching_in_g = in_g
    step = make_train_step(parts.g, parts.d, parts.g_tx, parts.d_tx, cfg)
    _, metrics = jax.eval_shape(lambda s, b, step=step: step(s, b, {}, False),
                                parts.abstract, batch)
    keys[in_g] = set(metrics)
  assert {'d_match_real', 'd_match_fake', 'g_match'} <= keys[True]
  assert keys[True] - keys[False] == {'g_match'}


@MICRO
def test_identical_captions_mask_the_matching_terms_without_nan(t2i):
  config, mesh, parts, step = t2i
  batch = parallel.global_batch(
      _batch(config, ['a red circle'] * 8, config.generator.resolution, seed=1), mesh)
  _, metrics = step(parts.init(config), batch, {}, False)
  metrics = jax.device_get(metrics)
  assert all(np.isfinite(v) for v in metrics.values()), metrics
  assert not metrics['skipped']
  assert metrics['match_valid'] == 0
  assert metrics['d_match_real'] == metrics['d_match_fake'] == metrics['g_match'] == 0


@MICRO
def test_shared_fakes_train_g_on_the_d_updates_images(t2i):
  """train.shared_fakes: the D update is the unshared step's, and the G
  update is Adam's step on the gradient of G's objective at the D update's
  latents against the updated D, here taken directly by jax.grad."""
  config, mesh, parts, step = t2i
  cfg = config.copy_and_resolve_references()
  cfg.train.shared_fakes = True
  shared_fn = make_train_step(parts.g, parts.d, parts.g_tx, parts.d_tx, cfg)
  batch = parallel.global_batch(_batch(config, CAPTIONS, config.generator.resolution), mesh)
  shared, metrics = jit_train_step(shared_fn, parts.shardings, mesh)(
      parts.init(config), batch, {}, False)
  unshared, unshared_metrics = step(parts.init(config), batch, {}, False)
  close = lambda a, b, **kw: jax.tree.map(
      lambda x, y: np.testing.assert_allclose(x, y, **kw), jax.device_get(a), jax.device_get(b))
  close({k: metrics[k] for k in D_TERMS + ('d_loss',)},
        {k: unshared_metrics[k] for k in D_TERMS + ('d_loss',)}, rtol=1e-5, atol=1e-6)
  close(shared['d'], unshared['d'], rtol=1e-5, atol=1e-6)

  state = parts.init(config)
  k_dz, _, _, k_wrong = step_keys(state['key'], state['step'])
  text = text_features(None, batch, None)
  wrong, valid = mismatched_text(text, k_wrong)
  z = jax.random.normal(k_dz, (len(CAPTIONS), config.generator.z_dim))
  (g_loss, _), grads = jax.value_and_grad(shared_fn.g_objective, has_aux=True)(
      state['g'], z, shared['d'], text, wrong, valid, {}, batch, state['step'], None,
      augment_keys(state['key'], state['step']))
  updates, _ = parts.g_tx.update(grads, state['g_opt'], state['g'])
  close(metrics['g_loss'], g_loss, rtol=1e-5)
  close(metrics['g_grad_norm'], optax.tree.norm(grads), rtol=1e-4)  # Adam alone hides a scale
  close(shared['g'], optax.apply_updates(state['g'], updates), rtol=1e-4, atol=1e-6)
  # The unshared step's G update, on fresh latents, is another one.
  assert not np.isclose(metrics['g_loss'], unshared_metrics['g_loss'], rtol=1e-3)


@MICRO
def test_d_translate_shows_d_translated_images(t2i):
  """loss.d_translate: the D update scores the real images translated by the
  step's own augmentation key, not as they came (real_score, against D applied
  here to a translation by train/augment.py)."""
  config, mesh, parts, _ = t2i
  cfg = config.copy_and_resolve_references()
  cfg.loss.d_translate = 0.25
  step = jit_train_step(make_train_step(parts.g, parts.d, parts.g_tx, parts.d_tx, cfg),
                        parts.shardings, mesh)
  batch = parallel.global_batch(_batch(config, CAPTIONS, config.generator.resolution), mesh)
  _, metrics = step(parts.init(config), batch, {}, False)  # donates its state
  state = parts.init(config)
  text = text_features(None, batch, None)
  wrong, _ = mismatched_text(text, step_keys(state['key'], state['step'])[3])
  real = real_pyramid(batch['image'], config.generator.pyramid_levels)
  def score(pyramid):  # real_score: the logits summed, per logit map, as the step logs it
    logits = parts.d.apply({'params': state['d']}, pyramid, text, wrong)[0]
    return losses.total_logit(logits) / len(logits)
  seen = translate(real, augment_keys(state['key'], state['step'])[0], 0.25)
  np.testing.assert_allclose(metrics['real_score'], score(seen), rtol=1e-5, atol=1e-6)
  assert not np.isclose(metrics['real_score'], score(real), rtol=1e-3)


# ------------------------------------------------------ super-resolution

def _linear_d6(weights):
  """A D on 6-channel pyramids whose logit is <weights, pyramid> per sample."""
  def d_fn(pyramid):
    logit = sum(jnp.einsum('bhwc,hwc->b', x, w) for x, w in zip(pyramid, weights))
    return {'out': logit[:, None, None, None]}
  return d_fn


@SR
def test_sr_r1_is_on_the_hr_image_not_the_lr_channels():
  """For a linear D, grad_hr = sum over levels of the box pyramid's transpose
  applied to the HR channels' weights; the LR channels' weights do not enter."""
  rng = np.random.default_rng(0)
  levels, side = 3, 16
  weights = [rng.normal(size=(side >> l, side >> l, 6)).astype(np.float32) for l in range(levels)]
  grad = sum(np.repeat(np.repeat(w[..., :3], 2**l, 0), 2**l, 1) / 4**l
             for l, w in enumerate(weights))
  hr = jnp.asarray(rng.uniform(-1, 1, (2, side, side, 3)), jnp.float32)
  lr = jnp.asarray(rng.uniform(-1, 1, (2, side // 4, side // 4, 3)), jnp.float32)
  r1 = hr_r1_penalty(_linear_d6([jnp.asarray(w) for w in weights]), hr, lr, levels)
  np.testing.assert_allclose(r1, np.sum(grad ** 2), rtol=1e-5)
  # Other LR-channel weights: the same penalty.
  other = [np.concatenate([w[..., :3], 10 * rng.normal(size=w[..., 3:].shape)], -1) for w in weights]
  np.testing.assert_allclose(hr_r1_penalty(_linear_d6([jnp.asarray(w) for w in other]), hr, lr,
                                           levels), r1, rtol=1e-5)


@pytest.fixture(scope='module')
def sr():
  config = small_up_tiny()
  mesh = _mesh((2, 1, 1))
  parts = state_lib.build(config, mesh, make_tokenizer(config.text).vocab_size, 0)
  step_fn = make_sr_train_step(parts.g, parts.d, parts.g_tx, parts.d_tx, config)
  step = jit_train_step(step_fn, parts.shardings, mesh, batch_ndims(config))
  batch = _batch(config, CAPTIONS, HR, HR // config.upsampler.scale)
  return config, mesh, parts, step, batch


@SR
def test_sr_step_r1_metric_is_the_hr_only_penalty(sr):
  config, mesh, parts, step, batch = sr
  state = parts.init(config)
  d_params = jax.device_get(state['d'])  # before the step donates the state
  _, metrics = step(state, parallel.global_batch(batch, mesh), {'backbone': {}, 'lpips': {}}, True)

  text = {'tokens': jnp.asarray(batch['tokens']), 'eot': jnp.asarray(batch['eot'])}
  hr = jnp.asarray(batch['image'], jnp.float32) / 127.5 - 1
  lr = jnp.asarray(batch['lr'], jnp.float32) / 127.5 - 1
  levels = config.discriminator.levels
  logit_sum = lambda pyr: losses.total_logit(parts.d.apply({'params': d_params}, pyr, text))
  sq = lambda grads: jnp.mean(sum(jnp.sum(g ** 2, axis=(1, 2, 3)) for g in grads))

  @jax.jit  # one program, not hundreds of op-by-op dispatches
  def penalties(hr, lr):
    expected = sq([jax.grad(lambda x: logit_sum(with_low_res(box_pyramid(x, levels), lr)))(hr)])
    # What the step computed before: the gradient w.r.t. every channel of every
    # level, LR channels included. The check below tells the two apart.
    everything = sq(jax.grad(logit_sum)(with_low_res(box_pyramid(hr, levels), lr)))
    return expected, everything

  expected, everything = penalties(hr, lr)
  assert abs(float(everything) / float(expected) - 1) > 0.05, (everything, expected)
  np.testing.assert_allclose(float(metrics['r1']), float(expected), rtol=1e-4)


@SR
def test_sr_gan_weight_follows_its_schedule_of_the_step(sr):
  config, mesh, parts, step, batch = sr
  frozen = {'backbone': {}, 'lpips': {}}
  # The R1 variant, as the test above: one SR program compiled for both tests.
  state, first = step(parts.init(config), parallel.global_batch(batch, mesh), frozen, True)
  first = jax.device_get(first)
  assert first['gan_weight'] == 0.0 and first['g_adv'] > 0
  np.testing.assert_allclose(first['g_loss'], config.loss.pixel_weight * first['pixel'], rtol=1e-6)
  # Mid-ramp (state['step'] = 15): half the configured weight.
  state = dict(state, step=jax.device_put(jnp.int32(15), state['step'].sharding))
  _, mid = step(state, parallel.global_batch(batch, mesh), frozen, True)
  mid = jax.device_get(mid)
  np.testing.assert_allclose(mid['gan_weight'], 0.5 * config.loss.gan_weight, rtol=1e-6)
  np.testing.assert_allclose(mid['g_loss'], config.loss.pixel_weight * mid['pixel'] +
                             mid['gan_weight'] * mid['g_adv'], rtol=1e-5)
