"""`python -m gigagan_jax.models.summary` on every model config in configs/.

Shapes only (jax.eval_shape: nothing is compiled or allocated, no backbone
weights are read), so even the paper-size models take seconds.
"""
import glob
import os
import re
import subprocess
import sys

import pytest

from gigagan_jax.config_utils import REPO_ROOT, ConfigError, load_module
from gigagan_jax.models import baselines
from gigagan_jax.models.summary import backbone_feature_dim, summarize

# get_config arguments of the files that hold several model configs.
ARGS = {'sr_baselines.py': [k + size for k in baselines.KINDS for size in ('', ',paper')]}
# Model-config files left out, and why.
SKIP = {'ablations.py': 'its get_config is t2i_tiny.py or t2i_paper.py, both summarised here'}

# Exact counts of the paper-size models (README: G 682.8M and D 383.0M; the
# upsampler 358.6M, configs/up_base.py). A change here is a change of the model.
EXPECTED = {
    't2i_paper.py': ('Generator', 682_784_351, 383_007_242),
    'up_paper.py': ('Upsampler (gigagan)', 358_630_560, 111_005_978),
}


def _specs():
  """(model config specs 'file[:arg]', skipped files without a discriminator)."""
  specs, not_models = [], []
  for path in sorted(glob.glob(os.path.join(REPO_ROOT, 'configs', '*.py'))):
    name = os.path.basename(path)
    module = load_module(path)
    if not hasattr(module, 'get_config') or name in SKIP:
      continue  # base.py, sr_base.py, up_base.py: pieces of configs, not configs
    for arg in ARGS.get(name, [None]):
      if 'discriminator' in module.get_config(arg):
        specs.append(name if arg is None else f'{name}:{arg}')
      else:
        not_models.append(name)
  return specs, not_models


SPECS, NOT_MODELS = _specs()


def _load(spec):
  name, _, arg = spec.partition(':')
  return load_module(os.path.join(REPO_ROOT, 'configs', name)).get_config(arg or None)


def test_every_model_config_is_listed():
  names = {s.partition(':')[0] for s in SPECS}
  assert {'t2i_micro.py', 't2i_tiny.py', 't2i_paper.py', 'up_tiny.py', 'up_paper.py',
          'sr_baselines.py'} <= names
  assert len([s for s in SPECS if s.startswith('sr_baselines.py')]) == 2 * len(baselines.KINDS)
  # Files without a discriminator are evaluation / probe configs only.
  assert NOT_MODELS and all(n.startswith(('eval_', 'probe_')) for n in NOT_MODELS), NOT_MODELS


def _totals(text):
  """[(title, total)] of the tables in a summary's text."""
  titles = [block.split('\n', 1)[0] for block in text.split('\n\n')[:2]]
  totals = [int(n.replace(',', '')) for n in re.findall(r'^total\s+([\d,]+)', text, re.M)]
  return list(zip(titles, totals))


@pytest.mark.parametrize('spec', SPECS)
def test_summary_prints_g_and_d_tables(spec):
  text = summarize(_load(spec))
  (g_title, g_total), (d_title, d_total) = _totals(text)
  assert g_title == 'Generator' or g_title.startswith('Upsampler (')
  assert d_title == 'Discriminator'
  # Each table's module rows add up to its total row.
  for block in text.split('\n\n')[:2]:
    rows = [int(m.replace(',', '')) for m in re.findall(r'^\S+\s+([\d,]+)\s+[\d.]+%$', block, re.M)]
    assert sum(rows) == int(re.search(r'^total\s+([\d,]+)', block, re.M).group(1).replace(',', ''))
  assert re.search(r'^G \+ D: [\d.]+M parameters', text, re.M)
  assert d_total > 0 and (g_total > 0 or 'bicubic' in spec)  # bicubic has no weights
  name = spec.partition(':')[0]
  if name in EXPECTED:
    assert (g_title, g_total, d_total) == EXPECTED[name]


def test_backbone_feature_dim_without_weights():
  config = _load('t2i_tiny.py')
  assert config.text.backbone == 'minilm' and config.text.feature_dim == 0
  assert backbone_feature_dim(config.text) == 384  # all-MiniLM-L6-v2's width
  config.text.feature_dim = 512
  assert backbone_feature_dim(config.text) == 512  # the config's word wins
  paper = _load('t2i_paper.py')
  assert backbone_feature_dim(paper.text) == 768
  paper.text.feature_dim = 0
  with pytest.raises(ConfigError, match='text.feature_dim'):
    backbone_feature_dim(paper.text)
  paper.text.backbone = 'none'
  assert backbone_feature_dim(paper.text) == 0


def test_command_line_on_a_minilm_config():
  """The command users type (it failed on every MiniLM config: T was sized
  as if it had no backbone)."""
  out = subprocess.run([sys.executable, '-m', 'gigagan_jax.models.summary',
                        '--config=configs/t2i_tiny.py'], cwd=REPO_ROOT, capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert out.returncode == 0, out.stderr[-2000:]
  assert [t for t, _ in _totals(out.stdout)] == ['Generator', 'Discriminator']
  assert "frozen text backbone 'minilm' not counted" in out.stdout
