"""Text-conditioned GigaGAN upsampler: sizes, shapes, the bicubic start, conditioning."""
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import linen as nn

from configs.up_base import paper_upsampler, tiny_upsampler, upsampler_config
from gigagan_jax.config_utils import ConfigError
from gigagan_jax.models.baselines import bicubic_upsample
from gigagan_jax.config_utils import check_upsampler
from gigagan_jax.models.upsampler import Upsampler
from gigagan_jax.nn.fir import downsample2d
from gigagan_jax.text.tokenizer import ByteTokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LEN = 24
PROMPTS = ['a red circle', 'two blue squares on a yellow background']


def _model(cfg, vocab_size=ByteTokenizer(MAX_LEN).vocab_size, max_len=MAX_LEN):
  return Upsampler(ml_collections.FrozenConfigDict(cfg), vocab_size, max_len)


def _count(variables):
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nn.meta.unbox(variables)))


def _wavy_images(key, batch, size, max_cycles):
  """[B, size, size, 3] in [-1, 1]: sums of plane waves of up to `max_cycles` per side."""
  yy, xx = jnp.meshgrid(jnp.linspace(0, 1, size), jnp.linspace(0, 1, size), indexing='ij')
  fy, fx, phase = jax.random.uniform(key, (3, batch, 4, 1, 1, 3), minval=-1.0, maxval=1.0)
  img = jnp.sum(jnp.sin(2 * jnp.pi * max_cycles * (fy * yy[..., None] + fx * xx[..., None])
                        + jnp.pi * phase), axis=1)
  return jnp.tanh(img / 2)


# Exact parameter counts of the sized blocks (jax.eval_shape; the frozen text
# backbone is not counted), as configs/up_base.py's docstring states them
# rounded: paper_upsampler with CLIP ViT-L/14 features (768-d, 77 tokens);
# tiny_upsampler with this file's byte tokenizer (max_len 24). The paper's
# 64 -> 512 model has 359.1M; the widths were chosen to land near it.
SIZES = {  # (block, scale): (exact count, as the config docstring writes it)
    ('paper', 8): (358_630_560, '358.6M'),
    ('paper', 4): (358_249_053, '358.2M'),
    ('tiny', 4): (755_847, '0.76M'),
    ('tiny', 8): (763_914, '0.76M'),
}


def _paper_inputs(cfg):
  """CLIP ViT-L/14 features, as the paper's; 64 px inputs."""
  text = {'tokens': np.zeros((2, 77), np.int32), 'eot': np.ones((2,), np.int32),
          'features': np.zeros((2, 77, 768), np.float32)}
  return np.zeros((2, 64, 64, 3), np.float32), text, np.zeros((2, cfg.z_dim), np.float32)


@pytest.mark.parametrize('block,scale', list(SIZES))
def test_sizes_are_the_configs(block, scale):
  if block == 'paper':
    cfg = paper_upsampler(scale)
    model, (lr, text, z) = _model(cfg, vocab_size=0, max_len=77), _paper_inputs(cfg)
  else:
    cfg = tiny_upsampler(scale)
    model, lr = _model(cfg), np.zeros((2, 16, 16, 3), np.float32)
    text, z = ByteTokenizer(MAX_LEN)(PROMPTS), np.zeros((2, cfg.z_dim), np.float32)
  n = _count(jax.eval_shape(model.init, jax.random.key(0), lr, text, z))
  exact, stated = SIZES[block, scale]
  assert n == exact, n
  digits = 2 if n < 1e7 else 1
  assert f'{n / 1e6:.{digits}f}M' == stated, n
  with open(os.path.join(REPO, 'configs', 'up_base.py'), encoding='utf-8') as f:
    assert stated in f.read()


def test_paper_upsampler_shapes_without_memory():
  """64 -> 512 and 128 -> 1024 with the same weights; float32 params, bf16 compute."""
  cfg = paper_upsampler(8)
  check_upsampler(cfg)
  model = _model(cfg, vocab_size=0, max_len=77)
  lr64, text, z = _paper_inputs(cfg)
  variables = jax.eval_shape(model.init, jax.random.key(0), lr64, text, z)
  assert _count(variables) == SIZES['paper', 8][0]
  leaves = jax.tree.leaves(variables, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))  # params f32, compute bf16
  for side in (64, 128):
    out = jax.eval_shape(model.apply, variables, np.zeros((2, side, side, 3), np.float32), text, z)
    assert out.shape == (2, 8 * side, 8 * side, 3) and out.dtype == jnp.float32


def test_config_errors_name_the_field():
  cfg = upsampler_config(4)
  cfg.up_channels = cfg.up_channels[:-1]
  with pytest.raises(ConfigError, match='upsampler.up_channels'):
    check_upsampler(cfg)
  cfg = upsampler_config(8)
  cfg.self_attn_stages = (6,)
  with pytest.raises(ConfigError, match='upsampler.self_attn_stages'):
    check_upsampler(cfg)
  cfg = upsampler_config(8)
  cfg.residual_base = 'lanczos'
  with pytest.raises(ConfigError, match='upsampler.residual_base'):
    check_upsampler(cfg)
  cfg = upsampler_config(8)
  cfg.style_init = 'zeros'
  with pytest.raises(ConfigError, match='upsampler.style_init'):
    check_upsampler(cfg)


@pytest.fixture(scope='module')
def tiny():
  """Tiny 4x and 8x models, their variables, a jitted 4x apply, 64 px inputs, 256 px HR.

  One init serves every test: compiling an init is dominated by its ~130
  random initialisers (several times an apply's compile on CPU), and the 4x
  model's parameters are the 8x model's without its last up stage. Tests
  reuse the fixture's input shapes so that `apply` compiles once.
  """
  cfg4, cfg8 = tiny_upsampler(4), tiny_upsampler(8)
  m4, m8 = _model(cfg4), _model(cfg8)
  text = ByteTokenizer(MAX_LEN)(PROMPTS)
  z = jax.random.normal(jax.random.key(1), (len(PROMPTS), cfg4.z_dim))
  hr = _wavy_images(jax.random.key(2), len(PROMPTS), 256, max_cycles=12)
  lr = downsample2d(downsample2d(hr))
  # Parameter shapes do not depend on the input size: init on the smallest tile.
  init8 = nn.meta.unbox(jax.jit(m8.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)),
                                         {k: v[:1] for k, v in text.items()}, z[:1]))
  # The toRGB kernels and the styles' weights start at zero (the output is
  # then bicubic whatever the inputs); give them random values, as training
  # would, so that the tests below see every input reach the output.
  v8 = _as_if_trained(init8, jax.random.key(3))
  v4 = {'params': {k: v for k, v in v8['params'].items() if not k.startswith('up5')}}
  init4 = {'params': {k: v for k, v in init8['params'].items() if not k.startswith('up5')}}
  return dict(cfg=cfg4, m4=m4, m8=m8, v4=v4, v8=v8, init4=init4, apply=jax.jit(m4.apply),
              lr=lr, hr=hr, text=text, z=z)


def _is_to_rgb_bank(path) -> bool:
  keys = [getattr(k, 'key', None) for k in path]
  return keys[-1] == 'bank' and keys[-2].endswith('_to_rgb')


def _is_weight(path) -> bool:
  return getattr(path[-1], 'key', None) in ('bank', 'kernel')


def _as_if_trained(variables, key, std=0.1):
  """Every all-zero weight (toRGB kernels, style and selection weights) -> N(0, std)."""
  def fill(path, x):
    nonlocal key
    if not _is_weight(path) or jnp.any(x != 0):
      return x
    key, sub = jax.random.split(key)
    return std * jax.random.normal(sub, x.shape, x.dtype)
  return jax.tree_util.tree_map_with_path(fill, variables)


def test_tiny_4x_and_8x_forward_and_any_tile_shape(tiny):
  t = tiny
  out = t['apply'](t['v4'], t['lr'], t['text'], t['z'])
  assert out.shape == (2, 256, 256, 3) and out.dtype == jnp.float32
  assert np.isfinite(np.asarray(out)).all()
  out8 = jax.jit(t['m8'].apply)(t['v8'], t['lr'][:, :16, :16], t['text'], t['z'])
  assert out8.shape == (2, 128, 128, 3) and np.isfinite(np.asarray(out8)).all()
  # Fully convolutional: non-square tiles of any multiple of 2**num_down.
  tile = jax.eval_shape(t['m4'].apply, t['v4'], jnp.zeros((2, 8, 24, 3)), t['text'], t['z'])
  assert tile.shape == (2, 32, 96, 3)
  with pytest.raises(ValueError, match='multiples'):
    jax.eval_shape(t['m4'].apply, t['v4'], jnp.zeros((2, 12, 16, 3)), t['text'], t['z'])


def _psnr(a, b):
  return float(10 * jnp.log10(4.0 / jnp.mean(jnp.square(a - b))))  # range [-1, 1]: peak 2


def test_untrained_model_is_bicubic_and_every_parameter_learns(tiny):
  """residual_base='bicubic': the toRGB kernels start at zero, so an untrained model
  returns exactly bicubic; their gradient is not zero, and after one step on them
  every other weight of the network has a gradient too, the styles' zero-initialised
  weights included (no gate that can shut)."""
  t = tiny
  text, z = t['text'], t['z']
  bicubic = bicubic_upsample(t['lr'], 4)
  np.testing.assert_array_equal(np.asarray(t['apply'](t['init4'], t['lr'], text, z)),
                                np.asarray(bicubic))
  lr, hr = t['lr'][:, :16, :16], t['hr'][:, :64, :64]  # small: the gradient's run time

  grad = jax.jit(jax.grad(
      lambda v: jnp.mean(jnp.abs(t['m4'].apply(v, lr, text, z) - hr))))
  g0 = grad(t['init4'])
  assert all(jnp.any(g != 0) for p, g in jax.tree_util.tree_leaves_with_path(g0)
             if _is_to_rgb_bank(p))
  # One plain gradient step on the toRGB kernels only.
  stepped = jax.tree_util.tree_map_with_path(
      lambda p, v, g: v - 1e-2 * jnp.sign(g) if _is_to_rgb_bank(p) else v, t['init4'], g0)
  silent = [jax.tree_util.keystr(p) for p, g in jax.tree_util.tree_leaves_with_path(grad(stepped))
            if _is_weight(p) and not jnp.any(g != 0)]
  assert not silent, silent

  # residual_base='none': the same weights give the residual alone, far from the image.
  out = t['apply'](t['v4'], t['lr'], text, z)
  cfg_none = ml_collections.ConfigDict(t['cfg'].to_dict())
  cfg_none.residual_base = 'none'
  bare = jax.jit(_model(cfg_none).apply)(t['v4'], t['lr'], text, z)
  np.testing.assert_allclose(np.asarray(bare), np.asarray(out - bicubic), atol=1e-5)
  assert _psnr(bare, t['hr']) < _psnr(out, t['hr']) - 6.0


def test_text_and_z_reach_the_output(tiny):
  t = tiny
  apply, v, lr, text, z = t['apply'], t['v4'], t['lr'], t['text'], t['z']
  base = apply(v, lr, text, z)
  diff = lambda a: float(jnp.mean(jnp.abs(a - base)))
  rolled_text = {k: np.roll(x, 1, axis=0) for k, x in text.items()}
  assert diff(apply(v, lr, rolled_text, z)) > 1e-3
  assert diff(apply(v, lr, text, jnp.roll(z, 1, axis=0))) > 1e-3
  # An empty caption (start + end token only) is the unconditional case.
  empty = ByteTokenizer(MAX_LEN)([''] * len(PROMPTS))
  uncond = apply(v, lr, empty, z)
  assert np.isfinite(np.asarray(uncond)).all() and diff(uncond) > 1e-3
  # Same inputs, same output: no hidden randomness.
  np.testing.assert_array_equal(np.asarray(apply(v, lr, text, z)), np.asarray(base))


def test_far_pixels_change_only_through_self_attention(tiny):
  """A change in one corner of the input reaches the opposite corner only via attention."""
  t = tiny
  # One image and a copy with its top-left 4x4 input pixels negated; same text and z
  # (the fixture's shapes, so the model with attention is not compiled again).
  lr = jnp.repeat(t['lr'][:1], 2, axis=0).at[1, :4, :4].multiply(-1)
  text = {k: np.repeat(x[:1], 2, axis=0) for k, x in t['text'].items()}
  z = jnp.repeat(t['z'][:1], 2, axis=0)

  def near_and_far_change(apply):
    change = jnp.abs(jnp.diff(apply(t['v4'], lr, text, z), axis=0))
    # Top-left 16x16 output pixels; bottom-right 32x32 (input rows/columns 56-63:
    # beyond the convolutions' receptive field of the tiny model, ~50 input px).
    return float(jnp.max(change[:, :16, :16])), float(jnp.max(change[:, -32:, -32:]))

  near, far = near_and_far_change(t['apply'])
  assert near > 1e-2 and far > 1e-7, (near, far)  # global self-attention at h/4
  no_attn = ml_collections.ConfigDict(t['cfg'].to_dict())
  no_attn.self_attn_stages = ()
  # Flax ignores v4's self-attention parameters, which this model does not use.
  near, far = near_and_far_change(jax.jit(_model(no_attn).apply))
  assert near > 1e-2 and far == 0.0, (near, far)  # convolutions alone are local
