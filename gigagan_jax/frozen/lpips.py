"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features"), VGG variant.

The distance between two images is computed from five VGG16 feature maps
(relu1_2, relu2_2, relu3_3, relu4_3, relu5_3) of both images:

  1. inputs in [-1, 1] go through the reference's fixed scaling layer,
     (x - shift) / scale, which maps them to ImageNet-standardised values;
  2. each tap is unit-normalised along channels at every pixel;
  3. the squared difference of the normalised maps is weighted per channel by
     a learned non-negative 1x1 "linear head" (no bias) and summed over
     channels;
  4. the result is averaged over the pixels, and the five taps are summed.

Weights: the VGG16 trunk is torchvision's ImageNet VGG16 (`vgg16-397923af.pth`,
any state dict with `features.<i>.weight` keys) and the heads are the v0.1
weights shipped inside the `lpips` PyPI package (`lpips/weights/v0.1/vgg.pth`,
keys `lin<k>.model.1.weight`). `load_lpips_params` converts both; it needs
torch only for .pth files. Convert once with
`python -m gigagan_jax.frozen.lpips vgg.pth vgg16-397923af.pth lpips_vgg.npz`
and load the result with `load_params_npz`, so training and evaluation never
import torch.

Parameter tree: {'vgg': {'conv1_1': {'kernel' [3, 3, Cin, Cout], 'bias'}, ...,
'conv5_3': ...}, 'lin0': {'kernel': [64]}, ..., 'lin4': {'kernel': [512]}}.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util

from gigagan_jax.frozen.weights import read_tensors

LIN_WEIGHTS_FILE = 'lpips/weights/v0.1/vgg.pth'  # inside the installed `lpips` package
VGG_WEIGHTS_URL = 'https://download.pytorch.org/models/vgg16-397923af.pth'

# The reference's scaling layer, per RGB channel: ImageNet mean and std
# re-expressed for inputs in [-1, 1] (mean ~ 2 * 0.485 - 1, std ~ 2 * 0.229).
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# Added to the channel norm before dividing, as in the reference.
NORM_EPS = 1e-10

# VGG16 `features`: widths of the 3x3 convs in each block; a 2x2 max pool
# separates the blocks and each block's last ReLU is an LPIPS tap.
VGG_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
TAP_CHANNELS = tuple(block[-1] for block in VGG_BLOCKS)


def _conv_names() -> dict[int, str]:
  """torchvision `features` index -> our conv name: {0: 'conv1_1', 2: 'conv1_2', 5: ...}."""
  names, index = {}, 0
  for b, block in enumerate(VGG_BLOCKS):
    for i in range(len(block)):
      names[index] = f'conv{b + 1}_{i + 1}'
      index += 2  # conv, ReLU
    index += 1  # max pool
  return names


class VGG16Taps(nn.Module):
  """VGG16 conv trunk. [B, H, W, 3] (standardised) -> the five tap maps.

  Tap k has shape [B, H / 2^k, W / 2^k, TAP_CHANNELS[k]] (pooling floors odd
  sizes, as PyTorch's does); the final max pool of `features` is never needed.
  """
  dtype: Any = jnp.float32
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    taps = []
    for b, block in enumerate(VGG_BLOCKS):
      if b:
        x = nn.max_pool(x, (2, 2), (2, 2))
      for i, width in enumerate(block):
        x = nn.Conv(width, (3, 3), padding=1, dtype=self.dtype, precision=self.precision,
                    name=f'conv{b + 1}_{i + 1}')(x)
        x = nn.relu(x)
      taps.append(x)
    return taps


class LinearHead(nn.Module):
  """Per-channel non-negative weights (a 1x1 conv to one channel, no bias).

  [B, H, W, C] -> [B, H, W]. Initialised to 1/C (an unweighted mean over
  channels); the trained weights come from the converter.
  """
  @nn.compact
  def __call__(self, d):
    c = d.shape[-1]
    w = self.param('kernel', nn.initializers.constant(1.0 / c), (c,))
    # Multiply-and-sum rather than a matmul: exact float32 on every backend.
    return jnp.sum(d * w, axis=-1)


def _unit_normalize(f):
  """f / (||f||_channels + eps) for [B, H, W, C], with a finite gradient where f == 0.

  ReLU maps can be zero at every channel of a pixel; sqrt'(0) = inf would then
  turn the (zero) gradient into NaN, so the norm takes a zero-gradient branch.
  """
  sq = jnp.sum(jnp.square(f), axis=-1, keepdims=True)
  positive = sq > 0
  norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
  return f / (norm + NORM_EPS)


class LPIPS(nn.Module):
  """LPIPS-VGG distance. __call__(x, y: float [B, H, W, 3] in [-1, 1]) -> float32 [B].

  H, W >= 16 so that every tap has at least one pixel. `dtype` is the VGG
  trunk's compute dtype; the normalisation and heads run in float32.
  """
  dtype: Any = jnp.float32
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x, y):
    if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f'expected two image batches [B, H, W, 3] of the same shape, got '
                       f'{x.shape} and {y.shape}')
    if min(x.shape[1:3]) < 16:
      raise ValueError(f'LPIPS-VGG needs images of at least 16x16, got {x.shape[1:3]}')
    n = x.shape[0]
    # One trunk pass over both batches: half the number of kernel launches.
    both = jnp.concatenate([x, y]).astype(jnp.float32)
    both = (both - jnp.asarray(SHIFT)) / jnp.asarray(SCALE)
    taps = VGG16Taps(self.dtype, self.precision, name='vgg')(both.astype(self.dtype))
    total = jnp.zeros((n,), jnp.float32)
    for k, f in enumerate(taps):
      f = _unit_normalize(f.astype(jnp.float32))
      d = jnp.square(f[:n] - f[n:])
      total = total + jnp.mean(LinearHead(name=f'lin{k}')(d), axis=(1, 2))
    return total


@jax.jit
def lpips_distance(params, x, y):
  """LPIPS-VGG per pair. x, y: float [B, H, W, 3] in [-1, 1] -> float32 [B]."""
  return LPIPS().apply({'params': params}, x, y)


def lpips_loss(params, x, y, *, dtype: Any = jnp.float32,
               precision: Any = jax.lax.Precision.HIGHEST):
  """Mean LPIPS-VGG over the batch, a scalar differentiable in x (and y).

  x, y: float [B, H, W, 3] in [-1, 1] -> float32 []. Not jitted, so that it
  traces into the caller's train step; `dtype`/`precision` set the trunk's
  compute (e.g. bfloat16 and DEFAULT on accelerators to save time).
  `params` are frozen: take gradients with respect to the images only.
  """
  return jnp.mean(LPIPS(dtype=dtype, precision=precision).apply({'params': params}, x, y))


# ------------------------------------------------------------------ converter

@functools.cache
def param_shapes() -> dict:
  """Nested dict of the expected parameter shapes (computed abstractly, no FLOPs)."""
  img = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(LPIPS().init, jax.random.key(0), img, img)
  return jax.tree.map(lambda s: tuple(s.shape), variables['params'])


def _check_tree(params: Mapping[str, Any], what: str) -> None:
  """Raises KeyError on missing/unexpected leaves and ValueError on shape mismatches."""
  expected = traverse_util.flatten_dict(param_shapes(), sep='/')  # shape tuples are leaves
  got = traverse_util.flatten_dict(dict(params), sep='/')
  missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
  if missing or extra:
    raise KeyError(f'not {what}: missing {missing[:8]} ({len(missing)} in all), '
                   f'unexpected {extra[:8]} ({len(extra)} in all)')
  bad = [f'{k}: {tuple(np.shape(got[k]))} != {s}' for k, s in expected.items()
         if tuple(np.shape(got[k])) != s]
  if bad:
    raise ValueError(f'{what}: shape mismatch: ' + '; '.join(bad[:8]))


# lpips.LPIPS keeps torchvision's `features` indices inside its slices, so both
# 'features.5.weight' and 'net.slice2.5.weight' name conv2_1.
_VGG_KEY = re.compile(r'^(?:features|net\.slice\d)\.(\d+)\.(weight|bias)$')
# 'model.1' with the (inert at evaluation) dropout in front, 'model.0' without.
_LIN_KEY = re.compile(r'^lin(\d)\.model\.\d\.weight$')
# Tensors LPIPS never uses: VGG's classifier, the scaling layer's fixed buffers.
_IGNORED = re.compile(r'^(classifier\.|scaling_layer\.)')


def convert_state_dict(state_dict: Mapping[str, Any]) -> dict:
  """PyTorch tensors (numpy arrays) -> LPIPS Flax params (float32 numpy).

  `state_dict` holds the VGG16 trunk (torchvision keys 'features.<i>.weight'
  / '.bias', or lpips.LPIPS's 'net.slice<s>.<i>.weight') and the five heads
  ('lin<k>.model.1.weight', [1, C, 1, 1]) -- e.g. the union of the two
  weight files, or a whole `lpips.LPIPS(net='vgg').state_dict()`. Kernels go
  from [O, I, kh, kw] to [kh, kw, I, O]. Raises KeyError naming missing or
  unexpected tensors, ValueError on shape mismatches or negative head weights.
  """
  names = _conv_names()
  params: dict = {'vgg': {}}
  unexpected = []
  for key, value in state_dict.items():
    value = np.asarray(value, np.float32)
    if m := _VGG_KEY.match(key):
      index, kind = int(m.group(1)), m.group(2)
      if index not in names:
        unexpected.append(key)
        continue
      leaf = value.transpose(2, 3, 1, 0) if kind == 'weight' else value
      params['vgg'].setdefault(names[index], {})['kernel' if kind == 'weight' else 'bias'] = leaf
    elif m := _LIN_KEY.match(key):
      # [1, C, 1, 1] -> [C]; a wrong shape still fails the shape check below.
      params[f'lin{m.group(1)}'] = {'kernel': value.reshape(-1)}
    elif not _IGNORED.match(key):
      unexpected.append(key)
  if unexpected:
    raise KeyError(f'not an LPIPS-VGG / VGG16 state dict: unexpected {unexpected[:8]} '
                   f'({len(unexpected)} in all)')
  _check_tree(params, 'an LPIPS-VGG state dict (VGG16 trunk + lin0..lin4 heads)')
  negative = [f'lin{k}' for k in range(len(TAP_CHANNELS))
              if np.any(params[f'lin{k}']['kernel'] < 0)]
  if negative:
    # The heads are trained clamped at zero; a negative weight means a wrong file.
    raise ValueError(f'LPIPS linear heads must be non-negative; {negative} are not')
  return params


def _read(path: str, what: str, hint: str) -> dict[str, np.ndarray]:
  """Tensors of a .pth (needs torch) or .npz file, with an error that says which file."""
  return read_tensors(
      path, f'{what} not found: {path!r}. {hint}',
      'Convert the LPIPS weights once on a machine with torch: `python -m '
      'gigagan_jax.frozen.lpips LIN.pth VGG16.pth lpips_vgg.npz`, then use `load_params_npz`')


def load_lpips_params(lin_path: str, vgg_path: str) -> dict:
  """LPIPS-VGG Flax params from the two reference weight files.

  lin_path: the heads, `lpips/weights/v0.1/vgg.pth` of the `lpips` package.
  vgg_path: a torchvision VGG16 state dict (`vgg16-397923af.pth`). Either may
  instead be an .npz of the same tensors (same keys), read without torch.
  """
  lin = _read(lin_path, 'LPIPS linear-head weights',
              f'They ship with the `lpips` PyPI package as {LIN_WEIGHTS_FILE}.')
  vgg = _read(vgg_path, 'VGG16 weights', f'torchvision downloads them from {VGG_WEIGHTS_URL}.')
  clash = set(lin) & set(vgg)
  if clash:
    raise KeyError(f'{lin_path} and {vgg_path} both hold {sorted(clash)[:4]}')
  return convert_state_dict({**vgg, **lin})


def save_params_npz(params: Mapping[str, Any], path: str) -> None:
  """Writes a param tree to .npz, one array per leaf named by its '/'-joined path."""
  flat = traverse_util.flatten_dict(dict(params), sep='/')
  np.savez(path, **{k: np.asarray(v) for k, v in flat.items()})


def load_params_npz(path: str) -> dict:
  """LPIPS-VGG params written by `save_params_npz` (no torch), validated against the model."""
  with np.load(path) as f:
    params = traverse_util.unflatten_dict({k: f[k] for k in f.files}, sep='/')
  _check_tree(params, f'an LPIPS-VGG param file ({path})')
  return params


def _main(argv: list[str]) -> None:
  """`python -m gigagan_jax.frozen.lpips LIN.pth VGG16.pth OUT.npz`: torch-free params."""
  if len(argv) != 3:
    raise SystemExit('usage: python -m gigagan_jax.frozen.lpips '
                     'lpips/weights/v0.1/vgg.pth vgg16-397923af.pth OUT.npz')
  params = load_lpips_params(argv[0], argv[1])
  save_params_npz(params, argv[2])
  print(f'wrote LPIPS-VGG params to {argv[2]}')


if __name__ == '__main__':
  import sys
  _main(sys.argv[1:])
