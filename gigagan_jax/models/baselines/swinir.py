"""SwinIR for classical SR (Liang et al., ICCV-W 2021), shifted-window attention.

    shallow conv -> LayerNorm -> [RSTB x len(depths)] -> LayerNorm -> conv (+ shallow skip)
    -> conv, LReLU -> [conv to 4*num_feat, pixel shuffle 2x] x log2(scale) -> conv to RGB

A residual Swin transformer block (RSTB) is `depths[i]` Swin blocks then a 3x3
conv, with a residual around the whole. A Swin block is pre-LN window
self-attention (with a learned relative-position bias per head) and a pre-LN
GELU MLP; every second block shifts the windows by half a window (cyclic
roll), and a mask stops tokens that are neighbours only because of the roll
from attending to each other. Inputs whose sides are not multiples of the
window are reflect-padded and the output is cropped back.
At the published size (embed 180, 6 RSTBs of 6 blocks, 6 heads, window 8,
MLP ratio 2, 64-feature pixel-shuffle head) the x4 model has 11,900,199
parameters, relative-position tables included.

No dropout or stochastic depth (the classical model's drop-path 0.1 is a
training regulariser that needs an RNG stream; not used here), and no RGB
mean shift (inputs in [-1, 1] are already roughly centred).
"""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from gigagan_jax.parallel import to_dtype

_part = nn.with_logical_partitioning
_torch_default = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')
# Logit of a masked (query, key) pair; exp() of it is exactly 0 in float32.
_MASKED = -1e9


def window_partition(x, ws: int):
  """[B, H, W, C] -> [B * (H/ws) * (W/ws), ws*ws, C]; windows in raster order per image."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // ws, ws, w // ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, ws * ws, c)


def window_reverse(windows, ws: int, h: int, w: int):
  """Inverse of `window_partition`: [B * nW, ws*ws, C] -> [B, H, W, C]."""
  c = windows.shape[-1]
  x = windows.reshape(-1, h // ws, w // ws, ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, h, w, c)


def relative_position_index(ws: int) -> np.ndarray:
  """int [N, N], N = ws*ws: row of the (2ws-1)^2-entry bias table for each token pair."""
  coords = np.stack(np.meshgrid(np.arange(ws), np.arange(ws), indexing='ij'), -1).reshape(-1, 2)
  rel = coords[:, None, :] - coords[None, :, :] + (ws - 1)  # each offset in [0, 2ws-2]
  return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


def shifted_window_mask(h: int, w: int, ws: int, shift: int) -> np.ndarray:
  """bool [nW, N, N]: True where query and key of a window (of the image rolled
  by -shift) may attend to each other.

  After the roll, the last window row/column holds pixels from both ends of the
  image; label the three bands [0, h-ws), [h-ws, h-shift), [h-shift, h) per
  axis and allow a pair only when both tokens carry the same label.
  """
  label = np.zeros((h, w), np.int32)
  bands = lambda n: (slice(0, n - ws), slice(n - ws, n - shift), slice(n - shift, n))
  for i, rows in enumerate(bands(h)):
    for j, cols in enumerate(bands(w)):
      label[rows, cols] = 3 * i + j
  lab = window_partition(label[None, :, :, None], ws)[..., 0]  # [nW, N]
  return lab[:, :, None] == lab[:, None, :]


class WindowAttention(nn.Module):
  """Multi-head self-attention inside each window, with relative-position bias.

  x [B*nW, N, C] (N = window_size^2), mask bool [nW, N, N] or None -> [B*nW, N, C].
  """
  dim: int
  num_heads: int
  window_size: int
  qkv_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None):
    bw, n, c = x.shape
    heads, ws = self.num_heads, self.window_size
    hd = c // heads
    dense = lambda f, names, name, bias=True: nn.Dense(
        f, use_bias=bias, dtype=self.dtype, param_dtype=self.param_dtype, name=name,
        kernel_init=_part(nn.initializers.truncated_normal(0.02), names),
        bias_init=_part(nn.initializers.zeros, names[-1:]))
    qkv = dense(3 * c, ('embed', 'heads'), 'qkv', self.qkv_bias)(x)
    q, k, v = qkv.reshape(bw, n, 3, heads, hd).transpose(2, 0, 3, 1, 4)  # each [B*nW, h, N, hd]
    logits = jnp.einsum('bhqd,bhkd->bhqk', q.astype(jnp.float32),
                        k.astype(jnp.float32)) / math.sqrt(hd)
    table = self.param('relative_position_bias_table',
                       _part(nn.initializers.truncated_normal(0.02), (None, 'heads')),
                       ((2 * ws - 1) ** 2, heads), self.param_dtype)
    bias = table[relative_position_index(ws)]  # [N, N, heads]
    logits = logits + bias.transpose(2, 0, 1).astype(jnp.float32)[None]
    if mask is not None:
      nw = mask.shape[0]
      logits = logits.reshape(bw // nw, nw, heads, n, n)
      logits = jnp.where(mask[None, :, None], logits, _MASKED).reshape(bw, heads, n, n)
    attn = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    out = jnp.einsum('bhqk,bhkd->bqhd', attn, v).reshape(bw, n, c)
    return dense(c, ('heads', 'embed'), 'proj')(out)


def _layer_norm(name, dtype, param_dtype):
  # PyTorch's epsilon, the one the published model was trained with.
  return nn.LayerNorm(epsilon=1e-5, dtype=dtype, param_dtype=param_dtype, name=name,
                      scale_init=_part(nn.initializers.ones, ('norm',)),
                      bias_init=_part(nn.initializers.zeros, ('norm',)))


class SwinBlock(nn.Module):
  """(Shifted-)window attention + MLP, both pre-LN residual. [B, H, W, C] -> same.

  H and W must be multiples of `window_size`. `shift` is 0 or window_size//2;
  it is dropped when the window already spans the image (nothing to shift).
  """
  num_heads: int
  window_size: int
  shift: int = 0
  mlp_ratio: float = 2.0
  qkv_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    ws = self.window_size
    shift = self.shift if min(h, w) > ws else 0
    y = _layer_norm('norm1', self.dtype, self.param_dtype)(x)
    mask = None
    if shift:
      y = jnp.roll(y, (-shift, -shift), axis=(1, 2))
      mask = jnp.asarray(shifted_window_mask(h, w, ws, shift))
    y = WindowAttention(c, self.num_heads, ws, self.qkv_bias, self.dtype, self.param_dtype,
                        name='attn')(window_partition(y, ws), mask)
    y = window_reverse(y, ws, h, w)
    if shift:
      y = jnp.roll(y, (shift, shift), axis=(1, 2))
    x = x + y
    hidden = int(c * self.mlp_ratio)
    dense = lambda f, names, name: nn.Dense(
        f, dtype=self.dtype, param_dtype=self.param_dtype, name=name,
        kernel_init=_part(nn.initializers.truncated_normal(0.02), names),
        bias_init=_part(nn.initializers.zeros, names[-1:]))
    y = _layer_norm('norm2', self.dtype, self.param_dtype)(x)
    y = jax.nn.gelu(dense(hidden, ('embed', 'mlp'), 'fc1')(y), approximate=False)
    return x + dense(c, ('mlp', 'embed'), 'fc2')(y)


def _conv(features, name, dtype, param_dtype):
  return nn.Conv(features, (3, 3), padding='SAME', dtype=dtype, param_dtype=param_dtype,
                 kernel_init=_part(_torch_default, (None, None, 'conv_in', 'conv_out')),
                 bias_init=_part(nn.initializers.zeros, ('conv_out',)), name=name)


class RSTB(nn.Module):
  """Residual Swin transformer block: Swin blocks (shift alternating), 3x3 conv, skip.

  [B, H, W, C] -> same; H, W multiples of `window_size`.
  """
  depth: int
  num_heads: int
  window_size: int
  mlp_ratio: float
  qkv_bias: bool
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = x
    for i in range(self.depth):
      y = SwinBlock(self.num_heads, self.window_size, (i % 2) * (self.window_size // 2),
                    self.mlp_ratio, self.qkv_bias, self.dtype, self.param_dtype,
                    name=f'block{i}')(y)
    return x + _conv(x.shape[-1], 'conv', self.dtype, self.param_dtype)(y)


def pixel_shuffle(x, r: int):
  """[B, H, W, C*r*r] -> [B, H*r, W*r, C]; channel c*r*r + i*r + j goes to
  sub-pixel (i, j) of output channel c (PyTorch's PixelShuffle order)."""
  b, h, w, crr = x.shape
  c = crr // (r * r)
  x = x.reshape(b, h, w, c, r, r).transpose(0, 1, 4, 2, 5, 3)
  return x.reshape(b, h * r, w * r, c)


class SwinIR(nn.Module):
  """Attributes:
    cfg: frozen block with `kind='swinir'`, `scale`, `embed_dim`, `depths`,
      `num_heads`, `window_size`, `mlp_ratio`, `qkv_bias`, `patch_norm`,
      `num_feat`, `negative_slope`, `dtype`, `param_dtype`
      (see `gigagan_jax.models.baselines`).
  """
  cfg: ml_collections.FrozenConfigDict

  @nn.compact
  def __call__(self, lr, text=None, z=None):
    """lr float32 [B, h, w, 3] in [-1, 1] -> [B, h*scale, w*scale, 3]; text, z ignored."""
    del text, z
    cfg = self.cfg
    dtype, pdtype = to_dtype(cfg.dtype), to_dtype(cfg.param_dtype)
    b, h, w, c = lr.shape
    ws = cfg.window_size
    pad_h, pad_w = -h % ws, -w % ws
    x = lr.astype(dtype)
    if pad_h or pad_w:
      x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode='reflect')

    feat = _conv(cfg.embed_dim, 'conv_first', dtype, pdtype)(x)
    y = _layer_norm('patch_norm', dtype, pdtype)(feat) if cfg.patch_norm else feat
    for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads)):
      y = RSTB(depth, heads, ws, cfg.mlp_ratio, cfg.qkv_bias, dtype, pdtype,
               name=f'rstb{i}')(y)
    y = _layer_norm('norm', dtype, pdtype)(y)
    y = feat + _conv(cfg.embed_dim, 'conv_after_body', dtype, pdtype)(y)

    y = jax.nn.leaky_relu(_conv(cfg.num_feat, 'conv_before_upsample', dtype, pdtype)(y),
                          cfg.negative_slope)
    for i in range(int(math.log2(cfg.scale))):
      y = pixel_shuffle(_conv(4 * cfg.num_feat, f'upsample{i}', dtype, pdtype)(y), 2)
    out = _conv(c, 'conv_last', dtype, pdtype)(y)
    return out[:, :h * cfg.scale, :w * cfg.scale].astype(jnp.float32)
