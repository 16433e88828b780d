"""Builds G and D from a config and makes the example inputs that size them.

Two tasks (config.task) share the trainer:
  't2i': G is the text-to-image Generator, G(z, text) -> image pyramid;
  'sr':  G is an upsampler (GigaGAN's or a baseline), G(lr, text, z) -> HR image,
         and D scores HR pyramids with the low-res input as 3 extra channels.
"""
import jax
import ml_collections
import numpy as np

from gigagan_jax.config_utils import num_scales
from gigagan_jax.models import baselines
from gigagan_jax.models.discriminator import Discriminator
from gigagan_jax.models.generator import Generator
from gigagan_jax.models.projection_discriminator import ProjectionDiscriminator
from gigagan_jax.models.upsampler import Upsampler


def build_models(config: ml_collections.ConfigDict, vocab_size: int):
  """(G, D) for `config`; `vocab_size` of its tokenizer. D is the MS-I/O
  Discriminator, or with discriminator.kind = 'projection' the plain one."""
  d_cfg = ml_collections.FrozenConfigDict(config.discriminator)
  max_len = config.text.max_len
  if config.task == 'sr':
    u_cfg = ml_collections.FrozenConfigDict(config.upsampler)
    g = (Upsampler(u_cfg, vocab_size=vocab_size, max_len=max_len) if u_cfg.kind == 'gigagan'
         else baselines.build_baseline(u_cfg))
    resolution, levels = config.data.degradation.hr_size, d_cfg.levels
  else:
    g = Generator(ml_collections.FrozenConfigDict(config.generator), vocab_size=vocab_size,
                  max_len=max_len)
    resolution, levels = config.generator.resolution, config.generator.pyramid_levels
  d_cls = ProjectionDiscriminator if d_cfg.get('kind', 'msio') == 'projection' else Discriminator
  d = d_cls(d_cfg, resolution=resolution, levels=levels, vocab_size=vocab_size, max_len=max_len)
  return g, d


def z_dim(config) -> int:
  """Width of G's latent z (baseline upsamplers take none; they get a dummy of 1)."""
  if config.task == 'sr':
    return config.upsampler.get('z_dim', 1)
  return config.generator.z_dim


def example_g_inputs(config: ml_collections.ConfigDict, batch: int, feature_dim: int = 0):
  """Zero positional inputs of G: (z, text) for 't2i', (lr, text, z) for 'sr'."""
  text = example_text(config, batch, feature_dim)
  z = np.zeros((batch, z_dim(config)), np.float32)
  if config.task == 'sr':
    s = config.data.degradation.hr_size // config.upsampler.scale
    return np.zeros((batch, s, s, 3), np.float32), text, z
  return z, text


def example_text(config: ml_collections.ConfigDict, batch: int, feature_dim: int = 0):
  """Zero text inputs of the right shapes: tokens [B,L], eot [B], features [B,L,Df]."""
  length = config.text.max_len
  text = {'tokens': np.zeros((batch, length), np.int32),
          'eot': np.full((batch,), 1, np.int32)}
  if feature_dim:
    text['features'] = np.zeros((batch, length, feature_dim), np.float32)
  return text


def example_pyramid(config: ml_collections.ConfigDict, batch: int):
  """Zero D input, highest resolution first: ([B,R,R,C], [B,R/2,R/2,C], ...);
  C = 3, or 6 for 'sr' (image + the low-res input resized to the level)."""
  if config.task == 'sr':
    r, levels, c = config.data.degradation.hr_size, config.discriminator.levels, 6
  else:
    r, levels, c = config.generator.resolution, config.generator.pyramid_levels, 3
  return tuple(np.zeros((batch, r // 2**i, r // 2**i, c), np.float32) for i in range(levels))


def abstract_variables(config, vocab_size: int, feature_dim: int = 0, batch: int = 2):
  """Shapes (boxed with logical axes) of G's and D's variables, no memory allocated."""
  g, d = build_models(config, vocab_size)
  key = jax.random.key(0)
  g_vars = jax.eval_shape(g.init, key, *example_g_inputs(config, batch, feature_dim))
  d_vars = jax.eval_shape(d.init, key, example_pyramid(config, batch),
                          example_text(config, batch, feature_dim))
  return g_vars, d_vars


def scales(config) -> list[int]:
  """Synthesis resolutions 4, 8, ..., R."""
  return [4 * 2**s for s in range(num_scales(config.generator.resolution))]
