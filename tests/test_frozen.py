"""gigagan_jax.frozen: CLIP loss and vision-aided D vs transformers on a tiny random CLIP,
gradients, frozen params untouched, config checks and frozen-param sizes."""
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from conftest import CLIP_EOS as EOS
from conftest import CLIP_VOCAB as VOCAB
from conftest import save_tiny_hf_clip
from gigagan_jax import losses
from gigagan_jax.config_utils import ConfigError
from gigagan_jax.frozen import clip_loss, clip_model, clip_preprocess, sizes, vision_aided
from gigagan_jax.frozen.validate import EXPECTED_FIELDS, validate_frozen

import torch
import torch.nn.functional as F
import transformers

IMAGE, PATCH = 28, 7  # a 4x4 patch grid


@pytest.fixture(scope='module')
def hf_clip(tmp_path_factory):
  """A random tiny CLIPModel saved as config.json + model.safetensors."""
  directory = tmp_path_factory.mktemp('clip')
  model = save_tiny_hf_clip(directory, hidden_size=32, intermediate_size=40, num_hidden_layers=3,
                            num_attention_heads=4, image_size=IMAGE, patch_size=PATCH)
  return model, str(directory), clip_model.load_clip(str(directory))


def _tokens(rng, batch):
  """Distinct random captions ending in EOS at different positions, padded after it."""
  tokens = rng.integers(1, VOCAB - 2, (batch, 16))
  eot = np.array([5, 15, 9, 11][:batch])
  for i, e in enumerate(eot):
    tokens[i, e], tokens[i, e + 1:] = EOS, 0
  return tokens.astype(np.int32), eot.astype(np.int32)


def _torch_pixels(images, size):
  """The reference preprocessing in PyTorch: [-1, 1] NHWC -> normalised NCHW at `size`."""
  x = (torch.from_numpy(images).permute(0, 3, 1, 2) + 1) / 2
  x = F.interpolate(x, size=(size, size), mode='area')
  mean = torch.tensor(clip_model.OPENAI_IMAGE_MEAN).view(1, 3, 1, 1)
  std = torch.tensor(clip_model.OPENAI_IMAGE_STD).view(1, 3, 1, 1)
  return (x - mean) / std


def _rel(a, b):
  return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


# ------------------------------------------------------------------ preprocessing


@pytest.mark.parametrize('n_in,n_out', [(20, 28), (64, 224), (28, 20), (30, 7)])
def test_area_resize_matches_torch(n_in, n_out):
  x = np.random.default_rng(0).random((2, n_in, n_in, 3), dtype=np.float32)
  ours = np.asarray(clip_preprocess.area_resize(jnp.asarray(x), n_out))
  ref = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=(n_out, n_out),
                      mode='area').permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(ours, ref, atol=1e-6)


# ------------------------------------------------------------------ CLIP loss


def test_clip_loss_matches_transformers(hf_clip):
  model, _, clip = hf_clip
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (4, 20, 20, 3)).astype(np.float32)
  tokens, eot = _tokens(rng, 4)
  tau = 0.07
  with torch.no_grad():
    img = model.get_image_features(pixel_values=_torch_pixels(images, IMAGE))
    txt = model.get_text_features(input_ids=torch.from_numpy(tokens).long())
    img = getattr(img, 'pooler_output', img)  # transformers 5: an output object
    txt = getattr(txt, 'pooler_output', txt)
    logits = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T / tau
    ref = F.cross_entropy(logits, torch.arange(4)).item()
  ours = float(jax.jit(lambda c, x: clip_loss.clip_loss(c, x, tokens, eot, temperature=tau))(
      clip, images))
  print(f'CLIP loss: ours {ours:.6f}, transformers {ref:.6f}')
  assert ours == pytest.approx(ref, rel=1e-4, abs=1e-5)
  assert ours > 0.05  # not a degenerate zero: the towers are random


def test_clip_loss_gradient_reaches_images_not_clip(hf_clip):
  _, _, clip = hf_clip
  rng = np.random.default_rng(1)
  images = jnp.asarray(rng.uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32))
  tokens, eot = _tokens(rng, 3)

  def loss(params, x):
    return clip_loss.clip_loss(clip.replace(params=params), x, tokens, eot)

  g_params, g_images = jax.jit(jax.grad(loss, argnums=(0, 1)))(clip.params, images)
  assert np.all(np.isfinite(g_images)) and float(jnp.linalg.norm(g_images)) > 1e-6
  assert all(not np.any(g) for g in jax.tree.leaves(g_params))


def test_clip_loss_default_temperature_is_clips_logit_scale():
  # OpenAI CLIP's logit_scale is clamped at ln(100) and ends there: tau = 1 / 100.
  assert clip_loss.DEFAULT_TEMPERATURE == pytest.approx(0.01)
  assert dict((f, d) for f, d, _ in EXPECTED_FIELDS)['clip_temperature'] == 0.01


# ------------------------------------------------------------------ vision-aided D


def _va_loss_cfg(**kw):
  return ml_collections.ConfigDict({
      **dict(vision_aided_weight=1.0, vision_aided_layers=(1, 2), vision_aided_proj_dim=8,
             vision_aided_channels=8, vision_aided_head_layers=1, vision_aided_seed=3), **kw})


def test_vision_aided_shapes_and_param_split(hf_clip):
  _, _, clip = hf_clip
  spec, frozen, trainable = vision_aided.make_vision_aided(jax.random.key(0), clip,
                                                           _va_loss_cfg(), text_dim=5)
  # Frozen: the tower up to layer 2 of 3 (no layers_2, no post_layernorm) + projections.
  assert set(frozen) == {'clip_vision', 'projection'}
  assert 'layers_1' in frozen['clip_vision'] and 'layers_2' not in frozen['clip_vision']
  assert 'post_layernorm' not in frozen['clip_vision']
  assert {k: v['kernel'].shape for k, v in frozen['projection'].items()} == {
      'vision_l1': (32, 8), 'vision_l2': (32, 8)}
  # Trainable: the heads only.
  assert set(trainable) == {'conv_l1', 'head_l1', 'conv_l2', 'head_l2'}
  # The projection is a function of the seed.
  again = vision_aided.random_projection(3, spec)
  other = vision_aided.random_projection(4, spec)
  assert np.array_equal(again['vision_l1']['kernel'], frozen['projection']['vision_l1']['kernel'])
  assert not np.array_equal(other['vision_l1']['kernel'], again['vision_l1']['kernel'])

  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  t, t_wrong = rng.normal(size=(2, 2, 5)).astype(np.float32)
  run = jax.jit(vision_aided.vision_aided_logits, static_argnums=0)
  logits, wrong = run(spec, frozen, trainable, images, t, t_wrong)
  for out in (logits, wrong):
    assert {k: v.shape for k, v in out.items()} == {'vision_l1': (2, 4, 4, 1),
                                                    'vision_l2': (2, 4, 4, 1)}
    assert all(v.dtype == jnp.float32 for v in out.values())
  # The text conditions the logits; the mismatched pass is the same as a plain one.
  assert not np.allclose(logits['vision_l1'], wrong['vision_l1'])
  plain = run(spec, frozen, trainable, images, t_wrong)
  np.testing.assert_allclose(plain['vision_l2'], wrong['vision_l2'], rtol=1e-6, atol=1e-6)


def test_vision_aided_features_match_transformers_hidden_states(hf_clip):
  model, _, clip = hf_clip
  spec = vision_aided.make_spec(_va_loss_cfg(vision_aided_layers=(1, 3)), clip.cfg)
  ref_model = transformers.CLIPVisionModel(model.config.vision_config).eval()
  # transformers 4 nests the tower in .vision_model, 5 does not
  getattr(ref_model, 'vision_model', ref_model).load_state_dict(model.vision_model.state_dict())
  images = np.random.default_rng(2).uniform(-1, 1, (2, 20, 20, 3)).astype(np.float32)
  with torch.no_grad():
    hidden = ref_model(pixel_values=_torch_pixels(images, IMAGE), output_hidden_states=True)
  frozen = vision_aided.make_frozen(clip, spec)
  ours = jax.jit(vision_aided.clip_patch_features, static_argnums=0)(
      spec, frozen['clip_vision'], images)
  for layer, f in zip((1, 3), ours):
    ref = hidden.hidden_states[layer][:, 1:].numpy().reshape(2, 4, 4, 32)  # row-major patches
    err = _rel(f, ref)
    assert f.shape == (2, 4, 4, 32) and err < 1e-4, (layer, err)


def test_vision_aided_adam_lowers_d_loss_and_leaves_frozen_bitwise(hf_clip):
  _, _, clip = hf_clip
  spec, frozen, trainable = vision_aided.make_vision_aided(jax.random.key(1), clip,
                                                           _va_loss_cfg(), text_dim=5)
  rng = np.random.default_rng(3)
  real = np.tanh(np.cumsum(rng.normal(size=(4, 16, 16, 3)), axis=1) / 4).astype(np.float32)
  fake = rng.uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32)
  t = rng.normal(size=(4, 5)).astype(np.float32)

  def d_loss(params):
    logits = lambda x: vision_aided.vision_aided_logits(spec, params['frozen'], params['trainable'],
                                                        x, t)
    return losses.discriminator_loss('logistic', logits(real), logits(fake))

  # Adam over *both* trees, as a careless wiring would do: only stop_gradient
  # inside keeps the frozen part where it is (zero gradient -> zero Adam step).
  params = {'frozen': frozen, 'trainable': trainable}
  frozen_before = jax.tree.map(np.array, frozen)
  tx = optax.adam(3e-3)

  @jax.jit
  def step(params, opt):
    loss, grads = jax.value_and_grad(d_loss)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  opt = tx.init(params)
  history = []
  for _ in range(8):
    params, opt, loss = step(params, opt)
    history.append(float(loss))
  print('vision-aided D loss:', [f'{l:.3f}' for l in history])
  assert history[-1] < history[0] - 0.1, history
  same = jax.tree.map(lambda a, b: np.array_equal(a, np.asarray(b)), frozen_before,
                      params['frozen'])
  assert all(jax.tree.leaves(same))


def test_vision_aided_layers_outside_the_tower_are_named(hf_clip):
  _, _, clip = hf_clip
  with pytest.raises(ValueError, match=r'config\.loss\.vision_aided_layers'):
    vision_aided.make_spec(_va_loss_cfg(vision_aided_layers=(2, 4)), clip.cfg)


# ------------------------------------------------------------------ validate_frozen


def _config(clip_dir='', batch_size=8, **loss):
  return ml_collections.ConfigDict({'data': {'batch_size': batch_size},
                                    'loss': dict(clip_dir=clip_dir, **loss)})


@pytest.fixture
def fake_clip_dir(tmp_path):
  """A directory that passes the file checks (validate_frozen loads no weights)."""
  (tmp_path / 'config.json').write_text(json.dumps(
      {'text_config': {}, 'vision_config': {'num_hidden_layers': 6}}))
  (tmp_path / 'model.safetensors').write_bytes(b'')
  return tmp_path


def test_validate_frozen_accepts_good_configs(fake_clip_dir):
  assert validate_frozen(_config()) is not None  # both losses off: nothing needed
  assert validate_frozen(ml_collections.ConfigDict({'loss': {}, 'data': {}}))  # predates the fields
  validate_frozen(_config(str(fake_clip_dir), clip_weight=0.1, vision_aided_weight=1.0,
                          vision_aided_layers=(2, 6)))


@pytest.mark.parametrize('loss,field,message', [
    (dict(clip_weight=0.1), 'loss.clip_dir', r'loss\.clip_weight > 0 needs CLIP weights.*empty'),
    (dict(vision_aided_weight=1.0), 'loss.clip_dir',
     r'loss\.vision_aided_weight > 0 needs CLIP weights'),
    (dict(clip_weight=-1.0), 'loss.clip_weight', 'must be >= 0'),
])
def test_validate_frozen_without_weights(loss, field, message):
  with pytest.raises(ConfigError, match=rf'^config\.{field}: {message}'):
    validate_frozen(_config(**loss))


def test_validate_frozen_names_bad_clip_dirs(tmp_path, fake_clip_dir):
  missing = str(tmp_path / 'nowhere')
  with pytest.raises(ConfigError, match=r'^config\.loss\.clip_dir: .*nowhere.* not a directory'):
    validate_frozen(_config(missing, clip_weight=0.1))
  (fake_clip_dir / 'model.safetensors').unlink()
  with pytest.raises(ConfigError, match=r'^config\.loss\.clip_dir: .* no model\.safetensors'):
    validate_frozen(_config(str(fake_clip_dir), vision_aided_weight=1.0))
  (fake_clip_dir / 'model.safetensors').write_bytes(b'')
  (fake_clip_dir / 'config.json').write_text(json.dumps({'text_config': {}}))
  with pytest.raises(ConfigError, match=r"^config\.loss\.clip_dir: .* no 'vision_config'"):
    validate_frozen(_config(str(fake_clip_dir), vision_aided_weight=1.0))
  (fake_clip_dir / 'config.json').unlink()
  with pytest.raises(ConfigError, match=r'^config\.loss\.clip_dir: .* no config\.json'):
    validate_frozen(_config(str(fake_clip_dir), clip_weight=0.1))


def test_validate_frozen_names_batch_and_vision_fields(fake_clip_dir):
  d = str(fake_clip_dir)
  with pytest.raises(ConfigError, match=r'^config\.data\.batch_size: .*at least 2; got 1'):
    validate_frozen(_config(d, batch_size=1, clip_weight=0.1))
  validate_frozen(_config(d, batch_size=1, vision_aided_weight=1.0, vision_aided_layers=(1,)))
  with pytest.raises(ConfigError, match=r'^config\.loss\.clip_temperature: must be > 0'):
    validate_frozen(_config(d, clip_weight=0.1, clip_temperature=0.0))
  with pytest.raises(ConfigError, match=r'^config\.loss\.vision_aided_layers: .*1\.\.6'):
    validate_frozen(_config(d, vision_aided_weight=1.0, vision_aided_layers=(4, 8)))
  with pytest.raises(ConfigError, match=r'^config\.loss\.vision_aided_proj_dim: must be a pos'):
    validate_frozen(_config(d, vision_aided_weight=1.0, vision_aided_layers=(1,),
                            vision_aided_proj_dim=0))


# ------------------------------------------------------------------ sizes


def test_frozen_param_bytes_of_vit_b32():
  with torch.device('meta'):  # shapes only, no memory
    ref = transformers.CLIPModel(transformers.CLIPConfig())
  numel = {n: p.numel() for n, p in ref.named_parameters()}
  clip_params = sum(numel.values()) - numel['logit_scale']  # a training-time scalar we drop
  vision = sum(v for n, v in numel.items() if n.startswith('vision_model.'))
  post_ln = sum(v for n, v in numel.items() if n.startswith('vision_model.post_layernorm'))
  layers12 = sum(v for n, v in numel.items() if n.startswith('vision_model.encoder.layers.11.'))

  cfg = ml_collections.ConfigDict({'loss': {'clip_weight': 0.1, 'vision_aided_weight': 1.0,
                                            'lpips_weight': 10.0}})
  got = sizes.frozen_param_bytes(cfg)
  assert clip_params == 151_277_312  # ViT-B/32, both towers and projections
  assert got['clip'] == 4 * clip_params
  projection = 3 * (768 * 256 + 256)  # default layers (4, 8, 12), P = 256
  assert got['vision_aided'] == 4 * (vision - post_ln + projection)
  assert got['lpips'] == 4 * 14_716_160  # VGG16 convs + five linear heads
  cfg.loss.vision_aided_layers = (4, 8)  # trimmed tower: layers 9..12 are not kept
  trimmed = sizes.frozen_param_bytes(cfg)['vision_aided']
  assert trimmed == 4 * (vision - post_ln - 4 * layers12 + 2 * (768 * 256 + 256))
  assert sizes.frozen_param_bytes(ml_collections.ConfigDict({'loss': {}})) == {}
