"""ESRGAN's generator, RRDBNet (Wang et al., ECCV-W 2018).

    conv_first -> [RRDB x num_blocks] -> conv_body  (+ global skip from conv_first)
    -> [nearest 2x upsample, conv, LReLU] x log2(scale) -> conv_hr, LReLU -> conv_last

An RRDB is three residual dense blocks (RDB) in a row with residual scaling;
an RDB is five 3x3 convs, each reading the concatenation of the block input
and all previous conv outputs (dense connections), the last one projecting
back to `num_feat` channels. No batch norm anywhere (ESRGAN removes it).
At the published size (64 features, 23 blocks, growth 32) the x4 model has
16,697,987 parameters.
"""
import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from gigagan_jax.parallel import to_dtype

_part = nn.with_logical_partitioning
# PyTorch's default conv init (uniform, variance 1/(3 fan_in)), which the
# published RRDBNet keeps for every conv outside the dense blocks.
_torch_default = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def _conv(features, name, init, dtype, param_dtype):
  """3x3 'SAME' conv with bias; kernel [3, 3, Cin, features] named for sharding."""
  return nn.Conv(features, (3, 3), padding='SAME', dtype=dtype, param_dtype=param_dtype,
                 kernel_init=_part(init, (None, None, 'conv_in', 'conv_out')),
                 bias_init=_part(nn.initializers.zeros, ('conv_out',)), name=name)


class ResidualDenseBlock(nn.Module):
  """Five densely connected convs. [B, H, W, F] -> [B, H, W, F]."""
  num_feat: int
  growth: int
  res_scale: float
  negative_slope: float
  init_scale: float
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    # He init scaled down: the block's output is added to a long residual
    # stream, and smaller initial branches keep the 23-block trunk stable.
    init = nn.initializers.variance_scaling(2.0 * self.init_scale ** 2, 'fan_in', 'normal')
    feats = [x]
    for i in range(4):
      h = _conv(self.growth, f'conv{i + 1}', init, self.dtype, self.param_dtype)(
          jnp.concatenate(feats, axis=-1))
      feats.append(jax.nn.leaky_relu(h, self.negative_slope))
    out = _conv(self.num_feat, 'conv5', init, self.dtype, self.param_dtype)(
        jnp.concatenate(feats, axis=-1))
    return x + self.res_scale * out


class RRDB(nn.Module):
  """Residual-in-residual dense block: three RDBs, scaled residual. [B,H,W,F] -> same."""
  num_feat: int
  growth: int
  res_scale: float
  negative_slope: float
  init_scale: float
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = x
    for i in range(3):
      h = ResidualDenseBlock(self.num_feat, self.growth, self.res_scale, self.negative_slope,
                             self.init_scale, self.dtype, self.param_dtype,
                             name=f'rdb{i + 1}')(h)
    return x + self.res_scale * h


class RRDBNet(nn.Module):
  """Attributes:
    cfg: frozen block with `kind='esrgan'`, `scale`, `num_feat`, `num_blocks`,
      `growth`, `res_scale`, `negative_slope`, `init_scale`, `dtype`,
      `param_dtype` (see `gigagan_jax.models.baselines`).
  """
  cfg: ml_collections.FrozenConfigDict

  @nn.compact
  def __call__(self, lr, text=None, z=None):
    """lr float32 [B, h, w, 3] in [-1, 1] -> [B, h*scale, w*scale, 3]; text, z ignored."""
    del text, z
    cfg = self.cfg
    dtype, pdtype = to_dtype(cfg.dtype), to_dtype(cfg.param_dtype)
    conv = lambda f, name: _conv(f, name, _torch_default, dtype, pdtype)
    act = lambda h: jax.nn.leaky_relu(h, cfg.negative_slope)

    feat = conv(cfg.num_feat, 'conv_first')(lr.astype(dtype))
    h = feat
    for i in range(cfg.num_blocks):
      h = RRDB(cfg.num_feat, cfg.growth, cfg.res_scale, cfg.negative_slope, cfg.init_scale,
               dtype, pdtype, name=f'rrdb{i}')(h)
    h = feat + conv(cfg.num_feat, 'conv_body')(h)
    # Nearest-neighbour upsampling then a conv (not transposed convs): no
    # checkerboard artefacts, as in ESRGAN.
    for i in range(int(math.log2(cfg.scale))):
      h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
      h = act(conv(cfg.num_feat, f'conv_up{i + 1}')(h))
    h = act(conv(cfg.num_feat, 'conv_hr')(h))
    return conv(lr.shape[-1], 'conv_last')(h).astype(jnp.float32)
