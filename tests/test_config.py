"""A wrong config field fails with an error naming it (tests/test_sweep.py loads every shipped config)."""
import os

import pytest

from gigagan_jax.config_utils import ConfigError, load_config, validate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('field, value, message', [
    ('data.resolution', 64, r'config\.data\.resolution: 64 differs from generator\.resolution 32'),
    ('generator.kernel_bank', (2, 2), r'config\.generator\.kernel_bank: needs one entry per scale'),
    ('generator.self_attn_resolutions', (8, 12), r'config\.generator\.self_attn_resolutions: \[12\]'),
    ('generator.dtype', 'float64', r'config\.generator\.dtype'),
    ('loss.gan', 'relativistic', r"config\.loss\.gan: .* got 'relativistic'"),
    ('text.backbone', 't5', r'config\.text\.backbone'),
    ('loss.clip_weight', -0.1, r'config\.loss\.clip_weight: must be >= 0'),
    ('data.caption_swap', 0.2, r"config\.data\.caption_swap: is for super-resolution"),
    ('data.random_rot90', True, r"config\.data\.random_rot90: is for super-resolution"),
    ('train.keep_last', 0, r'config\.train\.keep_last: must be >= 1 .* got 0'),
    ('train.keep_every', -5, r'config\.train\.keep_every: must be >= 0'),
])
def test_bad_fields_are_named(field, value, message):
  config = load_config(os.path.join(REPO, 'configs/t2i_tiny.py'))
  config.update_from_flattened_dict({field: value})
  with pytest.raises(ConfigError, match=message):
    validate(config)


def test_missing_config_file_is_named():
  with pytest.raises(FileNotFoundError, match='configs/nope.py'):
    load_config('configs/nope.py')


def test_tiny_long_is_the_tiny_model_with_a_longer_budget():
  """configs/t2i_tiny.py:long (the README's longer run) changes the budget,
  G's depth at 8, 16 and 32 px, the hard negatives (of every attribute but
  position), shared fakes, R1's gamma and G_ema's half-life only: the same D,
  text, data, other losses and optimiser, its learning-rate schedule
  stretched to its steps."""
  tiny = load_config(os.path.join(REPO, 'configs/t2i_tiny.py'))
  long = validate(load_config(os.path.join(REPO, 'configs/t2i_tiny.py:long')))
  for block in ('discriminator', 'text'):
    assert long[block].to_dict() == tiny[block].to_dict(), block
  assert long.loss.r1_gamma > tiny.loss.r1_gamma
  assert {**long.loss.to_dict(), 'r1_gamma': 0} == {**tiny.loss.to_dict(), 'r1_gamma': 0}
  assert long.generator.convs_per_scale == (1, 2, 2, 2)
  assert ({**long.generator.to_dict(), 'convs_per_scale': ()} ==
          {**tiny.generator.to_dict(), 'convs_per_scale': ()})
  assert long.data.hard_negatives and not tiny.data.hard_negatives
  assert 'position' not in long.data.hard_negative_attributes
  hard = {'hard_negatives': 0, 'hard_negative_attributes': 0}
  assert {**long.data.to_dict(), **hard} == {**tiny.data.to_dict(), **hard}
  assert long.train.max_minutes > 0 and long.train.steps > tiny.train.steps
  assert long.train.shared_fakes and not tiny.train.shared_fakes
  assert long.train.ema_halflife_kimg > tiny.train.ema_halflife_kimg
  stretch = long.train.steps / tiny.train.steps
  assert long.optim.lr_schedule == tuple((step * stretch, m) for step, m in tiny.optim.lr_schedule)
  assert ({**long.optim.to_dict(), 'lr_schedule': ()} ==
          {**tiny.optim.to_dict(), 'lr_schedule': ()})
  with pytest.raises(ValueError, match="'longer'"):
    load_config(os.path.join(REPO, 'configs/t2i_tiny.py:longer'))


def test_feature_cache_needs_a_backbone():
  config = load_config(os.path.join(REPO, 'configs/t2i_micro.py'))  # backbone 'none'
  config.text.feature_cache = True
  with pytest.raises(ConfigError, match=r"config\.text\.feature_cache: caches a frozen backbone's"):
    validate(config)
