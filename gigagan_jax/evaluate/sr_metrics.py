"""PSNR and SSIM for super-resolution, with the BasicSR / MATLAB conventions.

Super-resolution papers (GigaGAN's upsampler included) report PSNR and SSIM
on the luma channel of the 0..255 images after cropping `scale` pixels from
every side (the pixels an upsampler cannot reconstruct from the border of
its input). Follow that and numbers are comparable with BasicSR's
`calculate_psnr` / `calculate_ssim` and with scikit-image's functions on the
same Y arrays:

  * Y is ITU-R BT.601 luma in the 'studio' range (16..235), unrounded:
    Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 for R, G, B in 0..255.
  * SSIM is Wang et al. (2004): 11x11 Gaussian window with sigma 1.5,
    K1 = 0.01, K2 = 0.03, population (not sample) statistics, averaged over
    the window positions that lie fully inside the (cropped) image. With
    several channels it is the mean of the per-channel SSIMs.

All functions take NHWC arrays, uint8 or float with values in 0..255, are
computed in float32 and are jitted (`crop_border` and `y_channel` are static).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# BT.601 luma coefficients for R, G, B in [0, 1] giving Y in 16..235 (MATLAB's rgb2ycbcr).
_Y_COEFFS = (65.481, 128.553, 24.966)
_Y_OFFSET = 16.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
_SSIM_PEAK = 255.0  # inputs are in 0..255, as the Y conversion assumes


def rgb_to_y(img):
  """BT.601 studio-range luma. img: [..., 3] in 0..255 (uint8 or float) -> float32 [..., 1].

  The channel axis is kept so that the result is still an NHWC image.
  """
  if img.shape[-1] != 3:
    raise ValueError(f'rgb_to_y expects RGB images [..., 3], got shape {img.shape}')
  return _luma(jnp.asarray(img, jnp.float32)) + _Y_OFFSET


def _luma(x):
  """The linear part of `rgb_to_y` (no offset): float32 [..., 3] -> [..., 1]."""
  # Elementwise products rather than a dot: no matmul precision setting can
  # lower them to bfloat16 on an accelerator.
  return sum(c / 255.0 * x[..., i] for i, c in enumerate(_Y_COEFFS))[..., None]


def _prepare(a, b, crop_border: int, y_channel: bool, min_size: int = 1):
  """Both images cropped, as float32 [B, H - 2c, W - 2c, C]; validates shapes
  (C = 3 when `y_channel`: the callers compare luma)."""
  if a.shape != b.shape or a.ndim != 4:
    raise ValueError(f'expected two images of the same shape [B, H, W, C], got '
                     f'{a.shape} and {b.shape}')
  if y_channel and a.shape[-1] != 3:
    raise ValueError(f'y_channel compares luma of RGB images [B, H, W, 3], got shape {a.shape}')
  if crop_border < 0:
    raise ValueError(f'crop_border must be >= 0, got {crop_border}')
  h, w = a.shape[1] - 2 * crop_border, a.shape[2] - 2 * crop_border
  if min(h, w) < min_size:
    raise ValueError(f'images {a.shape[1]}x{a.shape[2]} minus a border of {crop_border} '
                     f'leave {h}x{w}, fewer than {min_size} pixels per side')
  # Crop first: the border never enters any statistic, whatever its values.
  crop = (slice(None), slice(crop_border, crop_border + h), slice(crop_border, crop_border + w))
  a, b = a[crop], b[crop]
  # float32 before subtracting: uint8 differences would wrap around.
  return jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)


@functools.partial(jax.jit, static_argnames=('crop_border', 'y_channel'))
def psnr(a, b, *, crop_border: int, y_channel: bool = True, data_range=255.0):
  """Peak signal-to-noise ratio in dB per image.

  a, b: [B, H, W, C] in 0..255, uint8 or float (C = 3 when `y_channel`).
  crop_border: pixels dropped from each of the four sides (BasicSR: the SR
  scale). y_channel: compare BT.601 luma (`rgb_to_y`) instead of all
  channels. Returns float32 [B]; +inf where the images are identical.
  """
  a, b = _prepare(a, b, crop_border, y_channel)
  # Luma is linear up to its offset, so the luma difference is the luma of the
  # RGB difference: exactly 0 for identical images, however the compiler
  # contracts the products (two separate conversions need not round alike).
  diff = _luma(a - b) if y_channel else a - b
  mse = jnp.mean(jnp.square(diff), axis=(1, 2, 3))
  return 10.0 * jnp.log10(jnp.square(jnp.float32(data_range)) / mse)


def _gaussian_window() -> np.ndarray:
  """Normalised 1-D Gaussian taps, [SSIM_WINDOW] (the 2-D window is their outer product)."""
  r = np.arange(SSIM_WINDOW, dtype=np.float64) - (SSIM_WINDOW - 1) / 2
  g = np.exp(-0.5 * np.square(r / SSIM_SIGMA))
  return (g / g.sum()).astype(np.float32)


def _filter_valid(x):
  """Separable Gaussian mean over every fully-inside window: [B, H, W, C] -> [B, H-10, W-10, C].

  Written as shifted weighted sums so the arithmetic stays float32 on every
  backend (a convolution would follow the device's default precision).
  """
  taps = _gaussian_window()
  n = SSIM_WINDOW
  h, w = x.shape[1] - n + 1, x.shape[2] - n + 1
  x = sum(float(t) * x[:, i:i + h] for i, t in enumerate(taps))
  return sum(float(t) * x[:, :, i:i + w] for i, t in enumerate(taps))


@functools.partial(jax.jit, static_argnames=('crop_border', 'y_channel'))
def ssim(a, b, *, crop_border: int, y_channel: bool = True):
  """Structural similarity (Wang et al. 2004) per image.

  a, b: [B, H, W, C] in 0..255, uint8 or float (C = 3 when `y_channel`);
  after cropping `crop_border` pixels per side at least 11x11 must remain.
  Returns float32 [B]: the mean SSIM over the valid window positions (and
  over channels when `y_channel` is False); 1.0 for identical images.
  """
  a, b = _prepare(a, b, crop_border, y_channel, min_size=SSIM_WINDOW)
  if y_channel:
    a, b = rgb_to_y(a), rgb_to_y(b)
  # (Co)variances are shift-invariant: centring both images on their common
  # mean keeps E[x^2] - E[x]^2 from cancelling catastrophically in float32.
  shift = 0.5 * jnp.mean(a + b, axis=(1, 2, 3), keepdims=True)
  a, b = a - shift, b - shift
  mu_a, mu_b = _filter_valid(a), _filter_valid(b)
  var_a = _filter_valid(a * a) - mu_a * mu_a
  var_b = _filter_valid(b * b) - mu_b * mu_b
  cov = _filter_valid(a * b) - mu_a * mu_b
  mu_a, mu_b = mu_a + shift, mu_b + shift  # the luminance term needs the true means
  c1, c2 = (SSIM_K1 * _SSIM_PEAK) ** 2, (SSIM_K2 * _SSIM_PEAK) ** 2
  num = (2.0 * mu_a * mu_b + c1) * (2.0 * cov + c2)
  den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
  return jnp.mean(num / den, axis=(1, 2, 3))
