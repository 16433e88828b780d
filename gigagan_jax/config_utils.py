"""Loading and validating experiment configs.

Command-line programs take `--config=configs/NAME.py[:arg]` through
`ml_collections.config_flags`; tests and notebooks use `load_config`. Either
way `validate` runs before anything is built, so a wrong field fails with an
error that names it.
"""
import importlib.util
import math
import os
import sys

import ml_collections

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ConfigError(ValueError):
  """A config field holds a value that cannot work; the message names it."""


def load_module(path: str):
  """Imports a config file (path relative to the cwd or the repo root) as a module."""
  if not os.path.exists(path):
    candidate = os.path.join(REPO_ROOT, path)
    if not os.path.exists(candidate):
      raise FileNotFoundError(f'config file not found: {path}')
    path = candidate
  if REPO_ROOT not in sys.path:  # configs import `configs.base`
    sys.path.insert(0, REPO_ROOT)
  spec = importlib.util.spec_from_file_location('_config_' + os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def split_spec(spec: str, arg: str | None = None) -> tuple[str, str | None]:
  """'configs/x.py:arg' -> ('configs/x.py', 'arg'); an explicit arg wins."""
  if ':' in spec and arg is None:
    spec, arg = spec.split(':', 1)
  return spec, arg


def load_config(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """Imports `path` (a config file, optionally `path:arg`) and returns get_config(arg)."""
  path, arg = split_spec(path, arg)
  return load_module(path).get_config(arg)


def _require(cond: bool, field: str, message: str):
  if not cond:
    raise ConfigError(f'config.{field}: {message}')


def num_scales(resolution: int) -> int:
  """Number of synthesis scales 4, 8, ..., resolution."""
  return int(math.log2(resolution)) - 1


def _check_dtypes(block, name: str):
  for field in ('dtype', 'param_dtype'):
    _require(block[field] in ('float32', 'bfloat16', 'float16'), f'{name}.{field}',
             f"must be 'float32', 'bfloat16' or 'float16', got {block[field]!r}")


def _validate_generator(g, data) -> int:
  """The text-to-image generator block; returns its resolution."""
  r = g.resolution
  _require(r >= 8 and r & (r - 1) == 0, 'generator.resolution',
           f'must be a power of two >= 8, got {r}')
  n = num_scales(r)
  for name in ('channels', 'convs_per_scale', 'kernel_bank'):
    _require(len(g[name]) == n, f'generator.{name}',
             f'needs one entry per scale 4..{r} px ({n}), got {len(g[name])}')
  _require(all(k >= 1 for k in g.kernel_bank), 'generator.kernel_bank', 'entries must be >= 1')
  _require(1 <= g.pyramid_levels <= n, 'generator.pyramid_levels',
           f'must be in 1..{n} for resolution {r}, got {g.pyramid_levels}')
  _require(data.resolution == r, 'data.resolution',
           f'{data.resolution} differs from generator.resolution {r}')
  scales = {4 * 2**i for i in range(n)}
  for field in ('self_attn_resolutions', 'cross_attn_resolutions'):
    bad = set(g[field]) - scales
    _require(not bad, f'generator.{field}', f'{sorted(bad)} not among the scales {sorted(scales)}')
  _check_dtypes(g, 'generator')
  for ch in g.channels:
    _require(ch % g.attn_heads == 0, 'generator.attn_heads',
             f'{g.attn_heads} heads must divide every channel width, not {ch}')
  return r


# ---------------------------------------------------- config.upsampler blocks
# The checks live here, with the rest of validation, so that models import
# this module and never the other way round.

RESIDUAL_BASES = ('bicubic', 'none')
STYLE_INITS = ('zero', 'random')
BASELINE_KINDS = ('bicubic', 'srcnn', 'esrgan', 'swinir')
BASELINE_SCALES = (2, 4, 8)


def num_up_stages(cfg) -> int:
  """Up stages of an `upsampler` block: num_down + log2(scale)."""
  return cfg.num_down + int(round(math.log2(cfg.scale)))


def check_upsampler(cfg) -> None:
  """Raises ConfigError naming the `upsampler.*` field that cannot work."""
  def require(cond, field, message):
    if not cond:
      raise ConfigError(f'config.upsampler.{field}: {message}')

  require(cfg.kind == 'gigagan', 'kind', f"this module builds 'gigagan', got {cfg.kind!r}")
  require(cfg.scale in (2, 4, 8, 16), 'scale', f'must be 2, 4, 8 or 16, got {cfg.scale}')
  require(cfg.num_down >= 1, 'num_down', f'must be >= 1, got {cfg.num_down}')
  n_up = num_up_stages(cfg)
  require(len(cfg.down_channels) == cfg.num_down + 1, 'down_channels',
          f'needs num_down + 1 = {cfg.num_down + 1} entries (sides h, h/2, ...), '
          f'got {len(cfg.down_channels)}')
  require(len(cfg.down_kernel_bank) == cfg.num_down, 'down_kernel_bank',
          f'needs num_down = {cfg.num_down} entries, got {len(cfg.down_kernel_bank)}')
  for field in ('up_channels', 'up_convs', 'up_kernel_bank'):
    require(len(cfg[field]) == n_up, field,
            f'needs num_down + log2(scale) = {n_up} entries (one per up stage), '
            f'got {len(cfg[field])}')
  for field in ('down_kernel_bank', 'up_kernel_bank', 'up_convs'):
    require(all(k >= 1 for k in cfg[field]), field, 'entries must be >= 1')
  for field in ('self_attn_stages', 'cross_attn_stages'):
    bad = set(cfg[field]) - set(range(n_up))
    require(not bad, field, f'{sorted(bad)} are not up stages 0..{n_up - 1}')
  attn = set(cfg.self_attn_stages) | set(cfg.cross_attn_stages)
  for i in sorted(attn):
    require(cfg.up_channels[i] % cfg.attn_heads == 0, 'attn_heads',
            f'{cfg.attn_heads} heads must divide up_channels[{i}] = {cfg.up_channels[i]}')
  require(cfg.style_init in STYLE_INITS, 'style_init',
          f'must be one of {STYLE_INITS}, got {cfg.style_init!r}')
  require(cfg.residual_base in RESIDUAL_BASES, 'residual_base',
          f'must be one of {RESIDUAL_BASES}, got {cfg.residual_base!r}')
  require(cfg.conv_impl in ('fused', 'grouped'), 'conv_impl',
          f"must be 'fused' or 'grouped', got {cfg.conv_impl!r}")
  for field in ('dtype', 'param_dtype'):
    require(cfg[field] in ('float32', 'bfloat16', 'float16'), field,
            f"must be 'float32', 'bfloat16' or 'float16', got {cfg[field]!r}")


def check_baseline(cfg) -> None:
  """Raises ValueError naming the first inconsistent field of a baseline block."""
  if cfg.kind not in BASELINE_KINDS:
    raise ValueError(f'upsampler.kind={cfg.kind!r}: expected one of {BASELINE_KINDS}')
  if cfg.scale not in BASELINE_SCALES:
    raise ValueError(f'upsampler.scale={cfg.scale}: expected one of {BASELINE_SCALES}')
  for name in ('dtype', 'param_dtype'):
    if cfg[name] not in ('float32', 'bfloat16', 'float16'):
      raise ValueError(f'upsampler.{name}={cfg[name]!r}: expected float32, bfloat16 or float16')
  if cfg.kind == 'srcnn':
    if len(cfg.kernel_sizes) != len(cfg.channels) + 1:
      raise ValueError(f'upsampler.kernel_sizes={tuple(cfg.kernel_sizes)}: needs one entry more '
                       f'than upsampler.channels={tuple(cfg.channels)} (the last conv makes RGB)')
  elif cfg.kind == 'esrgan':
    if cfg.num_blocks < 1:
      raise ValueError(f'upsampler.num_blocks={cfg.num_blocks}: must be >= 1')
  elif cfg.kind == 'swinir':
    if len(cfg.depths) != len(cfg.num_heads):
      raise ValueError(f'upsampler.num_heads={tuple(cfg.num_heads)}: needs one entry per RSTB, '
                       f'like upsampler.depths={tuple(cfg.depths)}')
    for h in cfg.num_heads:
      if cfg.embed_dim % h:
        raise ValueError(f'upsampler.num_heads: {h} heads do not divide '
                         f'upsampler.embed_dim={cfg.embed_dim}')


def _validate_sr(config) -> int:
  """The super-resolution blocks (upsampler, data.degradation, SR losses); returns
  the HR crop side, D's resolution."""
  u, deg, loss = config.upsampler, config.data.degradation, config.loss
  try:
    (check_upsampler if u.kind == 'gigagan' else check_baseline)(u)
  except ValueError as e:  # ConfigError is a ValueError
    raise ConfigError(str(e) if str(e).startswith('config.') else f'config.{e}') from None
  _require(deg.scale == u.scale, 'data.degradation.scale',
           f'{deg.scale} differs from upsampler.scale {u.scale}')
  r = deg.hr_size
  _require(r >= 8 and r & (r - 1) == 0, 'data.degradation.hr_size',
           f'the HR crop must be a power of two >= 8 (D runs on it), got {r}')
  _require(r <= config.data.resolution, 'data.degradation.hr_size',
           f'{r} is larger than the images (data.resolution {config.data.resolution})')
  if u.kind == 'gigagan':
    side = r // u.scale
    _require(side % 2**u.num_down == 0, 'data.degradation.hr_size',
             f'the LR side {side} must be a multiple of 2**upsampler.num_down = {2**u.num_down}')
  for field in ('pixel_weight', 'lpips_weight', 'gan_weight'):
    _require(loss[field] >= 0, f'loss.{field}', f'must be >= 0, got {loss[field]}')
  _require(loss.pixel_weight + loss.lpips_weight + loss.gan_weight > 0 or u.kind == 'bicubic',
           'loss.pixel_weight', 'every SR loss weight is 0: nothing would be trained')
  # A missing loss.lpips_path is reported when the trainer loads it (sizing
  # tools need no weights).
  _require(1 <= config.discriminator.levels <= num_scales(r), 'discriminator.levels',
           f'must be in 1..{num_scales(r)} for HR crops of {r} px, '
           f'got {config.discriminator.levels}')
  return r


def _validate_discriminator(d, r: int):
  n = num_scales(r)
  _require(len(d.channels) == n, 'discriminator.channels',
           f'needs one entry per stage input 4..{r} px ({n}), got {len(d.channels)}')
  bad = set(d.self_attn_resolutions) - {4 * 2**i for i in range(n)}
  _require(not bad, 'discriminator.self_attn_resolutions',
           f'{sorted(bad)} not among the scales {sorted(4 * 2**i for i in range(n))}')
  _check_dtypes(d, 'discriminator')
  for ch in d.channels:
    _require(ch % d.attn_heads == 0, 'discriminator.attn_heads',
             f'{d.attn_heads} heads must divide every channel width, not {ch}')
  _require(d.get('exits', 'all') in ('all', 'last'), 'discriminator.exits',
           f"must be 'all' or 'last', got {d.get('exits')!r}")


def _check_schedule(points, field: str):
  """A loss-weight schedule: () or (step, multiplier) pairs, steps non-decreasing."""
  ok = isinstance(points, (tuple, list)) and all(
      isinstance(p, (tuple, list)) and len(p) == 2 and p[0] >= 0 and p[1] >= 0 for p in points)
  _require(ok, field, f'must be () or (step, multiplier) pairs, both >= 0, got {points!r}')
  steps = [p[0] for p in points]
  _require(steps == sorted(steps), field, f'steps must not decrease, got {steps}')


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks field combinations; returns the config for chaining."""
  task = config.get('task', 't2i')
  _require(task in ('t2i', 'sr'), 'task', f"must be 't2i' or 'sr', got {task!r}")
  if task == 'sr':
    r = _validate_sr(config)
  else:
    r = _validate_generator(config.generator, config.data)
  _validate_discriminator(config.discriminator, r)
  t = config.text
  _require(t.tokenizer in ('byte', 'clip', 'minilm'), 'text.tokenizer',
           f"must be 'byte', 'clip' or 'minilm', got {t.tokenizer!r}")
  _require(t.backbone in ('none', 'clip', 'minilm'), 'text.backbone',
           f"must be 'none', 'clip' or 'minilm', got {t.backbone!r}")
  # Missing weight/vocab files are reported by make_tokenizer/make_backbone,
  # so that sizing tools (summary, planner) work without them.
  _require(config.loss.gan in ('logistic', 'hinge', 'lsgan', 'wgan'), 'loss.gan',
           f"must be 'logistic', 'hinge', 'lsgan' or 'wgan', got {config.loss.gan!r}")
  decay = config.train.get('ema_decay', 0.0)
  _require(0 <= decay < 1, 'train.ema_decay',
           f'must be in [0, 1) (0: use train.ema_halflife_kimg), got {decay}')
  for field in sorted(config.loss):
    if field.endswith('_schedule'):
      _check_schedule(config.loss[field], f'loss.{field}')
  for field in ('clip_weight', 'vision_aided_weight'):
    _require(config.loss[field] == 0, f'loss.{field}',
             'the CLIP-contrastive and vision-aided losses are not in the train step yet; '
             'leave it at 0')
  return config
