"""SR baselines (gigagan_jax.models.baselines): shapes, published sizes, Swin windows, training."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from gigagan_jax.models.baselines import (KINDS, SCALES, baseline_config, bicubic_upsample,
                                          build_baseline)
from gigagan_jax.models.baselines.swinir import (SwinBlock, relative_position_index,
                                                 shifted_window_mask, window_partition,
                                                 window_reverse)

TINY = {
    'bicubic': {},
    'srcnn': dict(kernel_sizes=(5, 3, 3), channels=(8, 8)),
    'esrgan': dict(num_feat=8, num_blocks=1, growth=4),
    'swinir': dict(embed_dim=12, depths=(2,), num_heads=(2,), window_size=4, num_feat=8),
}


def tiny_config(kind, scale):
  cfg = baseline_config(kind, scale)
  cfg.update(TINY[kind])
  return cfg


def num_params(cfg):
  """Parameter count by jax.eval_shape (no memory, no compile)."""
  model = build_baseline(cfg)
  v = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nn.meta.unbox(v)))


def conv_params(k, cin, cout):
  return k * k * cin * cout + cout


# ---------------------------------------------------------------- config / shapes

def test_config_validation_names_the_field():
  with pytest.raises(ValueError, match='kind'):
    baseline_config('edsr', 4)
  with pytest.raises(ValueError, match='upsampler.scale'):
    baseline_config('esrgan', 3)
  cfg = baseline_config('srcnn', 2)
  cfg.channels = (64,)
  with pytest.raises(ValueError, match='upsampler.kernel_sizes'):
    build_baseline(cfg)
  cfg = baseline_config('swinir', 2)
  cfg.num_heads = (7,) * 6
  with pytest.raises(ValueError, match='embed_dim'):
    build_baseline(cfg)


@pytest.mark.parametrize('kind', KINDS)
def test_output_shapes_every_scale(kind):
  """[B, h, w, 3] -> [B, h*s, w*s, 3] float32 for s in 2, 4, 8; h, w not multiples
  of SwinIR's window; text and z are accepted and ignored."""
  text = {'tokens': jnp.zeros((2, 7), jnp.int32)}
  for scale in SCALES:
    model = build_baseline(tiny_config(kind, scale))
    lr = jnp.zeros((2, 10, 7, 3))
    out, _ = jax.eval_shape(lambda x: model.init_with_output(
        jax.random.key(0), x, text=text, z=jnp.zeros((2, 4))), lr)
    assert out.shape == (2, 10 * scale, 7 * scale, 3) and out.dtype == jnp.float32


def test_bfloat16_compute_keeps_float32_params_and_output():
  cfg = tiny_config('swinir', 2)
  cfg.dtype = 'bfloat16'
  model = build_baseline(cfg)
  out, v = jax.eval_shape(model.init_with_output, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  assert out.dtype == jnp.float32
  assert {x.dtype for x in jax.tree.leaves(nn.meta.unbox(v))} == {jnp.dtype(jnp.float32)}


# ---------------------------------------------------------------- published sizes

def test_srcnn_955_parameter_count():
  """9-5-5 with 64/32 channels: 69,251 on RGB. (The often-quoted 57,281 is the
  same network on the Y channel only: 1 input and 1 output channel.)"""
  rgb = conv_params(9, 3, 64) + conv_params(5, 64, 32) + conv_params(5, 32, 3)
  y_only = conv_params(9, 1, 64) + conv_params(5, 64, 32) + conv_params(5, 32, 1)
  assert (rgb, y_only) == (69_251, 57_281)
  assert num_params(baseline_config('srcnn', 4)) == 69_251


def test_esrgan_rrdbnet_parameter_count():
  """RRDBNet 64 features, 23 RRDBs, growth 32: 16,697,987 at x4 (ESRGAN's
  published model); each 2x upsampling stage adds one num_feat->num_feat 3x3 conv."""
  rdb = sum(conv_params(3, 64 + 32 * i, 32) for i in range(4)) + conv_params(3, 64 + 128, 64)
  trunk = conv_params(3, 3, 64) + 23 * 3 * rdb + conv_params(3, 64, 64)
  head = conv_params(3, 64, 64) + conv_params(3, 64, 3)  # conv_hr, conv_last
  assert trunk + 2 * conv_params(3, 64, 64) + head == 16_697_987
  assert num_params(baseline_config('esrgan', 4)) == 16_697_987
  # scales 2 and 8: one upsampling conv less / more (tiny size, same code path)
  tiny = {s: num_params(tiny_config('esrgan', s)) for s in SCALES}
  up = conv_params(3, TINY['esrgan']['num_feat'], TINY['esrgan']['num_feat'])
  assert tiny[4] - tiny[2] == tiny[8] - tiny[4] == up


def test_swinir_classical_parameter_count():
  """SwinIR classical SR (embed 180, 6x6 blocks, 6 heads, window 8, MLP 2,
  pixel shuffle with 64 features): 11,900,199 at x4 (published: 11.9M),
  relative-position bias tables ((2*8-1)^2 x 6 per block) included."""
  c, hidden, ws, heads = 180, 360, 8, 6
  block = (2 * 2 * c                       # norm1, norm2
           + c * 3 * c + 3 * c             # qkv
           + (2 * ws - 1) ** 2 * heads     # relative position bias table
           + c * c + c                     # proj
           + c * hidden + hidden + hidden * c + c)  # MLP
  rstb = 6 * block + conv_params(3, c, c)
  body = conv_params(3, 3, c) + 2 * c + 6 * rstb + 2 * c + conv_params(3, c, c)
  head = conv_params(3, c, 64) + 2 * conv_params(3, 64, 256) + conv_params(3, 64, 3)
  assert body + head == 11_900_199
  assert num_params(baseline_config('swinir', 4)) == 11_900_199
  # scales 2 and 8: one pixel-shuffle conv less / more (tiny size, same code path)
  tiny = {s: num_params(tiny_config('swinir', s)) for s in SCALES}
  f = TINY['swinir']['num_feat']
  assert tiny[4] - tiny[2] == tiny[8] - tiny[4] == conv_params(3, f, 4 * f)


def test_bicubic_has_no_parameters_and_equals_resize():
  lr = jax.random.uniform(jax.random.key(0), (2, 9, 6, 3), minval=-1, maxval=1)
  model = build_baseline(baseline_config('bicubic', 4))
  variables = model.init(jax.random.key(0), lr)
  assert not jax.tree.leaves(variables)
  expected = jax.image.resize(lr, (2, 36, 24, 3), 'bicubic')
  np.testing.assert_array_equal(model.apply(variables, lr), expected)
  np.testing.assert_array_equal(bicubic_upsample(lr, 4), expected)


# ---------------------------------------------------------------- Swin windows

def test_window_partition_round_trip():
  x = jnp.arange(2 * 8 * 12 * 3, dtype=jnp.float32).reshape(2, 8, 12, 3)
  win = window_partition(x, 4)
  assert win.shape == (2 * 2 * 3, 16, 3)
  np.testing.assert_array_equal(win[4].reshape(4, 4, 3), x[0, 4:8, 4:8])  # row 1, col 1
  np.testing.assert_array_equal(window_reverse(win, 4, 8, 12), x)


def test_relative_position_index_direct():
  ws = 3
  idx = relative_position_index(ws)
  for a in range(ws * ws):
    for b in range(ws * ws):
      dy, dx = a // ws - b // ws, a % ws - b % ws
      assert idx[a, b] == (dy + ws - 1) * (2 * ws - 1) + (dx + ws - 1)


def test_shift_mask_matches_direct_construction():
  """After rolling by -shift, two tokens of one window may attend iff neither or
  both are wrapped-around pixels, separately for rows and columns."""
  h, w, ws, shift = 8, 12, 4, 2
  mask = shifted_window_mask(h, w, ws, shift)
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
  pos = window_partition(np.stack([rows, cols], -1)[None], ws)  # [nW, N, 2] rolled coords
  wrap_r, wrap_c = pos[..., 0] >= h - shift, pos[..., 1] >= w - shift
  direct = ((wrap_r[:, :, None] == wrap_r[:, None, :])
            & (wrap_c[:, :, None] == wrap_c[:, None, :]))
  np.testing.assert_array_equal(mask, direct)
  assert mask[0].all() and not mask[-1].all()  # only border windows are masked


@pytest.mark.parametrize('shift', [0, 2])
def test_swin_block_mixes_only_within_its_window(shift):
  """Perturbing one pixel changes exactly the pixels of its (shifted) window; at
  the image corner, the shifted window's wrap-around part stays untouched."""
  block = SwinBlock(num_heads=2, window_size=4, shift=shift)
  x = jax.random.normal(jax.random.key(0), (1, 16, 16, 8))
  # Attention weights 10x their init (std 0.2 instead of 0.02), so every token
  # of a window moves every other one well above float noise.
  variables = jax.tree_util.tree_map_with_path(
      lambda path, p: p * (10 if 'attn' in jax.tree_util.keystr(path) else 1),
      jax.jit(block.init)(jax.random.key(1), x))
  apply = jax.jit(lambda x: block.apply(variables, x))
  base = apply(x)

  # A random direction: adding a constant to every channel is invisible to LayerNorm.
  delta = jax.random.normal(jax.random.key(2), (8,))

  def changed(y, xx):
    return np.asarray(jnp.abs(apply(x.at[0, y, xx].add(delta)) - base).max(-1)[0] > 1e-4)

  expect = np.zeros((16, 16), bool)
  lo = 4 if shift == 0 else 2  # window [4, 8) unshifted; [2, 6) after a shift of 2
  expect[lo:lo + 4, lo:lo + 4] = True
  np.testing.assert_array_equal(changed(5, 5), expect)
  corner = np.zeros((16, 16), bool)
  if shift == 0:
    corner[:4, :4] = True
  else:  # the window {14, 15, 0, 1}^2 is split by the mask: (0, 0) sees only [0, 2)^2
    corner[:2, :2] = True
  np.testing.assert_array_equal(changed(0, 0), corner)


# Learning: each baseline config lowers its loss on a fixed batch through the
# real SR train step in tests/test_sr_train.py (test_baseline_configs_learn_a_fixed_batch).
