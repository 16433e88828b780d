"""FIR resampling (the [1, 3, 3, 1] binomial filter of StyleGAN2).

Upsampling inserts zeros and low-passes; downsampling low-passes and drops
every other pixel. The separable filter is applied as a few shifted
multiply-adds per axis rather than as a depthwise conv: elementwise work that
XLA fuses on every backend, and whose gradients are cheap too (depthwise and
dilated convs, and their transposes, are slow on CPU).
"""
import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_TAPS = (1, 3, 3, 1)


def _filter_axis(x, taps, axis: int, pad: tuple[int, int], gain: float):
  """Valid 1-D correlation along `axis` after zero padding; taps normalised to `gain`."""
  f = np.asarray(taps, np.float64)
  f = f / f.sum() * gain
  widths = [(0, 0)] * x.ndim
  widths[axis] = pad
  xp = jnp.pad(x, widths)
  n = x.shape[axis] + pad[0] + pad[1] - len(f) + 1
  out = 0
  for t, c in enumerate(f[::-1]):  # flipped: a convolution, symmetric taps make it moot
    out = out + jnp.asarray(c, x.dtype) * jax.lax.slice_in_dim(xp, t, t + n, axis=axis)
  return out


def _filter2d(x, taps, pad, gain):
  return _filter_axis(_filter_axis(x, taps, 1, pad, gain), taps, 2, pad, gain)


def blur(x, taps=DEFAULT_TAPS):
  """Low-pass at the same size. [B, H, W, C] -> [B, H, W, C]."""
  n = len(taps)
  return _filter2d(x, taps, ((n - 1) // 2, n // 2), 1.0)


def _zero_stuff(x, axis: int):
  """Interleaves zeros after every sample along `axis` (length doubles)."""
  stacked = jnp.stack([x, jnp.zeros_like(x)], axis=axis + 1)
  shape = list(x.shape)
  shape[axis] *= 2
  return stacked.reshape(shape)


def upsample2d(x, taps=DEFAULT_TAPS):
  """2x FIR upsampling. [B, H, W, C] -> [B, 2H, 2W, C]."""
  n = len(taps)
  x = _zero_stuff(_zero_stuff(x, 1), 2)
  # Gain 2 per axis keeps the mean; padding centres the filter on the new grid.
  return _filter2d(x, taps, ((n + 1) // 2, (n - 2) // 2), 2.0)


def downsample2d(x, taps=DEFAULT_TAPS):
  """2x FIR downsampling. [B, H, W, C] -> [B, H/2, W/2, C]."""
  n = len(taps)
  y = _filter2d(x, taps, ((n - 1) // 2, (n - 2) // 2), 1.0)
  return y[:, ::2, ::2]
