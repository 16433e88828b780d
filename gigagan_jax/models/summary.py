"""Per-module parameter table of G and D, computed with jax.eval_shape.

  python -m gigagan_jax.models.summary --config=configs/t2i_paper.py
  python -m gigagan_jax.models.summary --config=configs/sr_baselines.py:esrgan,paper

No parameter memory is allocated and no backbone weights are loaded, so
paper-size models print on a laptop. The frozen text backbone is not part of
G or D and is not counted; only the width of its features sizes T's input
layer (`backbone_feature_dim`).
"""
import collections
import json
import math
import os
import re

import jax
from absl import app, flags
from flax import linen as nn
from ml_collections import config_flags

from gigagan_jax.config_utils import ConfigError, validate
from gigagan_jax.models.build import abstract_variables
from gigagan_jax.text.tokenizer import make_tokenizer


def define_flags():
  """The --config flag, defined only when run as a program so importing this
  module never collides with another CLI's --config."""
  config_flags.DEFINE_config_file('config', None, 'Experiment config file.')
  flags.mark_flags_as_required(['config'])


def backbone_feature_dim(text_cfg) -> int:
  """Width of the frozen backbone's features, known without loading its weights.

  config.text.feature_dim when set; else for MiniLM the width in its
  config.json (backbone_path) or of the default all-MiniLM-L6-v2 (384);
  0 without a backbone (T then embeds tokens itself). CLIP comes in several
  widths, so a CLIP backbone needs text.feature_dim.
  """
  if text_cfg.backbone == 'none':
    return 0
  if text_cfg.get('feature_dim', 0):
    return int(text_cfg.feature_dim)
  if text_cfg.backbone == 'minilm':
    from gigagan_jax.text.minilm import BertConfig
    path = os.path.join(text_cfg.backbone_path, 'config.json') if text_cfg.backbone_path else ''
    if path and os.path.isfile(path):
      with open(path) as f:
        return BertConfig.from_hf(json.load(f)).hidden_size
    return BertConfig().hidden_size
  raise ConfigError(f'config.text.feature_dim: set the width of the {text_cfg.backbone!r} '
                    'backbone\'s features (768 for CLIP ViT-L/14) to size T without loading '
                    'its weights')


def count_by_module(variables) -> 'collections.OrderedDict[str, int]':
  """Parameter counts grouped by top-level submodule, in declaration order."""
  params = nn.meta.unbox(variables).get('params', {})
  counts = collections.OrderedDict()
  for name, sub in sorted(params.items(), key=lambda kv: _natural_key(kv[0])):
    counts[name] = sum(math.prod(x.shape) for x in jax.tree.leaves(sub))
  return counts


def _natural_key(name: str):
  """'b8_layer0' sorts before 'b16_layer0'."""
  return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', name)]


def format_table(title: str, counts) -> str:
  """`title`, one row per module (count, share) and a total row."""
  total = sum(counts.values())
  width = max([len(k) for k in counts] + [len('module')]) + 2
  lines = [f'{title}', f'{"module":<{width}}{"params":>14}{"share":>9}']
  for name, n in counts.items():
    lines.append(f'{name:<{width}}{n:>14,}{100 * n / total:>8.1f}%')
  lines.append(f'{"total":<{width}}{total:>14,}   ({total / 1e6:.1f}M)')
  return '\n'.join(lines)


def parameter_counts(config):
  """(G counts, D counts) by top-level module for a validated config, shapes only."""
  # Without a frozen backbone T embeds tokens, and the vocabulary sizes it.
  vocab_size = make_tokenizer(config.text).vocab_size if config.text.backbone == 'none' else 0
  g_vars, d_vars = abstract_variables(config, vocab_size, backbone_feature_dim(config.text))
  return count_by_module(g_vars), count_by_module(d_vars)


def summarize(config) -> str:
  """The printed summary of `config` (validated here): G's and D's tables and their sum."""
  config = validate(config)
  g_counts, d_counts = parameter_counts(config)
  g_title = 'Generator' if config.get('task', 't2i') == 't2i' else (
      f'Upsampler ({config.upsampler.kind})')
  total = sum(g_counts.values()) + sum(d_counts.values())
  return '\n'.join([
      format_table(g_title, g_counts), '', format_table('Discriminator', d_counts), '',
      f'G + D: {total / 1e6:.1f}M parameters (frozen text backbone '
      f'{config.text.backbone!r} not counted)'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  print(summarize(flags.FLAGS.config))


if __name__ == '__main__':
  define_flags()
  app.run(main)
