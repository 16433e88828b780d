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


CONV_IMPLS = ('auto', 'fused', 'grouped')   # nn/modulated_conv.py
CONV_WEIGHTS = ('auto', 'gathered', 'stationary')  # nn/stationary.py
REMAT_POLICIES = ('none', 'full', 'convs')  # nn/remat.py


def _check_compute(block, name: str):
  """How a model block computes: dtypes, modulated-conv form, rematerialisation."""
  for field in ('dtype', 'param_dtype'):
    _require(block[field] in ('float32', 'bfloat16', 'float16'), f'{name}.{field}',
             f"must be 'float32', 'bfloat16' or 'float16', got {block[field]!r}")
  if 'conv_impl' in block:
    _require(block.conv_impl in CONV_IMPLS, f'{name}.conv_impl',
             f'must be one of {CONV_IMPLS}, got {block.conv_impl!r}')
  _require(block.get('remat', 'none') in REMAT_POLICIES, f'{name}.remat',
           f'must be one of {REMAT_POLICIES}, got {block.get("remat")!r}')


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
  _check_compute(g, 'generator')
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
  require(cfg.conv_impl in CONV_IMPLS, 'conv_impl',
          f'must be one of {CONV_IMPLS}, got {cfg.conv_impl!r}')
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
  _require(loss.get('vision_aided_weight', 0.0) == 0, 'loss.vision_aided_weight',
           'the SR step has no vision-aided D (the paper uses it for text-to-image only); '
           'leave it at 0 (loss.clip_weight, the CLIP loss, is available)')
  _require(not config.train.get('shared_fakes', False), 'train.shared_fakes',
           'the SR step draws its own latents for each update; shared fakes are a '
           'text-to-image step option')
  # A missing loss.lpips_path is reported when the trainer loads it (sizing
  # tools need no weights).
  _require(1 <= config.discriminator.levels <= num_scales(r), 'discriminator.levels',
           f'must be in 1..{num_scales(r)} for HR crops of {r} px, '
           f'got {config.discriminator.levels}')
  return r


def sentence_whitening_blocks(config) -> list[str]:
  """The model blocks ('generator', 'upsampler', 'discriminator') of `config`'s
  task whose text encoder has sentence_whitening on."""
  blocks = ('upsampler' if config.task == 'sr' else 'generator', 'discriminator')
  return [b for b in blocks if b in config and 'text_encoder' in config[b]
          and config[b].text_encoder.get('sentence_whitening', False)]


def _validate_discriminator(d, r: int):
  n = num_scales(r)
  kind = d.get('kind', 'msio')
  _require(kind in ('msio', 'projection'), 'discriminator.kind',
           f"must be 'msio' or 'projection', got {kind!r}")
  if kind == 'projection':
    _require(len(d.projection_channels) == n - 1, 'discriminator.projection_channels',
             f'needs one width per stride-2 conv from {r} px down to 4 px ({n - 1}), '
             f'got {len(d.projection_channels)}')
  _require(len(d.channels) == n, 'discriminator.channels',
           f'needs one entry per stage input 4..{r} px ({n}), got {len(d.channels)}')
  bad = set(d.self_attn_resolutions) - {4 * 2**i for i in range(n)}
  _require(not bad, 'discriminator.self_attn_resolutions',
           f'{sorted(bad)} not among the scales {sorted(4 * 2**i for i in range(n))}')
  _check_compute(d, 'discriminator')
  for ch in d.channels:
    _require(ch % d.attn_heads == 0, 'discriminator.attn_heads',
             f'{d.attn_heads} heads must divide every channel width, not {ch}')
  _require(d.get('exits', 'all') in ('all', 'last'), 'discriminator.exits',
           f"must be 'all' or 'last', got {d.get('exits')!r}")
  _require(d.get('text_exits', 'all') in ('all', 'global'), 'discriminator.text_exits',
           f"must be 'all' or 'global', got {d.get('text_exits')!r}")


def _validate_contrastive(config):
  """loss.contrastive_weight: InfoNCE in the projection D's embedding (train/step.py)."""
  w = float(config.loss.get('contrastive_weight', 0.0))
  _require(w >= 0, 'loss.contrastive_weight', f'must be >= 0, got {w}')
  if config.data.get('hard_negatives', False):
    _require(config.data.builder == 'captioned_shapes', 'data.hard_negatives',
             'edits attribute words of captioned_shapes captions; builder '
             f'{config.data.builder!r} has no such grammar')
    _require(w > 0, 'data.hard_negatives', 'adds negatives to the contrastive loss, which '
             'is off (loss.contrastive_weight=0)')
    # Imported here: captioned_shapes loads TFDS, which other configs never need.
    from gigagan_jax.data.captioned_shapes import COUNTERFACTUAL_ATTRIBUTES
    names = tuple(config.data.get('hard_negative_attributes', COUNTERFACTUAL_ATTRIBUTES))
    _require(names and set(names) <= set(COUNTERFACTUAL_ATTRIBUTES),
             'data.hard_negative_attributes',
             f'must be a non-empty subset of {COUNTERFACTUAL_ATTRIBUTES}, got {names}')
  if w == 0:
    return
  _require(config.get('task', 't2i') == 't2i', 'loss.contrastive_weight',
           f'is for text-to-image training; the SR step has no such term, got {w}')
  _require(config.discriminator.get('kind', 'msio') == 'projection', 'loss.contrastive_weight',
           "compares images and captions in the projection D's embedding, so it needs "
           f"discriminator.kind='projection', got {config.discriminator.get('kind', 'msio')!r}")
  batch = int(config.data.batch_size)
  _require(batch >= 2, 'data.batch_size',
           f'the contrastive loss (loss.contrastive_weight={w}) scores each image against the '
           f'other captions of the batch, so it needs at least 2; got {batch}')
  tau = float(config.loss.get('contrastive_temperature', 0.1))
  _require(tau > 0, 'loss.contrastive_temperature', f'must be > 0, got {tau}')


def _validate_d_translate(config):
  """loss.d_translate: D's random translation (train/augment.py)."""
  f = float(config.loss.get('d_translate', 0.0))
  _require(0 <= f < 0.5, 'loss.d_translate',
           f'is the largest shift as a fraction of the image side, in [0, 0.5), got {f}')
  _require(f == 0 or config.get('task', 't2i') == 't2i', 'loss.d_translate',
           f'is for text-to-image training; the SR step does not augment, got {f}')


def _check_schedule(points, field: str):
  """A loss-weight or learning-rate schedule: () or (step, multiplier) pairs,
  steps non-decreasing."""
  ok = isinstance(points, (tuple, list)) and all(
      isinstance(p, (tuple, list)) and len(p) == 2 and p[0] >= 0 and p[1] >= 0 for p in points)
  _require(ok, field, f'must be () or (step, multiplier) pairs, both >= 0, got {points!r}')
  steps = [p[0] for p in points]
  _require(steps == sorted(steps), field, f'steps must not decrease, got {steps}')


# ------------------------------------- losses on frozen CLIP (CLIP loss, vision-aided D)
# Here, not in gigagan_jax.frozen, for the reason the upsampler checks are:
# validation imports no model code (the vision-aided heads are model code).

# Defaults of the vision-aided D's fields (frozen/vision_aided.py reads them).
# Layers 4 and 8 are the official code's taps; 12 (the last layer's patch
# tokens) stands in for its global level on the pooled embedding.
VISION_AIDED_LAYERS = (4, 8, 12)
VISION_AIDED_PROJ_DIM = 256
VISION_AIDED_CHANNELS = 256
VISION_AIDED_HEAD_LAYERS = 1
VISION_AIDED_SEED = 0

# (field of config.loss, default, meaning): what validate_frozen and the
# frozen package read; configs/base.py declares them. Weights at 0 leave CLIP
# out entirely.
FROZEN_LOSS_FIELDS = (
    ('clip_weight', 0.0, 'CLIP contrastive loss on G (paper Eq. 9); 0 = off'),
    ('clip_temperature', 0.01, 'tau of Eq. 9: 1 / OpenAI CLIP exp(logit_scale) = 1/100'),
    ('vision_aided_weight', 0.0, 'vision-aided D (frozen CLIP ViT + fixed projection); 0 = off'),
    ('clip_dir', '', 'Hugging Face CLIPModel directory (config.json + model.safetensors), '
                     'OpenAI ViT-B/32, for both losses'),
    ('vision_aided_layers', VISION_AIDED_LAYERS,
     'tapped CLIP ViT layers (1..12 for ViT-B/32; hidden-state numbering)'),
    ('vision_aided_proj_dim', VISION_AIDED_PROJ_DIM, 'width P of the fixed projection'),
    ('vision_aided_channels', VISION_AIDED_CHANNELS, 'width C of the 3x3 head convs'),
    ('vision_aided_head_layers', VISION_AIDED_HEAD_LAYERS,
     'text-modulated 1x1 layers per head (1 = projection-style)'),
    ('vision_aided_seed', VISION_AIDED_SEED, 'seed of the fixed random projection'),
    ('clip_weight_schedule', (), 'multiplier of clip_weight by step (losses.scheduled_weight)'),
    ('vision_aided_weight_schedule', (),
     'multiplier of vision_aided_weight by step, e.g. a warm-up'),
)

CLIP_TOKENIZER_FILES = ('vocab.json', 'merges.txt')


def _clip_checkpoint(clip_dir: str, users: str) -> dict:
  """config.json of the CLIP checkpoint at loss.clip_dir, after checking the files exist."""
  import json
  from etils import epath
  hint = ('a Hugging Face CLIPModel directory with config.json + model.safetensors '
          '(OpenAI CLIP ViT-B/32: openai/clip-vit-base-patch32)')
  _require(bool(clip_dir), 'loss.clip_dir', f'{users} needs CLIP weights: {hint}; it is empty')
  root = epath.Path(clip_dir)
  _require(root.is_dir(), 'loss.clip_dir',
           f'{clip_dir!r} is not a directory ({users} needs {hint})')
  for name in ('config.json', 'model.safetensors'):
    _require((root / name).is_file(), 'loss.clip_dir',
             f'{clip_dir!r} has no {name} ({users} needs {hint})')
  try:
    raw = json.loads((root / 'config.json').read_text())
  except ValueError as e:
    raise ConfigError(f'config.loss.clip_dir: {clip_dir}/config.json is not JSON: {e}') from None
  for tower in ('vision_config', 'text_config'):
    _require(tower in raw, 'loss.clip_dir',
             f'{clip_dir}/config.json has no {tower!r}: {users} needs a full CLIPModel '
             '(image and text towers), not a single tower')
  return raw


def _check_clip_tokenizer(config):
  """The CLIP loss tokenizes each caption a second time with CLIP's BPE (the
  run's own tokenizer may be any): vocab.json + merges.txt from loss.clip_dir,
  or else text.vocab_path / merges_path when text.tokenizer is 'clip'."""
  from etils import epath
  clip_dir = config.loss.clip_dir
  if all((epath.Path(clip_dir) / n).is_file() for n in CLIP_TOKENIZER_FILES):
    return
  text = config.text
  _require(text.get('tokenizer') == 'clip', 'loss.clip_dir',
           f'{clip_dir!r} has no {" + ".join(CLIP_TOKENIZER_FILES)}: the CLIP loss tokenizes the '
           'captions with CLIP\'s BPE (the Hugging Face repo of the checkpoint has both files), '
           f'and config.text.tokenizer={text.get("tokenizer")!r} is not CLIP\'s')


def validate_frozen(config, *, check_files: bool = True):
  """Checks the CLIP-loss and vision-aided fields; returns `config` for chaining.

  Raises ConfigError naming the field when: a weight is negative; the CLIP
  loss is on (weight > 0) with data.batch_size < 2 (Eq. 9 needs other
  captions as negatives) or loss.clip_temperature <= 0; the vision-aided D
  has empty, repeated or non-positive layers or non-positive widths.
  With check_files, also when a loss is on and loss.clip_dir is empty, not a
  directory, lacks config.json or model.safetensors, is not a two-tower
  CLIPModel, taps layers outside its image tower, or (CLIP loss) there is no
  CLIP vocabulary to tokenize the captions with (`_check_clip_tokenizer`).
  Uses `cfg.get(field, default)`, so it runs on configs that predate the fields.
  """
  loss = config.get('loss', {})
  clip_w = float(loss.get('clip_weight', 0.0))
  va_w = float(loss.get('vision_aided_weight', 0.0))
  for field, w in (('clip_weight', clip_w), ('vision_aided_weight', va_w)):
    _require(w >= 0, f'loss.{field}', f'must be >= 0, got {w}')
  if clip_w == 0 and va_w == 0:
    return config

  if clip_w > 0:
    batch = int(config.get('data', {}).get('batch_size', 0))
    _require(batch >= 2, 'data.batch_size',
             f'the CLIP contrastive loss (loss.clip_weight={clip_w}) scores each image against '
             f'the other captions of the batch, so it needs at least 2; got {batch}')
    tau = float(loss.get('clip_temperature', 0.01))
    _require(tau > 0, 'loss.clip_temperature', f'must be > 0, got {tau}')

  layers = tuple(loss.get('vision_aided_layers', VISION_AIDED_LAYERS))
  if va_w > 0:
    _require(bool(layers) and all(int(l) == l and l >= 1 for l in layers)
             and len(set(layers)) == len(layers), 'loss.vision_aided_layers',
             f'distinct CLIP image-tower layers >= 1, got {layers}')
    for field, default in (('vision_aided_proj_dim', VISION_AIDED_PROJ_DIM),
                           ('vision_aided_channels', VISION_AIDED_CHANNELS),
                           ('vision_aided_head_layers', VISION_AIDED_HEAD_LAYERS)):
      value = loss.get(field, default)
      _require(int(value) == value and value >= 1, f'loss.{field}',
               f'must be a positive integer, got {value!r}')
  if not check_files:
    return config

  users = ' and '.join(u for u, w in (('loss.clip_weight > 0', clip_w),
                                      ('loss.vision_aided_weight > 0', va_w)) if w > 0)
  raw = _clip_checkpoint(str(loss.get('clip_dir', '')), users)
  if va_w > 0:
    n = int(raw['vision_config'].get('num_hidden_layers', 12))  # HF's default (ViT-B)
    _require(max(layers) <= n, 'loss.vision_aided_layers',
             f'distinct CLIP image-tower layers in 1..{n} (the checkpoint at loss.clip_dir has '
             f'{n}), got {layers}')
  if clip_w > 0 and 'text' in config:
    _check_clip_tokenizer(config)
  return config


def validate(config: ml_collections.ConfigDict, *,
             check_files: bool = False) -> ml_collections.ConfigDict:
  """Checks field combinations; returns the config for chaining.

  check_files: also open the CLIP checkpoint that loss.clip_dir names when
  the CLIP loss or the vision-aided D is on (`validate_frozen`). The trainer
  sets it; sizing and inference tools (summary, planner, sweep, sample) do
  not, so they work on a config whose weights live elsewhere.
  """
  task = config.get('task', 't2i')
  _require(task in ('t2i', 'sr'), 'task', f"must be 't2i' or 'sr', got {task!r}")
  if task == 'sr':
    r = _validate_sr(config)
  else:
    r = _validate_generator(config.generator, config.data)
    # The matching-aware loss takes every pair as matched: a swapped caption
    # would be a real image with a wrong caption scored as real.
    _require(config.data.get('caption_swap', 0.0) == 0, 'data.caption_swap',
             "is for super-resolution (task='sr'); t2i training needs each image's own "
             f"caption, got {config.data.get('caption_swap')}")
    # A quarter turn makes "on the left" false; the caption cannot follow it.
    _require(not config.data.get('random_rot90', False), 'data.random_rot90',
             "is for super-resolution (task='sr'); a rotated t2i image no longer "
             'matches the positions its caption names')
  _validate_discriminator(config.discriminator, r)
  t = config.text
  _require(t.tokenizer in ('byte', 'clip', 'minilm'), 'text.tokenizer',
           f"must be 'byte', 'clip' or 'minilm', got {t.tokenizer!r}")
  _require(t.backbone in ('none', 'clip', 'minilm'), 'text.backbone',
           f"must be 'none', 'clip' or 'minilm', got {t.backbone!r}")
  _require(not t.get('feature_cache', False) or t.backbone != 'none', 'text.feature_cache',
           "caches a frozen backbone's features; with text.backbone='none' there are none")
  for block in sentence_whitening_blocks(config):
    _require(t.backbone != 'none', f'{block}.text_encoder.sentence_whitening',
             "whitens a frozen backbone's sentence embedding; with text.backbone='none' "
             'there is none')
    _require(t.get('whitening_captions', 0) >= 2, 'text.whitening_captions',
             f'must be >= 2 to fit the whitening of {block}.text_encoder, got '
             f'{t.get("whitening_captions")}')
  # Missing weight/vocab files are reported by make_tokenizer/make_backbone,
  # so that sizing tools (summary, planner) work without them.
  _require(config.loss.gan in ('logistic', 'hinge', 'lsgan', 'wgan'), 'loss.gan',
           f"must be 'logistic', 'hinge', 'lsgan' or 'wgan', got {config.loss.gan!r}")
  _require(config.train.get('max_minutes', 0.0) >= 0, 'train.max_minutes',
           f'is a budget in minutes, 0 = none; got {config.train.get("max_minutes")}')
  _require(config.train.keep_last >= 1, 'train.keep_last',
           f'must be >= 1 (a resume needs the latest checkpoint), got {config.train.keep_last}')
  _require(config.train.keep_every >= 0, 'train.keep_every',
           f'must be >= 0 (0: off), got {config.train.keep_every}')
  decay = config.train.get('ema_decay', 0.0)
  _require(0 <= decay < 1, 'train.ema_decay',
           f'must be in [0, 1) (0: use train.ema_halflife_kimg), got {decay}')
  _validate_contrastive(config)
  _validate_d_translate(config)
  for field in sorted(config.loss):
    if field.endswith('_schedule'):
      _check_schedule(config.loss[field], f'loss.{field}')
  _check_schedule(config.optim.get('lr_schedule', ()), 'optim.lr_schedule')
  clock = config.optim.get('lr_schedule_clock', 'steps')
  _require(clock in ('steps', 'budget'), 'optim.lr_schedule_clock',
           f"must be 'steps' or 'budget', got {clock!r}")
  if clock == 'budget':
    _require(config.train.get('max_minutes', 0.0) > 0, 'optim.lr_schedule_clock',
             "'budget' reads the schedule on train.max_minutes' clock; set train.max_minutes")
    _require(bool(config.optim.get('lr_schedule', ())), 'optim.lr_schedule_clock',
             "'budget' times optim.lr_schedule, which is empty")
  _require(config.mesh.get('conv_weights', 'auto') in CONV_WEIGHTS, 'mesh.conv_weights',
           f'must be one of {CONV_WEIGHTS}, got {config.mesh.get("conv_weights")!r}')
  validate_frozen(config, check_files=check_files)
  return config
