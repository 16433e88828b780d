"""Super-resolution baselines of the toolbox: bicubic, SRCNN, ESRGAN (RRDB), SwinIR.

Every baseline has the GigaGAN upsampler's call signature, so one training
loop, one evaluation and one tiled-inference path serve them all:

    module = build_baseline(baseline_config('esrgan', scale=4))
    variables = module.init(key, lr)               # lr: float32 [B, h, w, 3] in [-1, 1]
    hr = module.apply(variables, lr)               # [B, h*scale, w*scale, 3]

`text` and `z` are accepted and ignored (the baselines are neither
text-conditioned nor stochastic). Modules take their frozen config block as
`cfg`; the defaults below are the published sizes, and tests shrink them
through the same fields.

Config fields (`baseline_config(kind, scale)`):

  common   kind          'bicubic' | 'srcnn' | 'esrgan' | 'swinir'
           scale         2, 4 or 8 (HR side / LR side)
           dtype         compute dtype name ('float32', 'bfloat16', 'float16')
           param_dtype   parameter dtype name
  srcnn    kernel_sizes  (9, 5, 5): one per conv (Dong et al. 2016, the 9-5-5 model)
           channels      (64, 32): widths of the hidden convs (len = convs - 1)
  esrgan   num_feat      64: trunk width
           num_blocks    23: RRDBs in the trunk
           growth        32: dense-block growth channels
           res_scale     0.2: residual scaling of each RDB and each RRDB
           negative_slope 0.2: LeakyReLU slope
           init_scale    0.1: multiplier of the dense-block convs' He init
                         (ESRGAN's "smaller initialisation")
  swinir   embed_dim     180
           depths        (6,)*6: Swin blocks per RSTB (one entry per RSTB)
           num_heads     (6,)*6: attention heads per RSTB
           window_size   8
           mlp_ratio     2.0
           qkv_bias      True
           patch_norm    True: LayerNorm on the tokens after the shallow conv
           num_feat      64: width of the pixel-shuffle reconstruction head
           negative_slope 0.01: LeakyReLU slope before upsampling
"""
import ml_collections

from gigagan_jax.config_utils import BASELINE_KINDS as KINDS
from gigagan_jax.config_utils import BASELINE_SCALES as SCALES
from gigagan_jax.config_utils import check_baseline
from gigagan_jax.models.baselines.bicubic import Bicubic, bicubic_upsample
from gigagan_jax.models.baselines.rrdb import RRDBNet
from gigagan_jax.models.baselines.srcnn import SRCNN
from gigagan_jax.models.baselines.swinir import SwinIR

_MODULES = {'bicubic': Bicubic, 'srcnn': SRCNN, 'esrgan': RRDBNet, 'swinir': SwinIR}

__all__ = ['Bicubic', 'RRDBNet', 'SRCNN', 'SwinIR', 'KINDS', 'SCALES', 'baseline_config',
           'bicubic_upsample', 'build_baseline']


def baseline_config(kind: str, scale: int = 4) -> ml_collections.ConfigDict:
  """The published-size config block of baseline `kind` at `scale` (see module doc)."""
  if kind not in KINDS:
    raise ValueError(f'kind={kind!r}: expected one of {KINDS}')
  cfg = ml_collections.ConfigDict()
  cfg.kind = kind
  cfg.scale = scale
  cfg.dtype = 'float32'
  cfg.param_dtype = 'float32'
  if kind == 'srcnn':
    cfg.kernel_sizes = (9, 5, 5)
    cfg.channels = (64, 32)
  elif kind == 'esrgan':
    cfg.num_feat = 64
    cfg.num_blocks = 23
    cfg.growth = 32
    cfg.res_scale = 0.2
    cfg.negative_slope = 0.2
    cfg.init_scale = 0.1
  elif kind == 'swinir':
    cfg.embed_dim = 180
    cfg.depths = (6,) * 6
    cfg.num_heads = (6,) * 6
    cfg.window_size = 8
    cfg.mlp_ratio = 2.0
    cfg.qkv_bias = True
    cfg.patch_norm = True
    cfg.num_feat = 64
    cfg.negative_slope = 0.01
  check_baseline(cfg)
  return cfg


def build_baseline(cfg):
  """The Flax module of baseline `cfg.kind`, configured by the (frozen) block `cfg`."""
  check_baseline(cfg)
  if not isinstance(cfg, ml_collections.FrozenConfigDict):
    cfg = ml_collections.FrozenConfigDict(cfg)
  return _MODULES[cfg.kind](cfg=cfg)
