"""Rematerialisation of blocks (config `generator.remat`, `discriminator.remat`).

A rematerialised block keeps fewer of its activations for the backward pass
and recomputes the rest there: less memory for more FLOPs. Policies:
  'none'   keep everything (no recomputation);
  'full'   keep only the block's inputs, recompute the whole block forward;
  'convs'  keep the conv outputs (tagged CONV_OUT by ModulatedConv and
           EqualConv) and recompute the cheap element-wise work and attention
           between them.
"""
import jax
from flax import linen as nn

CONV_OUT = 'conv_out'


def remat(module_cls, policy: str, static_argnums: tuple = ()):
  """module_cls, rematerialised under `policy` (config_utils.REMAT_POLICIES); same parameters.

  static_argnums: positions of Python-valued call arguments, counting the
  module itself as 0 (flax.linen.remat).
  """
  if policy == 'none':
    return module_cls
  saved = {'full': jax.checkpoint_policies.nothing_saveable,
           'convs': jax.checkpoint_policies.save_only_these_names(CONV_OUT)}[policy]
  return nn.remat(module_cls, policy=saved, static_argnums=static_argnums)
