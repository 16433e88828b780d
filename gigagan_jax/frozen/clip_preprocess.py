"""CLIP input for the training losses: generated images in [-1, 1] -> normalised CLIP pixels.

The convention of the official vision-aided GAN code (Kumari et al. 2022,
PAPER_NOTES section 9.2), also StyleGAN-T's for its CLIP loss (9.5):

  x in [-1, 1] -> (x + 1) / 2 -> 'area' resize to the tower's image_size
  -> (x - mean) / std per channel (OpenAI CLIP's mean/std, or the checkpoint's).

'area' is PyTorch's `F.interpolate(mode='area')`, i.e. adaptive average
pooling: output pixel i averages input pixels floor(i * n / m) ..
ceil((i + 1) * n / m) - 1. It is written here as one [m, n] averaging matrix
per axis, so it is exact (same numbers as PyTorch), differentiable, and
works both ways: a 64 px G output grows to 224 (each output pixel then
covers one or two input pixels), a 512 px one shrinks.

This is not the evaluation pipeline: the CLIP score (evaluate/clip_score.py)
follows CLIPImageProcessor (bicubic short side + centre crop) on [0, 1]
images, and FID the authors' PIL protocol (evaluate/preprocess.py).
"""
from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=None)
def area_matrix(n_in: int, n_out: int) -> np.ndarray:
  """float32 [n_out, n_in]: row i averages input pixels [floor(i n_in / n_out), ceil((i + 1) n_in / n_out))."""
  m = np.zeros((n_out, n_in), np.float32)
  for i in range(n_out):
    start = (i * n_in) // n_out
    end = -(-((i + 1) * n_in) // n_out)  # ceil without floats
    m[i, start:end] = 1.0 / (end - start)
  return m


def area_resize(images, size: int):
  """PyTorch 'area' resize of both spatial axes. [B, H, W, C] -> [B, size, size, C].

  Non-square inputs are stretched, as F.interpolate(size=(size, size)) does.
  """
  h, w = images.shape[1:3]
  if (h, w) == (size, size):
    return images
  rows = jnp.asarray(area_matrix(h, size), images.dtype)
  cols = jnp.asarray(area_matrix(w, size), images.dtype)
  return jnp.einsum('ih,bhwc,jw->bijc', rows, images, cols)


def clip_pixels(images, image_size: int, mean, std):
  """Generated images float [B, H, W, 3] in [-1, 1] -> CLIP pixels float32 [B, S, S, 3].

  S = image_size (the tower's input side); mean/std: per-channel, of [0, 1]
  pixels (CLIPConfig.image_mean / image_std).
  """
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f'expected RGB images [B, H, W, 3], got shape {images.shape}')
  x = (images.astype(jnp.float32) + 1.0) * 0.5
  x = area_resize(x, image_size)
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
