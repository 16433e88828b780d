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


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks field combinations; returns the config for chaining."""
  g, d = config.generator, config.discriminator
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
  _require(config.data.resolution == r, 'data.resolution',
           f'{config.data.resolution} differs from generator.resolution {r}')
  _require(len(d.channels) == n, 'discriminator.channels',
           f'needs one entry per stage input 4..{r} px ({n}), got {len(d.channels)}')
  scales = {4 * 2**i for i in range(n)}
  for field, res in (('generator.self_attn_resolutions', g.self_attn_resolutions),
                     ('generator.cross_attn_resolutions', g.cross_attn_resolutions),
                     ('discriminator.self_attn_resolutions', d.self_attn_resolutions)):
    bad = set(res) - scales
    _require(not bad, field, f'{sorted(bad)} not among the scales {sorted(scales)}')
  for field, dtype in (('generator.dtype', g.dtype), ('discriminator.dtype', d.dtype),
                       ('generator.param_dtype', g.param_dtype),
                       ('discriminator.param_dtype', d.param_dtype)):
    _require(dtype in ('float32', 'bfloat16', 'float16'), field,
             f"must be 'float32', 'bfloat16' or 'float16', got {dtype!r}")
  for ch, heads, field in ([(c, g.attn_heads, 'generator') for c in g.channels] +
                           [(c, d.attn_heads, 'discriminator') for c in d.channels]):
    _require(ch % heads == 0, f'{field}.attn_heads',
             f'{heads} heads must divide every channel width, not {ch}')
  _require(d.get('exits', 'all') in ('all', 'last'), 'discriminator.exits',
           f"must be 'all' or 'last', got {d.get('exits')!r}")
  t = config.text
  _require(t.tokenizer in ('byte', 'clip', 'minilm'), 'text.tokenizer',
           f"must be 'byte', 'clip' or 'minilm', got {t.tokenizer!r}")
  _require(t.backbone in ('none', 'clip', 'minilm'), 'text.backbone',
           f"must be 'none', 'clip' or 'minilm', got {t.backbone!r}")
  # Missing weight/vocab files are reported by make_tokenizer/make_backbone,
  # so that sizing tools (summary, planner) work without them.
  _require(config.loss.gan in ('logistic', 'hinge', 'lsgan', 'wgan'), 'loss.gan',
           f"must be 'logistic', 'hinge', 'lsgan' or 'wgan', got {config.loss.gan!r}")
  for field in ('clip_weight', 'vision_aided_weight'):
    _require(config.loss[field] == 0, f'loss.{field}',
             'the CLIP-contrastive and vision-aided losses are not in the train step yet; '
             'leave it at 0')
  return config
