"""Per-module parameter table of G and D, computed with jax.eval_shape.

  python -m gigagan_jax.models.summary --config=configs/t2i_paper.py

No parameter memory is allocated, so paper-size models print on a laptop.
The frozen text backbone is not part of G or D and is not counted.
"""
import collections
import math
import re

import jax
from absl import app, flags
from flax import linen as nn
from ml_collections import config_flags

from gigagan_jax.config_utils import validate
from gigagan_jax.models.build import abstract_variables
from gigagan_jax.text.tokenizer import make_tokenizer


def define_flags():
  """The --config flag, defined only when run as a program so importing this
  module never collides with another CLI's --config."""
  config_flags.DEFINE_config_file('config', None, 'Experiment config file.')
  flags.mark_flags_as_required(['config'])


def count_by_module(variables) -> 'collections.OrderedDict[str, int]':
  """Parameter counts grouped by top-level submodule, in declaration order."""
  params = nn.meta.unbox(variables)['params']
  counts = collections.OrderedDict()
  for name, sub in sorted(params.items(), key=lambda kv: _natural_key(kv[0])):
    counts[name] = sum(math.prod(x.shape) for x in jax.tree.leaves(sub))
  return counts


def _natural_key(name: str):
  """'b8_layer0' sorts before 'b16_layer0'."""
  return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', name)]


def format_table(title: str, counts) -> str:
  total = sum(counts.values())
  width = max(len(k) for k in counts) + 2
  lines = [f'{title}', f'{"module":<{width}}{"params":>14}{"share":>9}']
  for name, n in counts.items():
    lines.append(f'{name:<{width}}{n:>14,}{100 * n / total:>8.1f}%')
  lines.append(f'{"total":<{width}}{total:>14,}   ({total / 1e6:.1f}M)')
  return '\n'.join(lines)


def main(argv):
  del argv
  config = validate(flags.FLAGS.config)
  # Without a frozen backbone T embeds tokens, and the vocabulary sizes it.
  vocab_size = make_tokenizer(config.text).vocab_size if config.text.backbone == 'none' else 0
  g_vars, d_vars = abstract_variables(config, vocab_size, config.text.feature_dim)
  g_counts, d_counts = count_by_module(g_vars), count_by_module(d_vars)
  print(format_table('Generator', g_counts))
  print()
  print(format_table('Discriminator', d_counts))
  print(f'\nG + D: {(sum(g_counts.values()) + sum(d_counts.values())) / 1e6:.1f}M parameters '
        f'(frozen text backbone {config.text.backbone!r} not counted)')


if __name__ == '__main__':
  define_flags()
  app.run(main)
