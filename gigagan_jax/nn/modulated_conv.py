"""Modulated conv with sample-adaptive kernel selection (paper Eq. 1-2).

Each layer owns a bank of N kernels [N, k, k, Cin, Cout]. Per sample, an
affine layer of w gives N logits; their softmax mixes the bank into one
kernel, which is then modulated by a second affine of w (per input channel)
and demodulated (per output channel) as in StyleGAN2.

Two equivalent formulations (config `generator.conv_impl`, or 'auto': the
cheaper one per layer, `choose_impl`):
- 'grouped': build each sample's kernel [B, k, k, Cin, Cout] and run a
  batched (grouped) conv. FLOPs of one conv; memory of B kernels.
- 'fused': scale the *input* by the style, convolve with the whole bank at
  once as one shared-weight conv to N*Cout channels, mix the N outputs with the
  softmax weights and apply the demodulation scale afterwards. No per-sample
  weights (plain convs shard and fuse well) at N times the conv FLOPs. The
  demodulation norm of the mixed kernel is a quadratic form in the mixing
  weights, computed from a [N, N, Cin, Cout] Gram tensor of the bank.
For a bank of one the fused form is StyleGAN2's modulate-convolve-demodulate
with one shared kernel: no extra FLOPs and no per-sample kernel.
Under FSDP the fused form may run weight-stationary, on each device's shard of
the bank (config `mesh.conv_weights`; nn/stationary.py).
"""
import functools
import math

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name
from flax import linen as nn

from gigagan_jax.nn.conv import conv2d, target_backend
from gigagan_jax.nn.equalized import EqualDense, equalized_param
from gigagan_jax.nn.fir import upsample2d
from gigagan_jax.nn.remat import CONV_OUT
from gigagan_jax.nn.stationary import kernel_mesh, on_kernel_shards
from gigagan_jax.parallel import shard_batch


BANK_AXES = ('kernel_bank', None, None, 'conv_in', 'conv_out')  # [N, k, k, Cin, Cout]


def choose_impl(x_shape, bank_shape) -> str:
  """The cheaper formulation of one layer: x [B, H, W, Cin] (after any
  upsampling), bank [N, k, k, Cin, Cout].

  Per sample, 'grouped' holds a k*k*Cin*Cout kernel and does the conv's FLOPs
  once; 'fused' holds an H*W*N*Cout output and does them N times. So on an
  accelerator: 'fused' for a bank of one (same FLOPs, no kernel) and wherever
  its output is the smaller buffer (low resolution, wide layers, where FLOPs
  are few anyway); 'grouped' where the image is large next to the kernel,
  which saves both. On CPU 'fused' throughout: XLA:CPU runs grouped convs far
  slower than dense ones (t2i_tiny's train step at batch 16 on 2 cores: 2159
  ms all-grouped, 418 ms all-fused).
  """
  _, h, w, _ = x_shape
  n, k, _, cin, _ = bank_shape
  if target_backend() == 'cpu':
    return 'fused'
  return 'fused' if n == 1 or k * k * cin > h * w * n else 'grouped'


def chosen_impls(fn, *args) -> dict:
  """{module path: 'fused' | 'grouped'} of every ModulatedConv that fn(*args)
  calls (e.g. a model's init), traced abstractly: nothing is computed."""
  chosen = {}

  def record(call, args, kwargs, context):
    m = context.module
    if isinstance(m, ModulatedConv) and context.method_name == '__call__':
      chosen['/'.join(m.scope.path)] = m.form(args[0].shape)
    return call(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(fn, *args)
  return chosen


def grouped_modulated_conv(x, bank, mix, style, demodulate: bool, eps: float = 1e-8):
  """Reference formulation with per-sample kernels.

  Args:
    x: [B, H, W, Cin]; bank: [N, k, k, Cin, Cout] (already scaled);
    mix: [B, N] kernel weights (sum to 1); style: [B, Cin].
  Returns: [B, H, W, Cout].
  """
  kernel = jnp.einsum('bn,nhwio->bhwio', mix, bank)
  kernel = kernel * style[:, None, None, :, None]
  if demodulate:
    norm = jnp.sum(jnp.square(kernel.astype(jnp.float32)), axis=(1, 2, 3), keepdims=True)
    kernel = kernel * jax.lax.rsqrt(norm + eps).astype(kernel.dtype)
  return jax.vmap(lambda xi, ki: conv2d(xi[None], ki)[0])(x, kernel)


def _bank_conv(xs, bank, mix):
  """The style-scaled input xs [B, H, W, Cin] convolved with every kernel of
  the bank [N, k, k, Cin, Cout] at once, mixed by mix [B, N]: [B, H, W, Cout]."""
  n, k, _, cin, cout = bank.shape
  wide = jnp.transpose(bank, (1, 2, 3, 0, 4)).reshape(k, k, cin, n * cout)
  y = conv2d(xs, wide).reshape(*xs.shape[:3], n, cout)
  return jnp.einsum('bhwnc,bn->bhwc', y, mix)


def _demod_norm(bank, mix, s2):
  """Squared norm [B, Cout] of each sample's mixed, modulated kernel: a
  quadratic form in the mix [B, N] over the bank's [N, N, Cin, Cout] Gram
  tensor, weighted by the squared styles s2 [B, Cin] (f32)."""
  b32 = bank.astype(jnp.float32)
  gram = jnp.einsum('nhwio,mhwio->nmio', b32, b32)
  m32 = mix.astype(jnp.float32)
  return jnp.einsum('bn,bm,bi,nmio->bo', m32, m32, s2, gram)


def fused_modulated_conv(x, bank, mix, style, demodulate: bool, eps: float = 1e-8):
  """Same result as `grouped_modulated_conv` with shared-weight convs only."""
  y = _bank_conv(x * style[:, None, None, :], bank, mix)
  if demodulate:
    norm = _demod_norm(bank, mix, jnp.square(style.astype(jnp.float32)))
    y = y * jax.lax.rsqrt(norm + eps)[:, None, None, :].astype(y.dtype)
  return y


def stationary_modulated_conv(mesh, x, bank, mix, style, demodulate: bool, eps: float = 1e-8):
  """`fused_modulated_conv` on each device's shard of the bank's input
  channels (nn/stationary.py): the partial convs and the partial demodulation
  norms are summed over 'fsdp', so the bank is never gathered."""

  def body(xs, bank, by_channel, by_sample):
    (mix,) = by_sample
    y = _bank_conv(xs, bank, mix)
    if demodulate:
      norm = jax.lax.psum(_demod_norm(bank, mix, by_channel[0]), 'fsdp')
      y = y * jax.lax.rsqrt(norm + eps)[:, None, None, :].astype(y.dtype)
    return y

  s2 = (jnp.square(style.astype(jnp.float32)),) if demodulate else ()
  return on_kernel_shards(mesh, body, x * style[:, None, None, :], bank, BANK_AXES, s2, (mix,))


class ModulatedConv(nn.Module):
  """Style-modulated conv over a kernel bank. [B,H,W,Cin], w [B,D] -> [B,H',W',Cout].

  `up=True` upsamples 2x (FIR) before the conv. N=1 is StyleGAN2's modulated conv.
  `zero_init=True` starts the kernel bank at zero (an output layer that must
  begin silent; use with demodulate=False, as demodulating zero is undefined).
  `zero_style=True` starts the style and kernel-selection weights at zero: the
  styles are then 1 and the kernel mix uniform for every w, so the layer
  starts as a plain conv and learns how much w should steer it.
  """
  features: int
  kernel_size: int = 3
  bank_size: int = 1
  up: bool = False
  demodulate: bool = True
  impl: str = 'fused'                # config_utils.CONV_IMPLS
  zero_init: bool = False
  zero_style: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.nowrap
  def form(self, x_shape) -> str:
    """'fused' or 'grouped': what this layer runs for an input [B, H, W, Cin]."""
    if self.impl != 'auto':
      return self.impl
    b, h, w, cin = x_shape
    up = 2 if self.up else 1
    return choose_impl((b, h * up, w * up, cin),
                       (self.bank_size, self.kernel_size, self.kernel_size, cin, self.features))

  @nn.compact
  def __call__(self, x, w):
    k, cin, n = self.kernel_size, x.shape[-1], self.bank_size
    bank = equalized_param(self, 'bank', (n, k, k, cin, self.features), BANK_AXES, 1.0,
                           self.param_dtype, zero=self.zero_init)
    bank = (bank * (1.0 / math.sqrt(k * k * cin))).astype(self.dtype)
    style = EqualDense(cin, bias_init=1.0, zero_init=self.zero_style, names=('embed', 'conv_in'),
                       name='style', dtype=jnp.float32, param_dtype=self.param_dtype)(w)
    if n > 1:
      logits = EqualDense(n, zero_init=self.zero_style, names=('embed', 'kernel_bank'),
                          name='select', dtype=jnp.float32, param_dtype=self.param_dtype)(w)
      mix = jax.nn.softmax(logits, axis=-1)
    else:
      mix = jnp.ones((x.shape[0], 1), jnp.float32)
    conv = {'grouped': grouped_modulated_conv, 'fused': fused_modulated_conv}[self.form(x.shape)]
    x = x.astype(self.dtype)
    if self.up:
      x = upsample2d(x)
    mesh = (kernel_mesh(x.shape, bank.shape, BANK_AXES, k * k * cin)
            if conv is fused_modulated_conv else None)
    if mesh is not None:
      conv = functools.partial(stationary_modulated_conv, mesh)
    y = conv(x, bank, mix.astype(self.dtype), style.astype(self.dtype), self.demodulate)
    bias = self.param('bias', nn.with_logical_partitioning(nn.initializers.zeros, ('conv_out',)),
                      (self.features,), self.param_dtype)
    return checkpoint_name(shard_batch(y + bias.astype(self.dtype)), CONV_OUT)
