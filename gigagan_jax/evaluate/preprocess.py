"""Image preprocessing for evaluation, following the GigaGAN authors' protocol.

The authors' public evaluation scripts (mingukkang/GigaGAN, PAPER_NOTES.md §8)
treat real and generated images identically:

  1. centre-crop to the short side (a square of side min(H, W)),
  2. resize with PIL's Lanczos filter to the evaluation resolution (e.g. 256),
     on uint8 RGB,
  3. hand the uint8 images to clean-fid, which resizes them to 299x299 with
     PIL bicubic on *float32* channels (no uint8 rounding in between, no
     aliasing) before Inception-v3.

Step 3 is `clean_resize`; then call `inception.pool_features(...,
input_norm='clean_fid')` to scale pixels exactly as clean-fid does.

All functions work on host numpy arrays: PIL is the reference resampler here
on purpose, since FID is sensitive to the resize implementation (Parmar et
al., "On Aliased Resizing and Surprising Subtleties in GAN Evaluation", 2022)
and any other filter gives numbers that are not comparable with published
ones.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from PIL import Image

# The recorded description of what `eval_preprocess` does, for metric reports.
PROTOCOL = ('centre crop to the short side, PIL Lanczos resize of uint8 RGB (real and '
            'generated alike); clean-fid PIL bicubic float resize to 299 and (x - 128) / 128 '
            'input scaling for Inception')


def _check_image(img: np.ndarray) -> np.ndarray:
  img = np.asarray(img)
  if img.ndim != 3 or img.shape[-1] not in (1, 3, 4):
    raise ValueError(f'expected one image [H, W, C] with C in (1, 3, 4), got shape {img.shape}')
  if img.dtype != np.uint8:
    raise ValueError(f'expected uint8 pixels in [0, 255], got {img.dtype} '
                     '(use to_uint8 on float images in [0, 1])')
  return img


def to_uint8(images: np.ndarray) -> np.ndarray:
  """Float images in [0, 1] (any shape) -> uint8 in [0, 255], rounded, clipped.

  Generated images go through this so that they are quantised exactly like
  saved PNGs, as the real images are.
  """
  return np.clip(np.rint(np.asarray(images, np.float64) * 255.0), 0, 255).astype(np.uint8)


def center_crop_square(img: np.ndarray) -> np.ndarray:
  """[H, W, C] -> [S, S, C] with S = min(H, W), the centred square.

  When H - S is odd the extra row goes to the bottom (offset rounds down),
  as PIL's and torchvision's centre crops do.
  """
  img = np.asarray(img)
  h, w = img.shape[:2]
  s = min(h, w)
  top, left = (h - s) // 2, (w - s) // 2
  return img[top:top + s, left:left + s]


def crop_resize(img: np.ndarray, size: int) -> np.ndarray:
  """Authors' protocol for one image: uint8 [H, W, C] -> uint8 [size, size, 3].

  Centre crop to the short side, then PIL Lanczos to `size` x `size` (a
  no-op when the crop already has that size). Grey and RGBA inputs are
  converted to RGB first.
  """
  img = _check_image(img)
  if img.shape[-1] == 1:
    img = np.repeat(img, 3, axis=-1)
  img = center_crop_square(img[..., :3])
  if img.shape[0] == size:
    return np.ascontiguousarray(img)
  out = Image.fromarray(np.ascontiguousarray(img)).resize((size, size), Image.Resampling.LANCZOS)
  return np.asarray(out)


def eval_preprocess(images: np.ndarray | Iterable[np.ndarray], size: int) -> np.ndarray:
  """`crop_resize` over a batch: [B, H, W, C] uint8 (or a list of images of any
  sizes) -> uint8 [B, size, size, 3]."""
  return np.stack([crop_resize(img, size) for img in images])


def clean_resize(images: np.ndarray, size: Sequence[int] | int = 299) -> np.ndarray:
  """clean-fid's resize: uint8 [B, H, W, 3] -> float32 [B, size, size, 3] in [0, 1].

  Each channel is resized as a float32 PIL image ('F' mode) with the bicubic
  filter and clipped to [0, 255], so no rounding to uint8 happens after the
  resize. The result is scaled to [0, 1], the input range of
  `inception.pool_features` (whose own bilinear resize is then a no-op).
  """
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f'expected images [B, H, W, 3], got shape {images.shape}')
  if images.dtype != np.uint8:
    raise ValueError(f'expected uint8 images, got {images.dtype} (see to_uint8)')
  w, h = (size, size) if isinstance(size, int) else (size[1], size[0])
  out = np.empty((images.shape[0], h, w, 3), np.float32)
  for b, img in enumerate(images):
    for c in range(3):
      channel = Image.fromarray(img[..., c].astype(np.float32))  # float32 2-D -> mode 'F'
      out[b, ..., c] = np.asarray(channel.resize((w, h), Image.Resampling.BICUBIC))
  return np.clip(out, 0.0, 255.0) / np.float32(255.0)
