"""Config checks for the losses that need frozen CLIP weights (CLIP loss, vision-aided D).

They live in `gigagan_jax.config_utils` (validation imports no model code);
this module names them for the frozen package:

  validate_frozen(config, check_files=True)  ConfigError naming the field
  EXPECTED_FIELDS                             (field, default, meaning) of config.loss
"""
from gigagan_jax.config_utils import FROZEN_LOSS_FIELDS as EXPECTED_FIELDS
from gigagan_jax.config_utils import validate_frozen

__all__ = ['EXPECTED_FIELDS', 'validate_frozen']
