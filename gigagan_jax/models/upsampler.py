"""GigaGAN text-conditioned upsampler U(lr, text, z) -> hr (PAPER_NOTES.md 4).

An asymmetric U-Net built from the generator's pieces:

  (t_local, t_global) = T(E_txt(c))      the generator's TextEncoder
  w = M(z, t_global)                     the generator's MappingNetwork
  x_0 = fromRGB(lr)                                          [B, h, w, C]
  down block k = 0 .. num_down-1 (residual, style-modulated):
      s_k = lrelu(AdaConv(x_k))              skip at side h / 2**k
      x_{k+1} = (lrelu(AdaConv(down2(s_k))) + 1x1(down2(x_k))) / sqrt(2)
  up stage i = 0 .. num_down + log2(scale) - 1 (residual):
      y = SynthesisLayer(up=True) -> SynthesisLayer ...  (AdaConv, self-attn(w),
          cross-attn(t_local) where configured: the generator's layer, Eq. 5)
      x = (y + up2(1x1(x))) / sqrt(2)
      x = (x + 1x1(s_k)) / sqrt(2)   when a skip of equal side exists
      rgb = up2(rgb) + toRGB(x)      at the output-side stages (side >= h)
  hr = base(lr) + rgb                base = bicubic upsampling of lr, or 0

Up stage i outputs at side h * 2**(i - num_down + 1): with num_down = 3 and
scale 8 the six stages run at h/4, h/2, h, 2h, 4h, 8h (for 64 -> 512: 16, 32,
64, 128, 256, 512 px). The paper's 3 down and 6 up blocks follow from that.

Our choices, where the paper (as far as it could be read) is silent:
- Skips are the first conv's output at each down level (before the
  downsample), added at the end of the up stage of the same side; a 1x1 conv
  matches widths. Down blocks carry no attention.
- Attention placement is given per up stage (not per pixel size) because the
  model is fully convolutional: the same weights upsample 64 px and 128 px
  inputs and tiles of any size (multiples of 2**num_down). Self-attention
  is global over the tile, so its cost grows with the tile's area squared.
- The learned output is a residual on top of the bicubic-upsampled input
  (`residual_base`), and the toRGB kernels then start at zero: an untrained
  model is exactly the bicubic baseline and training only has to add detail.
  The toRGB kernels get a gradient at the first step and everything behind
  them from the second. (A learned output gain, our first design, failed:
  against a random readout the best gain is 0, and once there it gated every
  other gradient; on natural images the model stayed at bicubic.)
- The style and kernel-selection weights of every modulated conv start at
  zero (`style_init='zero'`): the untrained network is a plain conv U-Net
  whatever z and the caption, and it learns how much w should steer each
  layer. With random init (as the generator's), the per-sample random styles
  from z hid the signal: a natural-image 4x run needed about twice the steps
  to reach the same PSNR.
- Up stages are residual (a 1x1 conv + FIR upsample shortcut), as the paper's
  "upsampling residual blocks"; the generator's synthesis path is not.
- One w for every layer (no per-layer styles); an empty caption is the
  unconditional case, as in the paper (cross-attention then reads only the
  start token, and t_global is the empty caption's embedding).
"""
import math

import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from gigagan_jax.config_utils import check_upsampler, num_up_stages
from gigagan_jax.models.baselines.bicubic import bicubic_upsample
from gigagan_jax.models.generator import MappingNetwork, SynthesisLayer
from gigagan_jax.nn.equalized import EqualConv, lrelu
from gigagan_jax.nn.fir import downsample2d, upsample2d
from gigagan_jax.nn.modulated_conv import ModulatedConv
from gigagan_jax.parallel import to_dtype
from gigagan_jax.text.encoder import text_encoder_from

_INV_SQRT2 = 1 / math.sqrt(2)  # sum of two unit-variance branches keeps unit variance


def stage_factor(cfg, stage: int) -> float:
  """Side of up stage `stage`'s output relative to the low-res input side."""
  return 2.0 ** (stage - cfg.num_down + 1)


class DownBlock(nn.Module):
  """Residual, style-modulated 2x down block.

  x [B, H, W, Cin], w [B, Dw] -> (x' [B, H/2, W/2, features], skip [B, H, W, Cin]).
  """
  features: int
  bank_size: int
  cfg: ml_collections.FrozenConfigDict

  @nn.compact
  def __call__(self, x, w):
    dtype, pdtype = to_dtype(self.cfg.dtype), to_dtype(self.cfg.param_dtype)
    conv = lambda f, name: ModulatedConv(f, 3, self.bank_size, impl=self.cfg.conv_impl,
                                         zero_style=self.cfg.style_init == 'zero',
                                         dtype=dtype, param_dtype=pdtype, name=name)
    skip = lrelu(conv(x.shape[-1], 'conv0')(x, w))
    h = lrelu(conv(self.features, 'conv1')(downsample2d(skip), w))
    shortcut = EqualConv(self.features, 1, use_bias=False, dtype=dtype, param_dtype=pdtype,
                         name='shortcut')(downsample2d(x))
    return (h + shortcut) * _INV_SQRT2, skip


class UpStage(nn.Module):
  """Residual 2x up stage of SynthesisLayers (the first one upsamples).

  x [B, H, W, Cin], w [B, Dw], t_local [B, L, Ct], t_mask [B, L]
  -> [B, 2H, 2W, features].
  """
  features: int
  num_layers: int
  bank_size: int
  self_attn: bool
  cross_attn: bool
  cfg: ml_collections.FrozenConfigDict

  @nn.compact
  def __call__(self, x, w, t_local, t_mask):
    dtype, pdtype = to_dtype(self.cfg.dtype), to_dtype(self.cfg.param_dtype)
    # 1x1 before upsampling: the two commute (both linear), and this order
    # resamples the narrower of the two widths when the stage narrows.
    shortcut = upsample2d(EqualConv(self.features, 1, use_bias=False, dtype=dtype,
                                    param_dtype=pdtype, name='shortcut')(x))
    for i in range(self.num_layers):
      x = SynthesisLayer(self.features, self.bank_size, up=(i == 0), self_attn=self.self_attn,
                         cross_attn=self.cross_attn, cfg=self.cfg,
                         zero_style=self.cfg.style_init == 'zero', name=f'layer{i}')(
                             x, w, t_local, t_mask)
    return (x + shortcut) * _INV_SQRT2


class Upsampler(nn.Module):
  """Text-conditioned GigaGAN upsampler (asymmetric U-Net), fully convolutional.

  Attributes:
    cfg: the config's `upsampler` block (frozen; fields in configs/up_base.py).
    vocab_size, max_len: of the tokenizer (T embeds tokens when there is no
      frozen backbone), as for the Generator.
  """
  cfg: ml_collections.FrozenConfigDict
  vocab_size: int
  max_len: int

  @property
  def num_up(self) -> int:
    return num_up_stages(self.cfg)

  def setup(self):
    cfg = self.cfg
    check_upsampler(cfg)
    dtype, pdtype = to_dtype(cfg.dtype), to_dtype(cfg.param_dtype)
    enc = cfg.text_encoder
    self.text_encoder = text_encoder_from(enc, self.vocab_size, self.max_len, dtype, pdtype)
    self.mapping = MappingNetwork(cfg.w_dim, cfg.mapping_layers, cfg.mapping_lr_mul, pdtype)
    self.from_rgb = EqualConv(cfg.down_channels[0], 1, dtype=dtype, param_dtype=pdtype,
                              name='from_rgb')
    self.down = [DownBlock(cfg.down_channels[k + 1], cfg.down_kernel_bank[k], cfg,
                           name=f'down{k}') for k in range(cfg.num_down)]
    up, skip_proj, to_rgb = [], {}, {}
    for i in range(self.num_up):
      up.append(UpStage(cfg.up_channels[i], cfg.up_convs[i], cfg.up_kernel_bank[i],
                        self_attn=i in cfg.self_attn_stages,
                        cross_attn=i in cfg.cross_attn_stages, cfg=cfg, name=f'up{i}'))
      k = self._skip_level(i)
      if k is not None and cfg.down_channels[k] != cfg.up_channels[i]:
        skip_proj[str(i)] = EqualConv(cfg.up_channels[i], 1, use_bias=False, dtype=dtype,
                                      param_dtype=pdtype, name=f'skip{i}')
      if stage_factor(cfg, i) >= 1:
        to_rgb[str(i)] = ModulatedConv(3, 1, 1, demodulate=False, dtype=dtype,
                                       param_dtype=pdtype,
                                       zero_init=cfg.residual_base == 'bicubic',
                                       zero_style=cfg.style_init == 'zero',
                                       name=f'up{i}_to_rgb')
    self.up, self.skip_proj, self.to_rgb = up, skip_proj, to_rgb

  def _skip_level(self, stage: int):
    """Down level whose skip has up stage `stage`'s side, or None (output side > h)."""
    k = self.cfg.num_down - 1 - stage
    return k if k >= 0 else None

  def encode_text(self, text):
    """text: {'tokens' [B,L], 'eot' [B], optional 'features' [B,L,Df]} -> T's outputs.

    Returns (t_local [B, L, C], t_global [B, C], local_mask [B, L]).
    """
    return self.text_encoder(text['tokens'], text['eot'], text.get('features'))

  def map(self, z, t_global):
    """w = M(z, t_global): [B, Dz], [B, C] -> [B, w_dim]."""
    return self.mapping(z, t_global)

  def synthesize(self, lr, w, t_local, t_mask):
    """Upsamples with a given style and text (tiles of one image share w).

    Args:
      lr: float [B, h, w, 3] in [-1, 1]; h, w multiples of 2**num_down.
      w: [B, w_dim]; t_local: [B, L, C]; t_mask: bool [B, L].
    Returns:
      float32 [B, h*scale, w*scale, 3], roughly in [-1, 1] (not clipped).
    """
    cfg = self.cfg
    dtype = to_dtype(cfg.dtype)
    _, h, wd, c = lr.shape
    m = 2**cfg.num_down
    if c != 3 or h % m or wd % m:
      raise ValueError(f'upsampler input must be [B, h, w, 3] with h, w multiples of '
                       f'2**num_down = {m}; got {lr.shape}')
    t_local = t_local.astype(dtype)
    x = self.from_rgb(lr.astype(dtype))
    skips = []
    for block in self.down:
      x, skip = block(x, w)
      skips.append(skip)
    rgb = None
    for i, stage in enumerate(self.up):
      x = stage(x, w, t_local, t_mask)
      k = self._skip_level(i)
      if k is not None:
        s = skips[k]
        if str(i) in self.skip_proj:
          s = self.skip_proj[str(i)](s)
        x = (x + s) * _INV_SQRT2
      if str(i) in self.to_rgb:
        y = self.to_rgb[str(i)](x, w).astype(jnp.float32)
        rgb = y if rgb is None else upsample2d(rgb) + y
    if cfg.residual_base == 'bicubic':
      rgb = rgb + bicubic_upsample(lr.astype(jnp.float32), cfg.scale)
    return rgb

  def __call__(self, lr, text, z):
    """U(lr, text, z): lr [B, h, w, 3] in [-1, 1], text as in `encode_text`, z [B, z_dim].

    Returns float32 [B, h*scale, w*scale, 3].
    """
    t_local, t_global, t_mask = self.encode_text(text)
    return self.synthesize(lr, self.map(z, t_global), t_local, t_mask)
