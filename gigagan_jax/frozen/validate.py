"""Config checks for the losses that need frozen CLIP weights (CLIP loss, vision-aided D).

`validate_frozen(config)` is pure (reads the config and, when a loss is on,
the checkpoint's config.json; loads no weights) and raises a ConfigError
(a ValueError) whose message starts with the offending field. It uses
`cfg.get(field, default)`, so it runs on configs that predate these fields;
EXPECTED_FIELDS lists them with their defaults for configs/base.py.
"""
from __future__ import annotations

import json

from etils import epath

from gigagan_jax.config_utils import ConfigError
from gigagan_jax.frozen import vision_aided

# (field of config.loss, default, meaning): what validate_frozen and the
# frozen package read. Weights at 0 leave CLIP out entirely.
EXPECTED_FIELDS = (
    ('clip_weight', 0.0, 'CLIP contrastive loss on G (paper Eq. 9); 0 = off'),
    ('clip_temperature', 0.01, 'tau of Eq. 9: 1 / OpenAI CLIP exp(logit_scale) = 1/100'),
    ('vision_aided_weight', 0.0, 'vision-aided D (frozen CLIP ViT + fixed projection); 0 = off'),
    ('clip_dir', '', 'Hugging Face CLIPModel directory (config.json + model.safetensors), '
                     'OpenAI ViT-B/32, for both losses'),
    ('vision_aided_layers', vision_aided.DEFAULT_LAYERS,
     'tapped CLIP ViT layers (1..12 for ViT-B/32; hidden-state numbering)'),
    ('vision_aided_proj_dim', vision_aided.DEFAULT_PROJ_DIM, 'width P of the fixed projection'),
    ('vision_aided_channels', vision_aided.DEFAULT_CHANNELS, 'width C of the 3x3 head convs'),
    ('vision_aided_head_layers', vision_aided.DEFAULT_HEAD_LAYERS,
     'text-modulated 1x1 layers per head (1 = projection-style)'),
    ('vision_aided_seed', vision_aided.DEFAULT_SEED, 'seed of the fixed random projection'),
)


def _fail(field: str, message: str):
  raise ConfigError(f'config.{field}: {message}')


def _clip_checkpoint(clip_dir: str, users: str) -> dict:
  """config.json of the CLIP checkpoint at loss.clip_dir, after checking the files exist."""
  hint = ('a Hugging Face CLIPModel directory with config.json + model.safetensors '
          '(OpenAI CLIP ViT-B/32: openai/clip-vit-base-patch32)')
  if not clip_dir:
    _fail('loss.clip_dir', f'{users} needs CLIP weights: {hint}; it is empty')
  root = epath.Path(clip_dir)
  if not root.is_dir():
    _fail('loss.clip_dir', f'{clip_dir!r} is not a directory ({users} needs {hint})')
  for name in ('config.json', 'model.safetensors'):
    if not (root / name).is_file():
      _fail('loss.clip_dir', f'{clip_dir!r} has no {name} ({users} needs {hint})')
  try:
    raw = json.loads((root / 'config.json').read_text())
  except ValueError as e:
    _fail('loss.clip_dir', f'{clip_dir}/config.json is not JSON: {e}')
  for tower in ('vision_config', 'text_config'):
    if tower not in raw:
      _fail('loss.clip_dir', f'{clip_dir}/config.json has no {tower!r}: {users} needs a full '
                             'CLIPModel (image and text towers), not a single tower')
  return raw


def validate_frozen(config):
  """Checks the CLIP-loss and vision-aided fields; returns `config` for chaining.

  Raises ConfigError naming the field when: a weight is negative; a loss is
  on (weight > 0) and loss.clip_dir is empty, not a directory, lacks
  config.json or model.safetensors, or is not a two-tower CLIPModel; the
  CLIP loss is on with data.batch_size < 2 (Eq. 9 needs other captions as
  negatives) or loss.clip_temperature <= 0; the vision-aided D taps layers
  outside the checkpoint's image tower or has non-positive widths.
  """
  loss = config.get('loss', {})
  clip_w = float(loss.get('clip_weight', 0.0))
  va_w = float(loss.get('vision_aided_weight', 0.0))
  for field, w in (('clip_weight', clip_w), ('vision_aided_weight', va_w)):
    if w < 0:
      _fail(f'loss.{field}', f'must be >= 0, got {w}')
  if clip_w == 0 and va_w == 0:
    return config
  users = ' and '.join(u for u, w in (('loss.clip_weight > 0', clip_w),
                                      ('loss.vision_aided_weight > 0', va_w)) if w > 0)
  raw = _clip_checkpoint(str(loss.get('clip_dir', '')), users)

  if clip_w > 0:
    batch = int(config.get('data', {}).get('batch_size', 0))
    if batch < 2:
      _fail('data.batch_size', f'the CLIP contrastive loss (loss.clip_weight={clip_w}) scores '
                               'each image against the other captions of the batch, so it '
                               f'needs at least 2; got {batch}')
    tau = float(loss.get('clip_temperature', 0.01))
    if tau <= 0:
      _fail('loss.clip_temperature', f'must be > 0, got {tau}')

  if va_w > 0:
    layers = tuple(loss.get('vision_aided_layers', vision_aided.DEFAULT_LAYERS))
    n = int(raw['vision_config'].get('num_hidden_layers', 12))  # HF's default (ViT-B)
    if (not layers or any(int(l) != l or not 1 <= l <= n for l in layers)
        or len(set(layers)) != len(layers)):
      _fail('loss.vision_aided_layers', f'distinct CLIP image-tower layers in 1..{n} (the '
                                        f'checkpoint at loss.clip_dir has {n}), got {layers}')
    for field, default in (('vision_aided_proj_dim', vision_aided.DEFAULT_PROJ_DIM),
                           ('vision_aided_channels', vision_aided.DEFAULT_CHANNELS),
                           ('vision_aided_head_layers', vision_aided.DEFAULT_HEAD_LAYERS)):
      value = loss.get(field, default)
      if int(value) != value or value < 1:
        _fail(f'loss.{field}', f'must be a positive integer, got {value!r}')
  return config
