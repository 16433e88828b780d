"""PSNR / SSIM / luma: agreement with scikit-image under the BasicSR conventions."""
import numpy as np
import pytest

from gigagan_jax.evaluate import sr_metrics

import skimage.color as skimage_color
import skimage.metrics as skimage_metrics


def _pair(seed=0, shape=(2, 40, 48, 3)):
  """A structured image (gradients + a bright square) and a noisy, shifted copy, 0..255."""
  rng = np.random.default_rng(seed)
  b, h, w, _ = shape
  yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing='ij')
  base = np.stack([200 * xx, 180 * yy, 120 * (1 - xx * yy)], -1)
  base[h // 4:h // 2, w // 3:w // 2] = 230.0
  clean = np.stack([np.roll(base, 3 * i, axis=1) for i in range(b)]).astype(np.float32)
  noisy = np.clip(clean + rng.normal(0, 12, clean.shape), 0, 255).astype(np.float32)
  return clean, noisy


def _y(img):
  return skimage_color.rgb2ycbcr(img / 255.0)[..., 0]  # float input in [0, 1] -> Y in 16..235


def _ref_psnr(a, b, crop, y):
  s = (slice(crop, -crop or None),) * 2
  a, b = (_y(a[s]), _y(b[s])) if y else (a[s].astype(np.float64), b[s].astype(np.float64))
  return skimage_metrics.peak_signal_noise_ratio(a, b, data_range=255)


def _ref_ssim(a, b, crop, y):
  s = (slice(crop, -crop or None),) * 2
  a, b = (_y(a[s]), _y(b[s])) if y else (a[s].astype(np.float64), b[s].astype(np.float64))
  return skimage_metrics.structural_similarity(
      a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
      channel_axis=None if y else -1)


def _rel(a, b):
  return np.abs(np.asarray(a, np.float64) - b) / np.abs(b)


def test_rgb_to_y_matches_skimage():
  img = np.random.default_rng(0).uniform(0, 255, (2, 9, 7, 3)).astype(np.float32)
  ours = np.asarray(sr_metrics.rgb_to_y(img))
  assert ours.shape == (2, 9, 7, 1) and ours.dtype == np.float32
  np.testing.assert_allclose(ours[..., 0], _y(img.astype(np.float64)), rtol=1e-6, atol=1e-4)
  # Studio range: black -> 16, white -> 235.
  ends = np.asarray(sr_metrics.rgb_to_y(np.array([[0, 0, 0], [255, 255, 255]], np.uint8)))
  np.testing.assert_allclose(ends[:, 0], [16.0, 235.0], atol=1e-4)


@pytest.mark.parametrize('y_channel', [True, False])
@pytest.mark.parametrize('kind', ['structured', 'random'])
def test_psnr_ssim_match_skimage(y_channel, kind):
  if kind == 'structured':
    a, b = _pair()
  else:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (2, 33, 37, 3)).astype(np.uint8)
    b = rng.integers(0, 256, (2, 33, 37, 3)).astype(np.uint8)
  crop = 4
  p = np.asarray(sr_metrics.psnr(a, b, crop_border=crop, y_channel=y_channel))
  s = np.asarray(sr_metrics.ssim(a, b, crop_border=crop, y_channel=y_channel))
  assert p.shape == s.shape == (2,) and p.dtype == s.dtype == np.float32
  a64, b64 = a.astype(np.float64), b.astype(np.float64)
  for i in range(2):
    ref_p = _ref_psnr(a64[i], b64[i], crop, y_channel)
    ref_s = _ref_ssim(a64[i], b64[i], crop, y_channel)
    print(f'{kind} y={y_channel}: psnr {p[i]:.5f} vs {ref_p:.5f}, ssim {s[i]:.6f} vs {ref_s:.6f}')
    assert _rel(p[i], ref_p) <= 1e-4
    assert _rel(s[i], ref_s) <= 1e-4


def test_ssim_of_nearly_identical_bright_images():
  # Flat bright regions: the case where float32 E[x^2] - E[x]^2 cancels.
  a = np.full((1, 24, 24, 3), 250.0, np.float32)
  a[:, 8:16, 8:16] = 251.0
  b = a.copy()
  b[:, 12, 12] += 0.5
  ref = _ref_ssim(a[0].astype(np.float64), b[0].astype(np.float64), 0, True)
  ours = float(sr_metrics.ssim(a, b, crop_border=0)[0])
  assert _rel(ours, ref) <= 1e-5, (ours, ref)


def test_border_crop_removes_exactly_the_border():
  a, b = _pair(shape=(1, 32, 32, 3))
  crop = 3
  base_p = float(sr_metrics.psnr(a, b, crop_border=crop)[0])
  base_s = float(sr_metrics.ssim(a, b, crop_border=crop)[0])
  changed = b.copy()
  changed[:, :crop] = 0.0
  changed[:, -crop:] = 255.0
  changed[:, :, :crop] = 17.0
  changed[:, :, -crop:] = 99.0
  assert float(sr_metrics.psnr(a, changed, crop_border=crop)[0]) == base_p
  assert float(sr_metrics.ssim(a, changed, crop_border=crop)[0]) == base_s
  # One pixel further in is inside the compared region.
  inner = b.copy()
  inner[:, crop, crop + 5] = 0.0
  assert float(sr_metrics.psnr(a, inner, crop_border=crop)[0]) < base_p


def test_identical_images():
  a, _ = _pair()
  assert np.all(np.isposinf(np.asarray(sr_metrics.psnr(a, a, crop_border=2))))
  np.testing.assert_allclose(np.asarray(sr_metrics.ssim(a, a, crop_border=2)), 1.0, atol=1e-6)
  u8 = a.astype(np.uint8)
  np.testing.assert_allclose(
      np.asarray(sr_metrics.ssim(u8, u8, crop_border=0, y_channel=False)), 1.0, atol=1e-6)


def test_shape_errors():
  a = np.zeros((1, 20, 20, 3), np.float32)
  with pytest.raises(ValueError, match='11'):
    sr_metrics.ssim(a, a, crop_border=5)  # 10x10 left
  with pytest.raises(ValueError, match='same shape'):
    sr_metrics.psnr(a, a[:, :10], crop_border=0)
  with pytest.raises(ValueError, match='RGB'):
    sr_metrics.psnr(a[..., :1], a[..., :1], crop_border=0)
