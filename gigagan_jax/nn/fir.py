"""FIR resampling (the [1, 3, 3, 1] binomial filter of StyleGAN2).

Upsampling inserts zeros and low-passes; downsampling low-passes and drops
every other pixel. Both are depthwise convs, so they run in any dtype and
under any sharding of batch/channels.
"""
import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_TAPS = (1, 3, 3, 1)


def _kernel(taps, channels: int, gain: float, dtype):
  f = np.asarray(taps, np.float64)
  f = np.outer(f, f)
  f = f / f.sum() * gain
  f = f[::-1, ::-1]  # conv_general_dilated correlates; flip to convolve
  return jnp.asarray(np.tile(f[:, :, None, None], (1, 1, 1, channels)), dtype)


def _depthwise(x, kernel, padding, lhs_dilation=(1, 1), strides=(1, 1)):
  return jax.lax.conv_general_dilated(
      x, kernel, strides, padding, lhs_dilation=lhs_dilation,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=x.shape[-1])


def blur(x, taps=DEFAULT_TAPS):
  """Low-pass at the same size. [B, H, W, C] -> [B, H, W, C]."""
  n = len(taps)
  pad = ((n - 1) // 2, n // 2)
  return _depthwise(x, _kernel(taps, x.shape[-1], 1.0, x.dtype), (pad, pad))


def upsample2d(x, taps=DEFAULT_TAPS):
  """2x FIR upsampling. [B, H, W, C] -> [B, 2H, 2W, C]."""
  n = len(taps)
  # The zero-dilated input has 2H-1 rows; pad so that the output has 2H.
  pad = ((n + 1) // 2, n - (n + 1) // 2)
  return _depthwise(x, _kernel(taps, x.shape[-1], 4.0, x.dtype), (pad, pad), lhs_dilation=(2, 2))


def downsample2d(x, taps=DEFAULT_TAPS):
  """2x FIR downsampling. [B, H, W, C] -> [B, H/2, W/2, C]."""
  n = len(taps)
  pad = ((n - 1) // 2, (n - 2) // 2)
  return _depthwise(x, _kernel(taps, x.shape[-1], 1.0, x.dtype), (pad, pad), strides=(2, 2))
