"""Builds G and D from a config and makes the example inputs that size them."""
import jax
import ml_collections
import numpy as np

from gigagan_jax.config_utils import num_scales
from gigagan_jax.models.discriminator import Discriminator
from gigagan_jax.models.generator import Generator


def build_models(config: ml_collections.ConfigDict, vocab_size: int):
  """(Generator, Discriminator) for `config`; `vocab_size` of its tokenizer."""
  g_cfg = ml_collections.FrozenConfigDict(config.generator)
  d_cfg = ml_collections.FrozenConfigDict(config.discriminator)
  max_len = config.text.max_len
  g = Generator(g_cfg, vocab_size=vocab_size, max_len=max_len)
  d = Discriminator(d_cfg, resolution=g_cfg.resolution, levels=g_cfg.pyramid_levels,
                    vocab_size=vocab_size, max_len=max_len)
  return g, d


def example_text(config: ml_collections.ConfigDict, batch: int, feature_dim: int = 0):
  """Zero text inputs of the right shapes: tokens [B,L], eot [B], features [B,L,Df]."""
  length = config.text.max_len
  text = {'tokens': np.zeros((batch, length), np.int32),
          'eot': np.full((batch,), 1, np.int32)}
  if feature_dim:
    text['features'] = np.zeros((batch, length, feature_dim), np.float32)
  return text


def example_pyramid(config: ml_collections.ConfigDict, batch: int):
  """Zero image pyramid, highest resolution first: ([B,R,R,3], [B,R/2,R/2,3], ...)."""
  r = config.generator.resolution
  return tuple(np.zeros((batch, r // 2**i, r // 2**i, 3), np.float32)
               for i in range(config.generator.pyramid_levels))


def abstract_variables(config, vocab_size: int, feature_dim: int = 0, batch: int = 2):
  """Shapes (boxed with logical axes) of G's and D's variables, no memory allocated."""
  g, d = build_models(config, vocab_size)
  text = example_text(config, batch, feature_dim)
  z = np.zeros((batch, config.generator.z_dim), np.float32)
  key = jax.random.key(0)
  g_vars = jax.eval_shape(g.init, key, z, text)
  d_vars = jax.eval_shape(d.init, key, example_pyramid(config, batch), text)
  return g_vars, d_vars


def scales(config) -> list[int]:
  """Synthesis resolutions 4, 8, ..., R."""
  return [4 * 2**s for s in range(num_scales(config.generator.resolution))]
