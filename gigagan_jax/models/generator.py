"""GigaGAN text-to-image generator G(z, text) -> image pyramid.

  (t_local, t_global) = T(E_txt(c))        learned encoder over frozen features
  w = M(z, t_global)                       mapping network
  pyramid = G~(w, t_local)                 synthesis from a learned 4x4 constant

Per scale (4, 8, ..., R px) the synthesis runs `convs_per_scale` layers of
  kernel-bank modulated conv -> L2 self-attention (fed w) -> cross-attention
  to t_local
(paper Eq. 5; attention only at the configured resolutions), then a toRGB.
The RGB outputs are accumulated StyleGAN2-style (skip architecture) and every
one of the last `pyramid_levels` scales is an output of the pyramid.

Styles and text are given per scale, so style mixing (fine scales from
another w) and prompt mixing (coarse scales from prompt A, fine scales from
prompt B) are just different per-scale inputs; see `per_scale` and `mix_scales`.
"""

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from gigagan_jax.config_utils import num_scales
from gigagan_jax.nn.attention import CrossAttention, SelfAttention
from gigagan_jax.nn.equalized import EqualDense, lrelu
from gigagan_jax.nn.fir import upsample2d
from gigagan_jax.nn.modulated_conv import ModulatedConv
from gigagan_jax.nn.remat import remat
from gigagan_jax.parallel import shard_batch, to_dtype
from gigagan_jax.text.encoder import text_encoder_from


def _normalize_2nd_moment(x, eps=1e-8):
  x32 = x.astype(jnp.float32)
  return x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)


def per_scale(x, scales: int):
  """Repeats a per-sample input for every scale: [B, ...] -> [B, S, ...]."""
  return jnp.repeat(x[:, None], scales, axis=1)


def mix_scales(a, b, crossover: int):
  """Scales < crossover from `a`, the rest from `b`. a, b: [B, S, ...]."""
  s = a.shape[1]
  take_a = (jnp.arange(s) < crossover).reshape((1, s) + (1,) * (a.ndim - 2))
  return jnp.where(take_a, a, b)


def truncate(w, w_mean, psi):
  """Truncation trick: w_mean + psi * (w - w_mean). Broadcasts over leading dims."""
  return w_mean + psi * (w - w_mean)


class MappingNetwork(nn.Module):
  """M(z, t_global) -> w. z [B, Dz], t_global [B, Dt] -> [B, w_dim]."""
  w_dim: int
  num_layers: int
  lr_mul: float
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z, t_global):
    t = EqualDense(self.w_dim, names=('embed', 'mlp'), name='text_proj',
                   param_dtype=self.param_dtype)(t_global.astype(jnp.float32))
    x = jnp.concatenate([_normalize_2nd_moment(z), _normalize_2nd_moment(t)], axis=-1)
    for i in range(self.num_layers):
      x = lrelu(EqualDense(self.w_dim, lr_mul=self.lr_mul, names=('embed', 'mlp'),
                           name=f'fc{i}', param_dtype=self.param_dtype)(x))
    return x


class SynthesisLayer(nn.Module):
  """AdaConv -> SelfAttn(w) -> CrossAttn(t_local), the paper's layer (Eq. 5).

  `zero_style`: the AdaConv's style and selection weights start at zero (see
  ModulatedConv); the upsampler's layers do, the generator's do not.
  """
  features: int
  bank_size: int
  up: bool
  self_attn: bool
  cross_attn: bool
  cfg: ml_collections.FrozenConfigDict
  zero_style: bool = False

  @nn.compact
  def __call__(self, x, w, t_local, t_mask):
    dtype, pdtype = to_dtype(self.cfg.dtype), to_dtype(self.cfg.param_dtype)
    x = lrelu(ModulatedConv(self.features, 3, self.bank_size, up=self.up,
                            impl=self.cfg.conv_impl, zero_style=self.zero_style, dtype=dtype,
                            param_dtype=pdtype, name='conv')(x, w))
    if self.self_attn:
      x = SelfAttention(self.cfg.attn_heads, self.cfg.attn_residual_gain,
                        self.cfg.attn_mlp_ratio, dtype, pdtype, name='self_attn')(
                            x, w if self.cfg.attn_w_token else None)
    if self.cross_attn:
      x = CrossAttention(self.cfg.attn_heads, self.cfg.attn_residual_gain,
                         self.cfg.attn_mlp_ratio, dtype, pdtype, name='cross_attn')(
                             x, t_local.astype(dtype), t_mask)
    return x


class Generator(nn.Module):
  """Text-conditioned generator.

  Attributes:
    cfg: the config's `generator` block (frozen).
    vocab_size, max_len: of the tokenizer (T embeds tokens when there is no
      frozen backbone).
  """
  cfg: ml_collections.FrozenConfigDict
  vocab_size: int
  max_len: int

  @property
  def num_scales(self) -> int:
    return num_scales(self.cfg.resolution)

  def setup(self):
    cfg = self.cfg
    dtype, pdtype = to_dtype(cfg.dtype), to_dtype(cfg.param_dtype)
    enc = cfg.text_encoder
    self.text_encoder = text_encoder_from(enc, self.vocab_size, self.max_len, dtype, pdtype)
    self.mapping = MappingNetwork(cfg.w_dim, cfg.mapping_layers, cfg.mapping_lr_mul, pdtype)
    self.const = self.param('const', nn.with_logical_partitioning(
        nn.initializers.normal(1.0), (None, None, 'conv_out')), (4, 4, cfg.channels[0]), pdtype)
    if cfg.get('input_from_w', False):
      # Not the paper's: its input is the constant alone (see configs/base.py).
      self.input_proj = EqualDense(16 * cfg.channels[0], names=('embed', 'mlp'),
                                   param_dtype=pdtype)
    layer_cls = remat(SynthesisLayer, cfg.get('remat', 'none'))
    layers, to_rgb = [], []
    for s in range(self.num_scales):
      res = 4 * 2**s
      scale_layers = []
      for i in range(cfg.convs_per_scale[s]):
        scale_layers.append(layer_cls(
            cfg.channels[s], cfg.kernel_bank[s], up=(s > 0 and i == 0),
            self_attn=res in cfg.self_attn_resolutions,
            cross_attn=res in cfg.cross_attn_resolutions, cfg=cfg, name=f'b{res}_layer{i}'))
      layers.append(scale_layers)
      to_rgb.append(ModulatedConv(3, 1, 1, demodulate=False, dtype=dtype, param_dtype=pdtype,
                                  name=f'b{res}_to_rgb'))
    self.layers, self.to_rgb = layers, to_rgb

  def encode_text(self, text):
    """text: {'tokens' [B,L], 'eot' [B], optional 'features' [B,L,Df]} -> T's outputs.

    Returns (t_local [B, L, C], t_global [B, C], local_mask [B, L]).
    """
    return self.text_encoder(text['tokens'], text['eot'], text.get('features'))

  def map(self, z, t_global):
    """w = M(z, t_global): [B, Dz], [B, C] -> [B, w_dim]."""
    return self.mapping(z, t_global)

  def synthesize(self, ws, t_local, t_mask):
    """Image pyramid from per-scale styles and text.

    Args:
      ws: [B, S, w_dim], one style per scale (S = number of scales 4..R).
      t_local: [B, S, L, C] per-scale tokens, or [B, L, C] shared by all scales.
      t_mask: [B, S, L] or [B, L], True for tokens cross-attention may read.
    Returns:
      Tuple of pyramid_levels images, highest resolution first:
      ([B, R, R, 3], [B, R/2, R/2, 3], ...), float32, roughly in [-1, 1].
    """
    s_count = self.num_scales
    if t_local.ndim == 3:
      t_local, t_mask = per_scale(t_local, s_count), per_scale(t_mask, s_count)
    b = ws.shape[0]
    x = jnp.broadcast_to(self.const[None], (b,) + self.const.shape).astype(to_dtype(self.cfg.dtype))
    if self.cfg.get('input_from_w', False):
      x = x + self.input_proj(ws[:, 0]).reshape(x.shape).astype(x.dtype)
    rgb, outputs = None, []
    for s in range(s_count):
      w = ws[:, s]
      for layer in self.layers[s]:
        x = shard_batch(layer(x, w, t_local[:, s], t_mask[:, s]))
      y = self.to_rgb[s](x, w).astype(jnp.float32)
      rgb = y if rgb is None else upsample2d(rgb) + y
      outputs.append(rgb)
    return tuple(reversed(outputs[s_count - self.cfg.pyramid_levels:]))

  def __call__(self, z, text, psi: float = 1.0, w_mean=None):
    """G(z, text) -> pyramid. z [B, Dz]; text as in `encode_text`.

    Truncation: with psi != 1, `w_mean` [B, w_dim] (the mean w for each
    sample's caption, see `mean_w`) must be given.
    """
    t_local, t_global, t_mask = self.encode_text(text)
    w = self.map(z, t_global)
    if psi != 1.0:
      if w_mean is None:
        raise ValueError('truncation (psi != 1) needs w_mean; compute it with Generator.mean_w')
      w = truncate(w, w_mean, psi)
    return self.synthesize(per_scale(w, self.num_scales), t_local, t_mask)

  def mean_w(self, text, key, num_samples: int = 256):
    """Mean of w over `num_samples` latents, per caption: [B, w_dim].

    The truncation centre for text conditioning is the caption's own mean w
    (a global mean would mix captions).
    """
    _, t_global, _ = self.encode_text(text)
    b = t_global.shape[0]
    z = jnp.tile(jax.random.normal(key, (num_samples, self.cfg.z_dim)), (b, 1))
    ws = self.map(z, jnp.repeat(t_global, num_samples, axis=0))
    return jnp.mean(ws.reshape(b, num_samples, -1), axis=1)
