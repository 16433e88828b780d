"""Residual blocks built from the equalized layers."""
import math

import jax.numpy as jnp
from flax import linen as nn

from gigagan_jax.nn.equalized import EqualConv, lrelu
from gigagan_jax.nn.fir import downsample2d


class ResidualDownBlock(nn.Module):
  """StyleGAN2 D block: two 3x3 convs and a 2x FIR downsample, plus a 1x1 skip.

  [B, H, W, Cin] -> [B, H/2, W/2, features]. The sum is scaled by 1/sqrt(2) to
  keep unit variance.
  """
  features: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = lambda f, k, bias, name: EqualConv(f, k, use_bias=bias, dtype=self.dtype,
                                              param_dtype=self.param_dtype, name=name)
    skip = conv(self.features, 1, False, 'skip')(downsample2d(x))
    h = lrelu(conv(x.shape[-1], 3, True, 'conv0')(x))
    h = lrelu(conv(self.features, 3, True, 'conv1')(downsample2d(h)))
    return (skip + h) * (1 / math.sqrt(2))
