"""Sweep files: expansion into named, validated configs; commands that parse back."""
import glob
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from gigagan_jax import sweep
from gigagan_jax.config_utils import load_config, load_module, validate
from gigagan_jax.data import captioned_shapes
from gigagan_jax.evaluate import evaluator
from gigagan_jax.evaluate import probe as probe_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, 'configs', '*.py')))


def _check_eval_shapes(ev):
  """Scores a t2i_tiny run with the probe and pixel statistics: no weights to download."""
  evaluator.check_eval_config(ev, load_config('configs/t2i_tiny.py'))
  offline = set(evaluator.PROBE_METRICS) | {'prompt_diversity'}
  assert set(ev.metrics) <= offline and not ev.inception_path
  _check_probe(load_config(ev.probe_config))


def _check_eval_coco(ev):
  """The paper's protocol (FID-30k, 256 px); the weight files come on the command line."""
  run = load_config('configs/t2i_paper.py')
  with pytest.raises(ValueError, match='eval_config.inception_path'):
    evaluator.check_eval_config(ev, run)
  ev.inception_path, ev.clip_dir = 'pt_inception.pth', 'clip-vit-base-patch32'
  evaluator.check_eval_config(ev, run)
  assert (ev.num_samples, ev.resolution, ev.split) == (30000, 256, 'val')


def _check_probe(config):
  """Builds at the tiny G's resolution; one logit per class of every attribute."""
  assert config.resolution == load_config('configs/t2i_tiny.py').generator.resolution
  captioned_shapes.builder_config(config.resolution, config.num_examples)  # raises if unbuildable
  net = probe_lib.ProbeNet(tuple(config.widths), config.feature_dim)
  x = jnp.zeros((2, config.resolution, config.resolution, 3))
  feats, logits = jax.eval_shape(lambda: net.init_with_output(jax.random.key(0), x)[0])
  assert feats.shape == (2, config.feature_dim)
  assert {k: v.shape for k, v in logits.items()} == {
      k: (2, n) for k, n in probe_lib.ATTRIBUTES.items()}


# Configs without a discriminator (not experiments: validate() does not apply)
# and the check of what each is for.
OTHER_CONFIG_CHECKS = {'eval_shapes.py': _check_eval_shapes,
                       'eval_coco2014_30k.py': _check_eval_coco,
                       'probe_shapes.py': _check_probe}


@pytest.mark.parametrize('path', [p for p in CONFIGS if os.path.basename(p) not in
                                  ('__init__.py', 'base.py', 'sr_base.py', 'up_base.py')], ids=os.path.basename)
def test_every_config_loads_and_validates(path):
  config = load_module(path).get_config(None)
  if 'discriminator' in config:  # experiment configs
    validate(config)
  else:
    name = os.path.basename(path)
    assert name in OTHER_CONFIG_CHECKS, f'{name}: add a check of what it is for'
    OTHER_CONFIG_CHECKS[name](config)


def test_ablation_sweep_names_and_overrides():
  variants = {v.name: v for v in sweep.expand('configs/ablations.py')}
  assert list(variants) == ['full', 'no_kernel_selection', 'no_attention', 'single_scale_d',
                            'projection_d', 'tiny_recipe', 'matching_d_only', 'no_matching_aware', 'width_half',
                            'width_double']
  base = load_config('configs/t2i_tiny.py')
  # The sweep's baseline is the paper's model: MS-I/O D, neither the
  # contrastive loss nor the whitening nor the input from w.
  base.discriminator.kind = 'msio'
  base.loss.contrastive_weight = 0.0
  base.generator.text_encoder.sentence_whitening = False
  base.discriminator.text_encoder.sentence_whitening = False
  base.generator.input_from_w = False
  assert variants['full'].config.to_dict() == base.to_dict()
  assert variants['no_kernel_selection'].config.generator.kernel_bank == (1, 1, 1, 1)
  v = variants['no_attention'].config
  assert v.generator.self_attn_resolutions == () and v.discriminator.self_attn_resolutions == ()
  v = variants['single_scale_d'].config
  assert v.generator.pyramid_levels == 1 and v.discriminator.exits == 'last'
  assert variants['projection_d'].config.discriminator.kind == 'projection'
  assert variants['tiny_recipe'].config.to_dict() == load_config('configs/t2i_tiny.py').to_dict()
  assert variants['matching_d_only'].config.loss.matching_in_g is False
  assert variants['no_matching_aware'].config.loss.matching_aware is False
  assert variants['width_half'].config.generator.channels == tuple(c // 2 for c in base.generator.channels)
  # Only the named fields change, in the tiny and in the paper sweep.
  flat = lambda c: _flatten(c.to_dict())
  paper = {v.name: v for v in sweep.expand('configs/ablations.py:paper')}
  assert list(paper) == list(variants) and paper['full'].config.generator.resolution == 64
  paper_base = load_config('configs/t2i_paper.py')
  paper_base.update_from_flattened_dict(load_module('configs/ablations.py').PAPER_MODEL)
  for base_config, sweep_variants in ((base, variants), (paper_base, paper)):
    for name, var in sweep_variants.items():
      changed = {k for k, v in flat(var.config).items() if flat(base_config)[k] != v}
      assert changed == set(var.overrides), name


def test_clip_loss_variant_is_listed_when_clip_weights_are_given():
  variants = {v.name: v for v in sweep.expand('configs/ablations.py:tiny,clip_dir=/ckpt/clip')}
  assert list(variants)[-1] == 'clip_loss' and variants['clip_loss'].overrides == {
      'loss.clip_weight': 1.0}
  assert all(v.config.loss.clip_dir == '/ckpt/clip' for v in variants.values())
  assert variants['full'].config.loss.clip_weight == 0
  with pytest.raises(ValueError, match='only clip_dir'):
    sweep.expand('configs/ablations.py:tiny,clipdir=/ckpt/clip')


def _flatten(d, prefix=''):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def test_printed_commands_parse_back_to_the_variant_configs():
  """The --config.X=V flags of each command rebuild exactly the expanded config
  when absl + ml_collections parse them, as in the train CLI."""
  echo = ('import json; from absl import app; from ml_collections import config_flags; '
          'c = config_flags.DEFINE_config_file("config"); '
          'app.run(lambda argv: print(json.dumps(c.value.to_dict())))')
  for variant in sweep.expand('configs/ablations.py'):
    cmd = sweep.train_command('configs/ablations.py', variant, 'gs://bucket/x/')  # any root
    assert cmd[1:3] == ['-m', 'gigagan_jax.train']
    assert cmd[-1] == f'--workdir=gs://bucket/x/{variant.name}'
    out = subprocess.run([sys.executable, '-c', echo] + cmd[3:-1], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == json.loads(json.dumps(variant.config.to_dict())), variant.name


def test_bad_sweep_entries_are_named(tmp_path):
  path = tmp_path / 'bad_sweep.py'
  path.write_text(
      'from configs import t2i_tiny\n'
      'def get_config(arg=None):\n  return t2i_tiny.get_config()\n'
      'def get_sweep(arg=None):\n'
      '  return [{"name": "ok"}, {"name": "typo", "generator.chanels": (1,)}]\n')
  with pytest.raises(ValueError, match="'typo' sets 'generator.chanels'"):
    sweep.expand(str(path))
  path.write_text(path.read_text().replace('"generator.chanels": (1,)', '"generator.channels": (8,)'))
  with pytest.raises(ValueError, match="'typo'.*generator.channels"):
    sweep.expand(str(path))


def test_cli_dry_run_lists_without_running(tmp_path):
  out = subprocess.run([sys.executable, '-m', 'gigagan_jax.sweep', '--config=configs/ablations.py',
                        f'--workdir_root={tmp_path}', '--only=full,no_attention', '--dry-run'],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert f"2 of {len(sweep.expand('configs/ablations.py'))} variant(s)" in out.stdout
  assert f'--workdir={tmp_path}/no_attention' in out.stdout
  assert not os.listdir(tmp_path)  # nothing ran
