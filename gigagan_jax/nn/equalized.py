"""Equalized-learning-rate dense and conv layers (Karras et al., ProGAN/StyleGAN2).

Weights are stored as N(0, 1/lr_mul) and scaled at run time by
lr_mul / sqrt(fan_in), so Adam's per-parameter step is the same relative size
for every layer regardless of its fan-in.
"""
import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.ad_checkpoint import checkpoint_name

from gigagan_jax.nn.conv import conv2d
from gigagan_jax.nn.remat import CONV_OUT
from gigagan_jax.nn.stationary import apply_kernel
from gigagan_jax.parallel import shard_batch


def lrelu(x, alpha: float = 0.2, gain: float = math.sqrt(2)):
  """Leaky ReLU scaled so that unit-variance inputs keep unit second moment."""
  return jax.nn.leaky_relu(x, alpha) * gain


def equalized_param(module: nn.Module, name: str, shape: Sequence[int],
                    names: Sequence[str | None], lr_mul: float, dtype, zero: bool = False):
  """Declares a N(0, 1/lr_mul) weight (zeros if `zero`) with logical axis `names`."""
  normal = lambda key, s, d: jax.random.normal(key, s, d) / lr_mul
  init = nn.with_logical_partitioning(nn.initializers.zeros if zero else normal, tuple(names))
  return module.param(name, init, tuple(shape), dtype)


class EqualDense(nn.Module):
  """Dense layer with equalized learning rate.

  Input [..., Din] -> output [..., features]. `zero_init`: the kernel starts at
  zero (the output is the bias alone until the kernel has learned).
  """
  features: int
  lr_mul: float = 1.0
  bias_init: float = 0.0
  use_bias: bool = True
  zero_init: bool = False
  names: tuple = ('embed', 'mlp')
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    din = x.shape[-1]
    kernel = equalized_param(self, 'kernel', (din, self.features), self.names,
                             self.lr_mul, self.param_dtype, zero=self.zero_init)
    kernel = (kernel * (self.lr_mul / math.sqrt(din))).astype(self.dtype)
    x = x.astype(self.dtype)
    y = apply_kernel(jnp.dot, x, kernel, self.names, din)
    if self.use_bias:
      bias = self.param('bias', nn.with_logical_partitioning(
          nn.initializers.constant(self.bias_init / self.lr_mul), (self.names[-1],)),
          (self.features,), self.param_dtype)
      y = y + (bias * self.lr_mul).astype(self.dtype)
    return shard_batch(y)


class EqualConv(nn.Module):
  """Stride-1 'SAME' conv with equalized learning rate. NHWC in and out."""
  features: int
  kernel_size: int = 3
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    k, cin = self.kernel_size, x.shape[-1]
    names = (None, None, 'conv_in', 'conv_out')
    kernel = equalized_param(self, 'kernel', (k, k, cin, self.features), names, 1.0,
                             self.param_dtype)
    kernel = (kernel * (1.0 / math.sqrt(k * k * cin))).astype(self.dtype)
    x = x.astype(self.dtype)
    y = apply_kernel(conv2d, x, kernel, names, k * k * cin)
    if self.use_bias:
      bias = self.param('bias', nn.with_logical_partitioning(nn.initializers.zeros, ('conv_out',)),
                        (self.features,), self.param_dtype)
      y = y + bias.astype(self.dtype)
    return checkpoint_name(shard_batch(y), CONV_OUT)  # what remat policy 'convs' keeps
