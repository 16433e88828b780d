"""Tiled upsampling (gigagan_jax.tiling): tiled output against one whole-image pass."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gigagan_jax.models.baselines import baseline_config, build_baseline
from gigagan_jax.tiling import (axis_weights, chain, default_margin, default_overlap,
                                tile_starts, upsample_tiled)


def nearest(scale):
  """Identity-like upsampler: every LR pixel becomes a scale x scale block."""
  return lambda x: np.repeat(np.repeat(np.asarray(x), scale, 1), scale, 2)


def local_conv_upsampler(key, scale=2, width=8):
  """Two random 3x3 convs then nearest upsampling: each output pixel depends
  on LR pixels at most 2 away (receptive radius 2). [n, h, w, 3] -> [n, h*s, w*s, 3]."""
  k1, k2 = jax.random.split(key)
  w1 = jax.random.normal(k1, (3, 3, 3, width)) / np.sqrt(27)
  w2 = jax.random.normal(k2, (3, 3, width, 3)) / np.sqrt(9 * width)
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))

  @jax.jit
  def fn(x):
    y = conv(jnp.tanh(conv(x, w1)), w2)
    return jnp.repeat(jnp.repeat(y, scale, 1), scale, 2)
  return fn


def smooth_image(shape, seed=0):
  """Band-limited random image in [-1, 1] (closer to a photo than white noise)."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=shape).astype(np.float32)
  f = np.fft.rfft2(x, axes=(0, 1))
  fy = np.fft.fftfreq(shape[0])[:, None, None]
  fx = np.fft.rfftfreq(shape[1])[None, :, None]
  x = np.fft.irfft2(f * np.exp(-(fy ** 2 + fx ** 2) / (2 * 0.08 ** 2)), s=shape[:2], axes=(0, 1))
  return (x / np.abs(x).max()).astype(np.float32)


def psnr(x, ref):
  """PSNR in dB against the reference's own dynamic range (random-weight
  models do not fill [-1, 1])."""
  peak = ref.max() - ref.min()
  return 10 * np.log10(peak ** 2 / np.mean((x - ref) ** 2))


def test_tile_starts_cover_with_overlap():
  for size, tile, overlap in [(100, 32, 8), (32, 32, 8), (33, 32, 0), (97, 16, 15), (64, 32, 0)]:
    starts = tile_starts(size, tile, overlap)
    assert starts[0] == 0 and starts[-1] == size - tile
    steps = np.diff(starts)
    assert np.all(steps > 0) and np.all(steps <= tile - overlap)
  assert tile_starts(64, 32, 0) == [0, 32]


def test_weights_are_a_partition_of_unity():
  starts = tile_starts(100, 32, 8)
  ws = axis_weights(starts, 32, 4, margin=2)
  total = np.zeros(100 * 4)
  for s, w in zip(starts, ws):
    total[4 * s:4 * (s + 32)] += w
  np.testing.assert_allclose(total, 1.0, atol=1e-12)
  # interior edges: the margin (2 LR px = 8 HR px) has zero weight; border sides weight 1
  assert np.all(ws[1][:8] == 0) and np.all(ws[1][-8:] == 0)
  assert np.all(ws[0][:40] == 1) and np.all(ws[-1][-40:] == 1)
  assert default_overlap(64) == 16 and default_margin(16) == 4


@pytest.mark.parametrize('shape', [(37, 53, 3), (5, 11, 3), (1, 1, 3), (16, 40, 3)])
def test_identity_like_upsampler_is_exact(shape):
  """Nearest repeat has no context, so any tiling must reproduce it; includes
  odd sizes and images smaller than a tile (reflect-padded, then cropped)."""
  image = np.random.default_rng(1).uniform(-1, 1, shape).astype(np.float32)
  calls = []
  fn = lambda x: calls.append(x.shape) or nearest(3)(x)
  out = upsample_tiled(fn, image, scale=3, tile=16, batch=4)
  np.testing.assert_allclose(out, nearest(3)(image[None])[0], rtol=0, atol=1e-6)
  assert out.dtype == np.float32
  assert all(s == (4, 16, 16, 3) for s in calls)  # fixed shape: a jitted fn compiles once


def test_receptive_field_within_margin_is_exact():
  """Radius-2 model, tile 32 -> overlap 8, margin 2: tiled equals whole to float precision."""
  fn = local_conv_upsampler(jax.random.key(0))
  image = smooth_image((75, 58, 3))
  whole = np.asarray(fn(image[None]))[0]
  tiled = upsample_tiled(fn, image, scale=2, tile=32)
  np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5)


def test_conv_model_tiled_psnr():
  """Acceptance criterion: tiled vs whole >= 40 dB at the default overlap, for a
  random-weight SRCNN (receptive radius ~6 LR px, beyond the default margin);
  hard seams (overlap 0 on a size that is a multiple of the tile) fall far below."""
  cfg = baseline_config('srcnn', 2)
  cfg.channels = (16, 8)
  model = build_baseline(cfg)
  image = smooth_image((96, 64, 3))
  variables = model.init(jax.random.key(1), image[None, :32, :32])
  fn = jax.jit(lambda x: model.apply(variables, x))
  whole = np.asarray(fn(image[None]))[0]
  p_default = psnr(upsample_tiled(fn, image, scale=2, tile=32), whole)
  p_zero = psnr(upsample_tiled(fn, image, scale=2, tile=32, overlap=0), whole)
  assert p_default >= 40, p_default
  assert p_zero < 40 and p_zero < p_default - 20, (p_zero, p_default)


def test_progress_and_batching():
  image = np.zeros((50, 50, 3), np.float32)
  seen, calls = [], []
  fn = lambda x: calls.append(len(x)) or nearest(2)(x)
  upsample_tiled(fn, image, scale=2, tile=16, overlap=4, batch=3,
                 progress=lambda done, total: seen.append((done, total)))
  n = len(tile_starts(50, 16, 4)) ** 2
  assert len(calls) == -(-n // 3) and set(calls) == {3}
  assert seen[-1] == (n, n) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_chain_two_stages_equals_composed_function():
  f = local_conv_upsampler(jax.random.key(2))
  g = local_conv_upsampler(jax.random.key(3))
  image = smooth_image((45, 38, 3))
  out = chain([(f, 2, 32, None), (g, 2, 40, None)], image, batch=4)
  assert out.shape == (180, 152, 3)
  composed = np.asarray(g(f(image[None])))[0]
  np.testing.assert_allclose(out, composed, rtol=0, atol=1e-5)


def test_bad_arguments():
  image = np.zeros((8, 8, 3), np.float32)
  with pytest.raises(ValueError, match='overlap'):
    upsample_tiled(nearest(2), image, scale=2, tile=8, overlap=8)
  with pytest.raises(ValueError, match='margin'):
    upsample_tiled(nearest(2), image, scale=2, tile=8, overlap=4, margin=2)
  with pytest.raises(ValueError, match='fn returned shape'):
    upsample_tiled(nearest(3), image, scale=2, tile=8)
  with pytest.raises(ValueError, match=r'\[H, W, C\]'):
    upsample_tiled(nearest(2), image[None], scale=2, tile=8)
