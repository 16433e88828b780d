"""The plain projection discriminator (config discriminator.kind = 'projection')."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from gigagan_jax.config_utils import ConfigError, load_config, validate
from gigagan_jax.models.build import build_models
from gigagan_jax.models.discriminator import logit_name
from gigagan_jax.text.tokenizer import make_tokenizer

PROMPTS = ['a red circle at the top left', 'two blue squares on a yellow background',
           'a small green star']


def projection_config():
  config = load_config('configs/t2i_tiny.py')
  config.discriminator.kind = 'projection'
  config.discriminator.projection_channels = (8, 16, 24)
  config.discriminator.projection_fc = 32
  config.text.backbone = 'none'  # T reads token ids: no weights needed
  # The feature cache and the whitened sentence embedding need a backbone.
  config.text.feature_cache = False
  config.generator.text_encoder.sentence_whitening = False
  config.discriminator.text_encoder.sentence_whitening = False
  return validate(config)


@pytest.fixture(scope='module')
def model():
  config = projection_config()
  tokenizer = make_tokenizer(config.text)
  _, d = build_models(config, tokenizer.vocab_size)
  text = tokenizer(PROMPTS)
  x = jax.random.uniform(jax.random.key(0), (len(PROMPTS), 32, 32, 3), minval=-1, maxval=1)
  pyramid = (x, x[:, ::2, ::2])
  params = nn.meta.unbox(jax.jit(d.init)(jax.random.key(1), pyramid, text))['params']
  return d, params, pyramid, text


def conv4x4_stride2_same(x, kernel, bias):
  """numpy reference: [B,H,W,Ci] * [4,4,Ci,Co] -> [B,H/2,W/2,Co], 'SAME' pads 1 and 1."""
  x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  h = (x.shape[1] - 4) // 2 + 1
  out = np.zeros((x.shape[0], h, h, kernel.shape[-1]))
  for i in range(h):
    for j in range(h):
      out[:, i, j] = np.einsum('bhwc,hwco->bo', x[:, 2 * i:2 * i + 4, 2 * j:2 * j + 4], kernel)
  return out + bias


def test_logit_equals_a_numpy_projection_discriminator(model):
  """D(x, c) = Dense_1(h) + <Embed(t_D(c)), h>, h from plain stride-2 convs and
  a dense layer; only the top pyramid level is read."""
  d, p, pyramid, text = model
  lrelu = lambda v: np.where(v > 0, v, 0.2 * v)
  dense = lambda v, q: v @ np.asarray(q['kernel'], np.float64) + np.asarray(q['bias'])
  h = np.asarray(pyramid[0], np.float64)
  for r in (32, 16, 8):
    h = lrelu(conv4x4_stride2_same(h, np.asarray(p[f'conv{r}']['kernel'], np.float64),
                                   np.asarray(p[f'conv{r}']['bias'])))
  assert h.shape == (len(PROMPTS), 4, 4, 24)
  h = lrelu(dense(h.reshape(len(PROMPTS), -1), p['fc']))
  t_d = np.asarray(jax.jit(lambda t: d.apply({'params': p}, t, method='text_embedding'))(text))
  expected = dense(h, p['out'])[:, 0] + np.sum(dense(t_d, p['embed']) * h, -1)

  logits = jax.jit(d.apply)({'params': p}, pyramid, text)
  assert list(logits) == [logit_name(32, 1)]
  got = logits[logit_name(32, 1)]
  assert got.shape == (len(PROMPTS), 1, 1, 1) and got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got)[:, 0, 0, 0], expected, rtol=1e-4, atol=1e-5)
  # The lower pyramid level does not enter.
  other = (pyramid[0], jnp.zeros_like(pyramid[1]))
  np.testing.assert_array_equal(jax.jit(d.apply)({'params': p}, other, text)[logit_name(32, 1)],
                                got)


def test_mismatched_captions_are_scored_as_alone(model):
  d, p, pyramid, text = model
  wrong = {k: np.roll(v, 1, axis=0) for k, v in text.items()}
  matched, mismatched = jax.jit(d.apply)({'params': p}, pyramid, text, wrong)
  alone = jax.jit(d.apply)({'params': p}, pyramid, wrong)
  key = logit_name(32, 1)
  np.testing.assert_allclose(mismatched[key], alone[key], rtol=1e-5, atol=1e-6)
  assert not np.allclose(matched[key], mismatched[key])


def test_pair_embeddings_are_the_two_sides_of_the_text_score(model):
  """<h_i, e_j> is D's text score of image i with caption j: on the diagonal,
  D's logit less its unconditional part (Dense_1(h))."""
  d, p, pyramid, text = model
  h, e = jax.jit(lambda pyr, t: d.apply({'params': p}, pyr, t, method='pair_embeddings'))(
      pyramid, text)
  assert h.shape == e.shape == (len(PROMPTS), 32)
  uncond = np.asarray(h) @ np.asarray(p['out']['kernel'])[:, 0] + np.asarray(p['out']['bias'])
  logits = jax.jit(d.apply)({'params': p}, pyramid, text)[logit_name(32, 1)]
  np.testing.assert_allclose(np.diagonal(np.asarray(h) @ np.asarray(e).T) + uncond,
                             np.asarray(logits)[:, 0, 0, 0], rtol=1e-4, atol=1e-5)


def test_contrastive_loss_matches_numpy_and_trains_d_to_pair_images_with_captions(model):
  """The step's contrastive term (loss.contrastive_weight) is InfoNCE over the
  batch in D's projection space, and Adam on it alone lowers it on a fixed batch."""
  import optax
  from gigagan_jax import losses
  d, p, pyramid, text = model
  tau = 0.1

  def loss_fn(params):
    h, e = d.apply({'params': params}, pyramid, text, method='pair_embeddings')
    return losses.contrastive_loss(h, e, tau, tokens=text['tokens'])

  h, e = (np.asarray(v, np.float64) for v in
          d.apply({'params': p}, pyramid, text, method='pair_embeddings'))
  sim = (h / np.linalg.norm(h, axis=1, keepdims=True)) @ (
      e / np.linalg.norm(e, axis=1, keepdims=True)).T / tau
  expected = np.mean(np.log(np.exp(sim).sum(1)) - np.diagonal(sim))
  np.testing.assert_allclose(loss_fn(p), expected, rtol=1e-4)

  tx = optax.adam(1e-3)
  opt = tx.init(p)

  @jax.jit
  def update(params, opt):
    grads = jax.grad(loss_fn)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt

  params = p
  for _ in range(20):
    params, opt = update(params, opt)
  assert loss_fn(params) < 0.5 * expected


def test_config_errors_name_the_field():
  config = load_config('configs/t2i_tiny.py')
  config.discriminator.kind = 'stylegan'
  with pytest.raises(ConfigError, match='discriminator.kind'):
    validate(config)
  config.discriminator.kind = 'projection'
  config.discriminator.projection_channels = (32, 64)
  with pytest.raises(ConfigError, match=r'discriminator.projection_channels.*32 px down to 4 px \(3\)'):
    validate(config)
  config = load_config('configs/t2i_tiny.py')
  config.loss.contrastive_weight = 1.0
  config.discriminator.kind = 'msio'
  with pytest.raises(ConfigError, match="loss.contrastive_weight.*kind='projection'"):
    validate(config)
  config.discriminator.kind = 'projection'
  config.data.batch_size = 1
  with pytest.raises(ConfigError, match='data.batch_size.*at least 2'):
    validate(config)
  config.data.batch_size = 4
  config.loss.contrastive_temperature = 0.0
  with pytest.raises(ConfigError, match='loss.contrastive_temperature'):
    validate(config)
  config.loss.contrastive_temperature = 0.1
  config.data.hard_negatives = True
  config.data.builder = 'imagenet2012'
  with pytest.raises(ConfigError, match='data.hard_negatives.*captioned_shapes'):
    validate(config)
  config.data.builder = 'captioned_shapes'
  for names in [('shape', 'pose'), ()]:
    config.data.hard_negative_attributes = names
    with pytest.raises(ConfigError, match='data.hard_negative_attributes.*subset'):
      validate(config)
  config.data.hard_negative_attributes = ('count',)
  validate(config)
  config.loss.contrastive_weight = 0.0
  with pytest.raises(ConfigError, match='data.hard_negatives.*contrastive_weight=0'):
    validate(config)


def test_a_run_saved_before_discriminator_kind_existed_resumes_with_the_msio_d():
  import conftest
  from gigagan_jax.train.checkpoint import _ADDED_D_FIELDS, config_to_dict, diff_configs, \
      with_added_defaults
  current = config_to_dict(conftest.micro_config())
  base_d = current['discriminator']
  for field, default in _ADDED_D_FIELDS:  # the defaults the base config declares
    assert tuple(np.atleast_1d(base_d[field])) == tuple(np.atleast_1d(default)), field
  added = {f for f, _ in _ADDED_D_FIELDS}
  saved = dict(current, discriminator={k: v for k, v in base_d.items() if k not in added})
  assert diff_configs(saved, current)  # each added field would count as a change
  assert diff_configs(with_added_defaults(saved), current) == []
  current['discriminator']['kind'] = 'projection'  # switching D is one
  assert diff_configs(with_added_defaults(saved), current) == [
      "discriminator.kind: saved 'msio', now 'projection'"]


def test_a_hard_negative_run_saved_before_the_attribute_choice_resumes_without_position():
  """Runs saved before data.hard_negative_attributes drew negatives of every
  attribute but position (position negatives came with the field)."""
  from configs import base
  from gigagan_jax.train.checkpoint import config_to_dict, diff_configs, with_added_defaults
  config = base.get_base_config()
  config.data.hard_negatives = True
  config.data.hard_negative_attributes = ('shape', 'color', 'count', 'size', 'background')
  current = config_to_dict(config)
  saved = config_to_dict(config)
  del saved['data']['hard_negative_attributes']
  assert diff_configs(with_added_defaults(saved), current) == []
  config.data.hard_negative_attributes = base.get_base_config().data.hard_negative_attributes
  assert [d.split(':')[0] for d in diff_configs(with_added_defaults(saved),
                                                config_to_dict(config))] == [
      'data.hard_negative_attributes']


def test_a_run_saved_before_shared_fakes_resumes_with_fresh_latents_for_g():
  from configs import base
  from gigagan_jax.train.checkpoint import config_to_dict, diff_configs, with_added_defaults
  current = config_to_dict(base.get_base_config())
  saved = config_to_dict(base.get_base_config())
  del saved['train']['shared_fakes']
  assert diff_configs(saved, current) == ["train.shared_fakes: saved '<missing>', now False"]
  assert diff_configs(with_added_defaults(saved), current) == []
