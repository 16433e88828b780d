"""Inception-v3 exactly as used for FID, in Flax, with a converter for the FID weights.

This is the network of TensorFlow's original FID code (the 2015-12-05 graph),
as ported to PyTorch by pytorch-fid and shipped as
`pt_inception-2015-12-05-6726825d.pth`. It differs from torchvision's
Inception-v3 in four places, all reproduced here:

  * the 3x3 average pools inside Mixed_5b..5d, 6b..6e and 7b divide by the
    number of *valid* pixels (TensorFlow's 'SAME' pooling ignores padding);
  * Mixed_7c (the last block) pools its branch with a 3x3 *max* pool;
  * the classifier has 1008 classes (unused here: we stop at the pool);
  * the inputs are scaled from [0, 1] to [-1, 1], not ImageNet-standardised.
    pytorch-fid uses `2x - 1`; clean-fid (the GigaGAN authors' protocol)
    uses `(255x - 128) / 128`, which is 0.4% different: `input_norm` picks.

Like pytorch-fid's `InceptionV3([3])`, `pool_features` optionally resizes its
input to 299x299 with PyTorch's bilinear rule (align_corners=False, no
antialiasing), then returns the 2048-d global average pool of Mixed_7c.
For the GigaGAN authors' clean-fid protocol, resize with
`preprocess.clean_resize` first; the internal resize is then the identity.

Parameter names mirror the PyTorch module names (`Mixed_6b/branch7x7_2/...`),
so the converter is a mechanical renaming. Each conv keeps its frozen
BatchNorm statistics (`scale, bias, mean, var`, eps 1e-3) and folds them
into the kernel at run time.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from gigagan_jax.frozen.weights import read_tensors

FID_WEIGHTS_FILE = 'pt_inception-2015-12-05-6726825d.pth'
FID_WEIGHTS_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
                   + FID_WEIGHTS_FILE)
INCEPTION_SIZE = 299
BN_EPS = 1e-3  # TensorFlow's Inception batch-norm epsilon (torchvision BasicConv2d too)

_Pair = tuple[int, int]


class BasicConv(nn.Module):
  """Conv (no bias) -> frozen BatchNorm -> ReLU. NHWC [B, H, W, Cin] -> [B, H', W', features]."""
  features: int
  kernel_size: _Pair = (1, 1)
  stride: int = 1
  padding: _Pair = (0, 0)
  dtype: Any = jnp.float32
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (kh, kw, x.shape[-1], self.features))
    scale = self.param('scale', nn.initializers.ones, (self.features,))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    mean = self.param('mean', nn.initializers.zeros, (self.features,))
    var = self.param('var', nn.initializers.ones, (self.features,))
    # Folding BN into the kernel is exact in real arithmetic and saves a pass.
    inv = scale * jax.lax.rsqrt(var + BN_EPS)
    ph, pw = self.padding
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), (kernel * inv).astype(self.dtype), (self.stride, self.stride),
        ((ph, ph), (pw, pw)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        precision=self.precision)
    return jax.nn.relu(y + (bias - mean * inv).astype(self.dtype))


def _avg_pool_valid(x):
  """3x3 stride-1 average over the in-image neighbours only (TF 'SAME' semantics)."""
  return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x, stride: int):
  """3x3 max pool; stride 2 unpadded (reductions), stride 1 padded with -inf (Mixed_7c)."""
  pad = 'VALID' if stride == 2 else ((1, 1), (1, 1))
  return nn.max_pool(x, (3, 3), (stride, stride), padding=pad)


class InceptionA(nn.Module):
  """Mixed_5b/5c/5d: 1x1 | 5x5 | double 3x3 | avg-pool + 1x1 branches."""
  pool_features: int
  conv: Any = BasicConv

  @nn.compact
  def __call__(self, x):
    c = self.conv
    b1 = c(64, name='branch1x1')(x)
    b5 = c(48, name='branch5x5_1')(x)
    b5 = c(64, (5, 5), padding=(2, 2), name='branch5x5_2')(b5)
    b3 = c(64, name='branch3x3dbl_1')(x)
    b3 = c(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(b3)
    b3 = c(96, (3, 3), padding=(1, 1), name='branch3x3dbl_3')(b3)
    bp = c(self.pool_features, name='branch_pool')(_avg_pool_valid(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a: grid reduction 35 -> 17."""
  conv: Any = BasicConv

  @nn.compact
  def __call__(self, x):
    c = self.conv
    b3 = c(384, (3, 3), stride=2, name='branch3x3')(x)
    bd = c(64, name='branch3x3dbl_1')(x)
    bd = c(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = c(96, (3, 3), stride=2, name='branch3x3dbl_3')(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3(x, 2)], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b..6e: factorised 7x7 convolutions (1x7 and 7x1)."""
  channels_7x7: int
  conv: Any = BasicConv

  @nn.compact
  def __call__(self, x):
    c, c7 = self.conv, self.channels_7x7
    row, col = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
    b1 = c(192, name='branch1x1')(x)
    b7 = c(c7, name='branch7x7_1')(x)
    b7 = c(c7, **row, name='branch7x7_2')(b7)
    b7 = c(192, **col, name='branch7x7_3')(b7)
    bd = c(c7, name='branch7x7dbl_1')(x)
    bd = c(c7, **col, name='branch7x7dbl_2')(bd)
    bd = c(c7, **row, name='branch7x7dbl_3')(bd)
    bd = c(c7, **col, name='branch7x7dbl_4')(bd)
    bd = c(192, **row, name='branch7x7dbl_5')(bd)
    bp = c(192, name='branch_pool')(_avg_pool_valid(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a: grid reduction 17 -> 8."""
  conv: Any = BasicConv

  @nn.compact
  def __call__(self, x):
    c = self.conv
    b3 = c(192, name='branch3x3_1')(x)
    b3 = c(320, (3, 3), stride=2, name='branch3x3_2')(b3)
    b7 = c(192, name='branch7x7x3_1')(x)
    b7 = c(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
    b7 = c(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
    b7 = c(192, (3, 3), stride=2, name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3(x, 2)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b/7c: expanded filter banks; `pool` is 'avg' (7b) or 'max' (7c, FID quirk)."""
  pool: str = 'avg'
  conv: Any = BasicConv

  @nn.compact
  def __call__(self, x):
    c = self.conv
    row, col = dict(kernel_size=(1, 3), padding=(0, 1)), dict(kernel_size=(3, 1), padding=(1, 0))
    b1 = c(320, name='branch1x1')(x)
    b3 = c(384, name='branch3x3_1')(x)
    b3 = jnp.concatenate([c(384, **row, name='branch3x3_2a')(b3),
                          c(384, **col, name='branch3x3_2b')(b3)], axis=-1)
    bd = c(448, name='branch3x3dbl_1')(x)
    bd = c(384, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = jnp.concatenate([c(384, **row, name='branch3x3dbl_3a')(bd),
                          c(384, **col, name='branch3x3dbl_3b')(bd)], axis=-1)
    pooled = _max_pool_3x3(x, 1) if self.pool == 'max' else _avg_pool_valid(x)
    bp = c(192, name='branch_pool')(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] weights of PyTorch's 1-D bilinear resize (align_corners=False).

  Source coordinate (i + 0.5) * n_in / n_out - 0.5, clamped below at 0; the
  upper neighbour is clamped to the last pixel. No antialiasing when
  shrinking, exactly like `F.interpolate(mode='bilinear')`. n_in == n_out
  gives the identity.
  """
  # float32 arithmetic, as PyTorch computes the coordinates for float32 images.
  f32 = np.float32
  scale = f32(n_in) / f32(n_out)
  src = np.maximum(scale * (np.arange(n_out, dtype=f32) + f32(0.5)) - f32(0.5), f32(0))
  lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
  hi = np.minimum(lo + 1, n_in - 1)
  frac = (src - lo.astype(f32)).astype(np.float64)
  m = np.zeros((n_out, n_in))
  np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
  np.add.at(m, (np.arange(n_out), hi), frac)
  return m.astype(np.float32)


def resize_bilinear_torch(x, size: _Pair):
  """PyTorch-compatible bilinear resize of NHWC [B, H, W, C] to [B, size[0], size[1], C]."""
  h, w = x.shape[1:3]
  if (h, w) == tuple(size):
    return x
  mh, mw = _bilinear_matrix(h, size[0]), _bilinear_matrix(w, size[1])
  hp = jax.lax.Precision.HIGHEST
  x = jnp.einsum('oh,bhwc->bowc', mh, x, precision=hp)
  return jnp.einsum('pw,bowc->bopc', mw, x, precision=hp)


INPUT_NORMS = ('pytorch_fid', 'clean_fid', None)


def normalize_input(x, input_norm: str | None):
  """Maps images in [0, 1] to the network's [-1, 1] range.

  'pytorch_fid': 2x - 1. 'clean_fid': (255x - 128) / 128, clean-fid's rule
  for its [0, 255] inputs. None: x is already in [-1, 1].
  """
  if input_norm == 'pytorch_fid':
    return 2.0 * x - 1.0
  if input_norm == 'clean_fid':
    return (x * 255.0 - 128.0) / 128.0
  if input_norm is None:
    return x
  raise ValueError(f'input_norm must be one of {INPUT_NORMS}, got {input_norm!r}')


class InceptionV3FID(nn.Module):
  """FID Inception-v3 up to the final average pool.

  __call__(images float [B, H, W, 3] in [0, 1], NHWC) -> float32 [B, 2048].
  H, W >= 75 when `resize_input` is False (the network's minimum size).
  """
  resize_input: bool = True
  input_norm: str | None = 'pytorch_fid'
  dtype: Any = jnp.float32
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, images):
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'expected images [B, H, W, 3], got shape {images.shape}')
    x = images.astype(jnp.float32)
    if self.resize_input:
      x = resize_bilinear_torch(x, (INCEPTION_SIZE, INCEPTION_SIZE))
    x = normalize_input(x, self.input_norm).astype(self.dtype)
    conv = functools.partial(BasicConv, dtype=self.dtype, precision=self.precision)
    x = conv(32, (3, 3), stride=2, name='Conv2d_1a_3x3')(x)
    x = conv(32, (3, 3), name='Conv2d_2a_3x3')(x)
    x = conv(64, (3, 3), padding=(1, 1), name='Conv2d_2b_3x3')(x)
    x = _max_pool_3x3(x, 2)
    x = conv(80, name='Conv2d_3b_1x1')(x)
    x = conv(192, (3, 3), name='Conv2d_4a_3x3')(x)
    x = _max_pool_3x3(x, 2)
    x = InceptionA(32, conv, name='Mixed_5b')(x)
    x = InceptionA(64, conv, name='Mixed_5c')(x)
    x = InceptionA(64, conv, name='Mixed_5d')(x)
    x = InceptionB(conv, name='Mixed_6a')(x)
    for name, c7 in (('Mixed_6b', 128), ('Mixed_6c', 160), ('Mixed_6d', 160), ('Mixed_6e', 192)):
      x = InceptionC(c7, conv, name=name)(x)
    x = InceptionD(conv, name='Mixed_7a')(x)
    x = InceptionE('avg', conv, name='Mixed_7b')(x)
    x = InceptionE('max', conv, name='Mixed_7c')(x)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


@functools.partial(jax.jit, static_argnames=('resize', 'input_norm'))
def pool_features(params, images, resize: bool = True, input_norm: str | None = 'pytorch_fid'):
  """2048-d FID features. images: float [B, H, W, 3] in [0, 1] -> float32 [B, 2048].

  `params` comes from `load_fid_inception` or `convert_state_dict`.
  `resize=True` bilinearly resizes to 299x299 as pytorch-fid does.
  `input_norm`: see `normalize_input`; use 'clean_fid' after
  `preprocess.clean_resize` to follow the authors' protocol exactly.
  """
  return InceptionV3FID(resize_input=resize, input_norm=input_norm).apply(
      {'params': params}, images)


# ------------------------------------------------------------------ converter

# pytorch-fid's InceptionV3 wrapper stores the same modules as blocks.<i>.<j>.
_WRAPPER_NAMES = {
    'blocks.0.0': 'Conv2d_1a_3x3', 'blocks.0.1': 'Conv2d_2a_3x3', 'blocks.0.2': 'Conv2d_2b_3x3',
    'blocks.1.0': 'Conv2d_3b_1x1', 'blocks.1.1': 'Conv2d_4a_3x3',
    **{f'blocks.2.{j}': n for j, n in enumerate(
        ['Mixed_5b', 'Mixed_5c', 'Mixed_5d', 'Mixed_6a', 'Mixed_6b', 'Mixed_6c', 'Mixed_6d',
         'Mixed_6e'])},
    'blocks.3.0': 'Mixed_7a', 'blocks.3.1': 'Mixed_7b', 'blocks.3.2': 'Mixed_7c',
}
_LEAF_NAMES = {'conv.weight': 'kernel', 'bn.weight': 'scale', 'bn.bias': 'bias',
               'bn.running_mean': 'mean', 'bn.running_var': 'var'}
# Tensors the pool features never use: classifier, aux head, BN step counters.
_IGNORED = ('fc.', 'AuxLogits.', 'num_batches_tracked')


@functools.cache
def param_shapes() -> dict:
  """Nested dict of the expected parameter shapes (computed abstractly, no FLOPs)."""
  variables = jax.eval_shape(InceptionV3FID(resize_input=False).init, jax.random.key(0),
                             jax.ShapeDtypeStruct((1, INCEPTION_SIZE, INCEPTION_SIZE, 3),
                                                  jnp.float32))
  return jax.tree.map(lambda s: tuple(s.shape), variables['params'])


def convert_state_dict(state_dict: Mapping[str, Any]) -> dict:
  """PyTorch FID-Inception state dict (numpy arrays) -> Flax params (float32 numpy).

  Accepts the keys of torchvision's `Inception3` as patched by pytorch-fid
  (the layout of pt_inception-2015-12-05-6726825d.pth, e.g.
  'Mixed_5b.branch1x1.conv.weight') or of pytorch-fid's `InceptionV3`
  wrapper ('blocks.2.0.branch1x1.conv.weight'). Conv kernels go from
  [O, I, kh, kw] to [kh, kw, I, O]. Raises KeyError naming any missing or
  unexpected tensor and ValueError on a shape mismatch.
  """
  params: dict = {}
  unexpected = []
  for key, value in state_dict.items():
    if any(tag in key for tag in _IGNORED):
      continue
    name = key
    for prefix, module in _WRAPPER_NAMES.items():
      if key.startswith(prefix + '.'):
        name = module + key[len(prefix):]
        break
    parts = name.split('.')
    leaf = _LEAF_NAMES.get('.'.join(parts[-2:]))
    if leaf is None:
      unexpected.append(key)
      continue
    value = np.asarray(value, np.float32)
    if leaf == 'kernel':
      value = value.transpose(2, 3, 1, 0)
    node = params
    for p in parts[:-2]:
      node = node.setdefault(p, {})
    node[leaf] = value

  expected = param_shapes()
  flat_expected = {'/'.join(str(k.key) for k in path): shape
                   for path, shape in jax.tree_util.tree_flatten_with_path(
                       expected, is_leaf=lambda x: isinstance(x, tuple))[0]}
  flat_got = {'/'.join(str(k.key) for k in path): v.shape
              for path, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  missing = sorted(set(flat_expected) - set(flat_got))
  extra = sorted(set(flat_got) - set(flat_expected)) + unexpected
  if missing or extra:
    raise KeyError(f'not an FID Inception-v3 state dict: missing {missing[:8]}'
                   f'{" ..." if len(missing) > 8 else ""} ({len(missing)} in all), '
                   f'unexpected {extra[:8]} ({len(extra)} in all)')
  bad = [f'{k}: {flat_got[k]} != {s}' for k, s in flat_expected.items() if flat_got[k] != s]
  if bad:
    raise ValueError('FID Inception-v3 shape mismatch: ' + '; '.join(bad[:8]))
  return params


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """Tensors of the FID weight file as numpy arrays.

  `.npz` files are read with numpy; anything else is treated as a PyTorch
  pickle (e.g. pt_inception-2015-12-05-6726825d.pth), which needs torch.
  """
  return read_tensors(
      path,
      f'FID Inception weights not found: {path!r}. Download {FID_WEIGHTS_FILE} from '
      f'{FID_WEIGHTS_URL} (or convert it to .npz with '
      '`python -m gigagan_jax.evaluate.inception IN.pth OUT.npz`).',
      'Convert it once to .npz on a machine with torch: `python -m gigagan_jax.evaluate.inception '
      f'{os.path.basename(path)} fid_inception.npz`, then pass the .npz')


def load_fid_inception(path: str) -> dict:
  """Flax params of the FID Inception from the standard weight file (.pth) or its .npz."""
  return convert_state_dict(read_state_dict(path))


def _main(argv: list[str]) -> None:
  """`python -m gigagan_jax.evaluate.inception IN.pth OUT.npz`: torch-free copy of the weights."""
  if len(argv) != 2:
    raise SystemExit(f'usage: python -m gigagan_jax.evaluate.inception {FID_WEIGHTS_FILE} OUT.npz')
  state = read_state_dict(argv[0])
  convert_state_dict(state)  # fail now, not at evaluation time, on a wrong file
  np.savez(argv[1], **state)
  print(f'wrote {len(state)} tensors to {argv[1]}')


if __name__ == '__main__':
  import sys
  _main(sys.argv[1:])
