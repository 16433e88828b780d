"""GAN objectives, penalties and EMA against direct numpy formulas."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gigagan_jax import losses, parallel
from gigagan_jax.config_utils import ConfigError, load_config, validate
from gigagan_jax.train.step import ema_beta, real_pyramid

rng = np.random.default_rng(0)
# Two logit maps of different sizes, as MS-I/O produces.
REAL = {'a': rng.normal(size=(4, 4, 4, 1)), 'b': rng.normal(size=(4, 1, 1, 1))}
FAKE = {'a': rng.normal(size=(4, 4, 4, 1)), 'b': rng.normal(size=(4, 1, 1, 1))}
WRONG = {'a': rng.normal(size=(4, 4, 4, 1)), 'b': rng.normal(size=(4, 1, 1, 1))}
softplus = lambda x: np.log1p(np.exp(x))
relu = lambda x: np.maximum(x, 0)

# kind: (D term on real, D term on fake (also on mismatched real), G term on fake)
FORMULAS = {
    'logistic': (lambda r: softplus(-r), softplus, lambda f: softplus(-f)),
    'hinge': (lambda r: relu(1 - r), lambda f: relu(1 + f), lambda f: -f),
    'lsgan': (lambda r: (r - 1) ** 2, lambda f: f ** 2, lambda f: (f - 1) ** 2),
    'wgan': (lambda r: -r, lambda f: f, lambda f: -f),
}


@pytest.mark.parametrize('kind', sorted(FORMULAS))
def test_losses_sum_the_per_map_means(kind):
  on_real, on_fake, g_term = FORMULAS[kind]
  d_expected = sum(np.mean(on_real(REAL[k]) + on_fake(FAKE[k])) + 0.5 * np.mean(on_fake(WRONG[k]))
                   for k in REAL)
  g_expected = sum(np.mean(g_term(FAKE[k])) + 0.5 * np.mean(on_fake(WRONG[k])) for k in REAL)
  j = lambda t: jax.tree.map(jnp.asarray, t)
  np.testing.assert_allclose(
      losses.discriminator_loss(kind, j(REAL), j(FAKE), j(WRONG), matching_weight=0.5),
      d_expected, rtol=1e-5)
  np.testing.assert_allclose(losses.generator_loss(kind, j(FAKE), j(WRONG), matching_weight=0.5),
                             g_expected, rtol=1e-5)


# Logits of (G(c), c') and the valid-pair mask of a batch of 4 where pair 2's
# "mismatched" caption turned out to be its own.
FAKE_WRONG = {'a': rng.normal(size=(4, 4, 4, 1)), 'b': rng.normal(size=(4, 1, 1, 1))}
VALID = np.array([True, True, False, True])


def _match_eq8(real_wrong, fake_wrong, valid, on_fake=softplus):
  """Paper Eq. 8 by hand: E[softplus(D(x, c'))] + E[softplus(D(G(c), c'))] over
  the valid pairs, each logit map averaged over its positions, maps summed."""
  total = 0.0
  for k in real_wrong:
    for logits in (real_wrong[k], fake_wrong[k]):
      per_pair = on_fake(logits).reshape(len(valid), -1).mean(axis=1)
      total += per_pair[valid].mean()
  return total


@pytest.mark.parametrize('kind', sorted(FORMULAS))
def test_matching_aware_terms_are_paper_eq8_for_d_and_its_fake_term_for_g(kind):
  """D: V_GAN + w * Eq. 8 (both the real and the generated image with c'); G:
  its GAN term + w * E[fake_term(D(G(c), c'))] (losses.py's docstring)."""
  on_real, on_fake, g_term = FORMULAS[kind]
  w = 0.7
  v_gan = sum(np.mean(on_real(REAL[k]) + on_fake(FAKE[k])) for k in REAL)
  d_expected = v_gan + w * _match_eq8(WRONG, FAKE_WRONG, VALID, on_fake)
  g_match = sum(on_fake(FAKE_WRONG[k]).reshape(4, -1).mean(axis=1)[VALID].mean()
                for k in FAKE_WRONG)
  g_expected = sum(np.mean(g_term(FAKE[k])) for k in FAKE) + w * g_match
  j = lambda t: jax.tree.map(jnp.asarray, t)
  valid = jnp.asarray(VALID)
  np.testing.assert_allclose(
      losses.discriminator_loss(kind, j(REAL), j(FAKE), j(WRONG), j(FAKE_WRONG), valid, w),
      d_expected, rtol=1e-5)
  np.testing.assert_allclose(
      losses.generator_loss(kind, j(FAKE), j(FAKE_WRONG), valid, w), g_expected, rtol=1e-5)
  if kind == 'logistic':  # the paper's form, written out once more
    sp = lambda x: np.log1p(np.exp(x))
    eq8 = sum(sp(WRONG[k])[VALID].mean() + sp(FAKE_WRONG[k])[VALID].mean() for k in WRONG)
    np.testing.assert_allclose(
        losses.discriminator_loss(kind, j(REAL), j(FAKE), j(WRONG), j(FAKE_WRONG), valid, 1.0),
        v_gan + eq8, rtol=1e-5)


def test_matching_term_of_a_fully_masked_batch_is_zero_not_nan():
  j = lambda t: jax.tree.map(jnp.asarray, t)
  none = jnp.zeros(4, bool)
  assert float(losses.matching_term('logistic', j(WRONG), none)) == 0.0
  d = losses.discriminator_loss('logistic', j(REAL), j(FAKE), j(WRONG), j(FAKE_WRONG), none)
  np.testing.assert_allclose(d, sum(np.mean(softplus(-REAL[k]) + softplus(FAKE[k])) for k in REAL),
                             rtol=1e-5)
  # A masked pair never leaks in, even with a non-finite logit.
  inf = {k: np.where(VALID[:, None, None, None], v, np.inf) for k, v in WRONG.items()}
  np.testing.assert_allclose(losses.matching_term('logistic', j(inf), jnp.asarray(VALID)),
                             losses.matching_term('logistic', j(WRONG), jnp.asarray(VALID)))


def _captions_with_repeats(n_rows=8, length=6):
  """int32 [n_rows, length] token rows drawn from 3 distinct captions (as captioned_shapes repeats)."""
  distinct = rng.integers(1, 50, size=(3, length))
  return distinct[rng.integers(0, 3, size=n_rows)].astype(np.int32)


def test_mismatched_captions_never_pair_equal_token_rows():
  for seed in range(20):
    tokens = _captions_with_repeats()
    tokens[0] = tokens[1]  # neighbours equal: jnp.roll(tokens, 1) would pair row 1 with its own caption
    index, valid = losses.mismatched_captions(jnp.asarray(tokens), jax.random.key(seed))
    index, valid = np.asarray(index), np.asarray(valid)
    has_other = np.array([np.any(np.any(tokens != t, axis=1)) for t in tokens])
    np.testing.assert_array_equal(valid, has_other)
    for b in np.flatnonzero(valid):
      assert np.any(tokens[index[b]] != tokens[b]), (seed, b, index[b])


def test_mismatched_captions_draw_every_different_caption():
  tokens = np.array([[1, 2], [1, 2], [3, 4], [5, 6]], np.int32)
  picks = {int(losses.mismatched_captions(jnp.asarray(tokens), jax.random.key(s))[0][0])
           for s in range(40)}
  assert picks == {2, 3}


def test_mismatched_captions_of_identical_captions_are_all_masked():
  tokens = jnp.tile(jnp.arange(6, dtype=jnp.int32), (8, 1))
  _, valid = losses.mismatched_captions(tokens, jax.random.key(0))
  assert not np.any(np.asarray(valid))
  logits = {'a': jnp.asarray(rng.normal(size=(8, 2, 2, 1)))}
  assert float(losses.matching_term('logistic', logits, valid)) == 0.0


def test_mismatched_captions_under_jit_with_a_sharded_batch():
  """The same pairs and terms with the batch split over 8 devices as on one."""
  mesh = parallel.make_mesh(ml_collections.ConfigDict({'data': 8, 'fsdp': 1, 'tensor': 1}),
                            jax.devices()[:8])
  sharding = parallel.batch_sharding(mesh, 2)
  tokens = _captions_with_repeats(16)
  tokens[:8] = tokens[8]  # a whole shard-worth of equal captions
  logits = rng.normal(size=(16, 2, 2, 1)).astype(np.float32)

  @jax.jit
  def pairs_and_term(tokens, logits, key):
    index, valid = losses.mismatched_captions(tokens, key)
    return index, valid, losses.matching_term('logistic', {'a': logits}, valid)

  key = jax.random.key(3)
  ref = pairs_and_term(jnp.asarray(tokens), jnp.asarray(logits), key)
  out = pairs_and_term(jax.device_put(tokens, sharding),
                       jax.device_put(logits, parallel.batch_sharding(mesh, 4)), key)
  for a, b in zip(ref, out):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
  index, valid, _ = map(np.asarray, out)
  assert valid.all()
  assert all(np.any(tokens[index[b]] != tokens[b]) for b in range(16))


def _linear_d(weights):
  """A discriminator whose logit is <weights, pyramid> per sample: gradient = weights."""
  def d_fn(pyramid):
    logit = sum(jnp.einsum('bhwc,hwc->b', x, w) for x, w in zip(pyramid, weights))
    return {'out': logit[:, None, None, None]}
  return d_fn


def test_r1_is_the_squared_input_gradient_norm():
  weights = [jnp.asarray(rng.normal(size=(8, 8, 3))), jnp.asarray(rng.normal(size=(4, 4, 3)))]
  pyramid = (jnp.asarray(rng.normal(size=(3, 8, 8, 3))), jnp.asarray(rng.normal(size=(3, 4, 4, 3))))
  expected = sum(float(jnp.sum(w ** 2)) for w in weights)
  np.testing.assert_allclose(losses.r1_penalty(_linear_d(weights), pyramid), expected, rtol=1e-5)


@pytest.mark.parametrize('scale, expected', [(1.0, 0.0), (3.0, 4.0)])
def test_gradient_penalty_of_a_linear_critic(scale, expected):
  w = [rng.normal(size=(8, 8, 3)), rng.normal(size=(4, 4, 3))]
  norm = np.sqrt(sum(np.sum(x ** 2) for x in w))
  weights = [jnp.asarray(scale * x / norm) for x in w]  # |grad| = scale everywhere
  real = (jnp.ones((2, 8, 8, 3)), jnp.ones((2, 4, 4, 3)))
  fake = (jnp.zeros((2, 8, 8, 3)), jnp.zeros((2, 4, 4, 3)))
  gp = losses.gradient_penalty(_linear_d(weights), real, fake, jax.random.key(0))
  np.testing.assert_allclose(gp, expected, atol=1e-5)


def test_contrastive_loss_is_cross_entropy_over_the_batch_captions():
  img, txt = rng.normal(size=(5, 16)), rng.normal(size=(5, 16))
  n = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  logits = n(img) @ n(txt).T / 0.07
  expected = np.mean(np.log(np.sum(np.exp(logits), axis=-1)) - np.diag(logits))
  np.testing.assert_allclose(losses.contrastive_loss(img, txt, 0.07), expected, rtol=1e-5)
  # Matching pairs far apart from the others give a near-zero loss.
  assert losses.contrastive_loss(np.eye(5), np.eye(5), 0.01) < 1e-3


def test_contrastive_loss_leaves_copies_of_a_caption_out_of_its_negatives():
  img, txt = rng.normal(size=(5, 16)), rng.normal(size=(5, 16))
  tokens = np.array([[1, 7, 2], [1, 8, 2], [1, 7, 2], [1, 9, 2], [1, 7, 2]])  # 0, 2, 4 alike
  txt[2] = txt[4] = txt[0]  # equal captions embed alike
  n = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  logits = n(img) @ n(txt).T / 0.07
  same = (tokens[:, None] == tokens[None]).all(-1) & ~np.eye(5, dtype=bool)
  expected = np.mean([np.log(np.sum(np.exp(logits[b][~same[b]]))) - logits[b, b]
                      for b in range(5)])
  np.testing.assert_allclose(losses.contrastive_loss(img, txt, 0.07, tokens=tokens),
                             expected, rtol=1e-5)
  # Images that match their captions: the copies no longer hold the loss at log(3).
  emb = np.eye(5)[[0, 1, 0, 3, 0]]
  assert losses.contrastive_loss(emb, emb, 0.01) > 0.5 * np.log(3)
  assert losses.contrastive_loss(emb, emb, 0.01, tokens=tokens) < 1e-3


def test_contrastive_loss_scores_each_image_against_extra_negatives_too():
  """text_embeds [N > B]: the extra rows (hard negatives) join every image's
  softmax, except a row whose tokens equal the image's own caption."""
  img, txt = rng.normal(size=(3, 8)), rng.normal(size=(5, 8))
  tokens = np.array([[1, 7], [1, 8], [1, 9], [1, 5], [1, 7]])  # row 4 repeats caption 0
  n = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  logits = n(img) @ n(txt).T / 0.1
  keep = np.ones((3, 5), bool)
  keep[0, 4] = False
  expected = np.mean([np.log(np.sum(np.exp(logits[b][keep[b]]))) - logits[b, b]
                      for b in range(3)])
  np.testing.assert_allclose(losses.contrastive_loss(img, txt, 0.1, tokens=tokens), expected,
                             rtol=1e-5)
  # A negative close to the image raises its loss: the extra rows count.
  assert losses.contrastive_loss(img, np.concatenate([txt[:3], img]), 0.1) > \
      losses.contrastive_loss(img, txt[:3], 0.1) + 1.0


def test_ema_half_life_is_measured_in_images():
  cfg = ml_collections.ConfigDict({'ema_halflife_kimg': 2.0, 'ema_rampup': 0.0})
  beta = float(ema_beta(cfg, batch_size=32, step=0))
  np.testing.assert_allclose(beta ** (2000 / 32), 0.5, rtol=1e-5)
  # With ramp-up, early steps average over fewer images.
  cfg.ema_rampup = 0.05
  assert float(ema_beta(cfg, 32, step=10)) < beta


@pytest.mark.parametrize('name', ['t2i_paper', 'up_paper'])
def test_paper_configs_decay_the_ema_by_0_9999_per_step(name):
  """Paper Table A2: G EMA 0.9999 per step, at any batch size and from the first step."""
  config = load_config(f'configs/{name}.py')
  for batch, step in ((config.data.batch_size, 0), (config.data.batch_size, 100_000), (1024, 7)):
    np.testing.assert_allclose(float(ema_beta(config.train, batch, step)), 0.9999, rtol=1e-7)


def test_ema_decay_must_be_below_one():
  config = load_config('configs/t2i_paper.py')
  config.train.ema_decay = 1.0
  with pytest.raises(ConfigError, match='train.ema_decay'):
    validate(config)


def test_piecewise_linear_schedule():
  points = ((0, 0.0), (100, 0.0), (300, 1.0))
  for step, expected in ((0, 0.0), (50, 0.0), (100, 0.0), (200, 0.5), (250, 0.75), (300, 1.0),
                         (10_000, 1.0)):
    np.testing.assert_allclose(losses.piecewise_linear(points, jnp.int32(step)), expected,
                               atol=1e-7, err_msg=str(step))
  assert float(losses.piecewise_linear((), 123)) == 1.0  # no schedule: full weight
  # Traced steps (inside the train step) give the same values.
  f = jax.jit(lambda s: losses.piecewise_linear(points, s))
  np.testing.assert_allclose(f(jnp.int32(200)), 0.5)


def test_scheduled_weight_scales_the_configured_weight():
  cfg = ml_collections.ConfigDict({'gan_weight': 0.1, 'gan_weight_schedule': ((10, 0.0), (20, 1.0)),
                                   'pixel_weight': 1.0})
  np.testing.assert_allclose(losses.scheduled_weight(cfg, 'gan_weight', 0), 0.0)
  np.testing.assert_allclose(losses.scheduled_weight(cfg, 'gan_weight', 15), 0.05, rtol=1e-6)
  np.testing.assert_allclose(losses.scheduled_weight(cfg, 'gan_weight', 99), 0.1, rtol=1e-6)
  np.testing.assert_allclose(losses.scheduled_weight(cfg, 'pixel_weight', 5), 1.0)  # no schedule


@pytest.mark.parametrize('schedule', [((10, 1.0), (5, 0.0)), ((0, -1.0),), ((0, 1.0, 2.0),)])
def test_bad_schedules_name_the_field(schedule):
  config = load_config('configs/up_tiny.py')
  config.loss.gan_weight_schedule = schedule
  with pytest.raises(ConfigError, match='loss.gan_weight_schedule'):
    validate(config)


def test_real_pyramid_box_averages_and_scales_to_unit_range():
  images = rng.integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
  full, half, quarter = real_pyramid(jnp.asarray(images), 3)
  x = images.astype(np.float64) / 127.5 - 1
  np.testing.assert_allclose(full, x, atol=1e-6)
  np.testing.assert_allclose(half, x.reshape(2, 4, 2, 4, 2, 3).mean(axis=(2, 4)), atol=1e-6)
  assert quarter.shape == (2, 2, 2, 3)
  np.testing.assert_allclose(quarter, x.reshape(2, 2, 4, 2, 4, 3).mean(axis=(2, 4)), atol=1e-6)
