"""Sweeps: a config file's get_sweep() expanded into named training runs.

  python -m gigagan_jax.sweep --config=configs/ablations.py --dry-run
  python -m gigagan_jax.sweep --config=configs/ablations.py --workdir_root=runs/ablations
  python -m gigagan_jax.sweep --config=configs/ablations.py:paper --only=full,no_attention \
      --workdir_root=gs://bucket/ablations --launcher=launch/slurm.sh -- --nodes=4

A sweep file is a config file with both get_config(arg) (the base config)
and get_sweep(arg): a list of dicts, each with a 'name' and the dotted
fields it overrides, e.g. {'name': 'no_attention', 'generator.self_attn_resolutions': ()}.
Every variant is validated before anything starts. Each runs as
`python -m gigagan_jax.train --config=FILE[:arg] --config.FIELD=VALUE ...
--workdir=ROOT/NAME`: locally one after the other, or handed to a launch
script (`--launcher`, given --config, --workdir and --extra=OVERRIDES, plus
whatever follows `--`). --dry-run prints the variants and commands only.
"""
import dataclasses
import shlex
import subprocess
import sys

import ml_collections
from absl import app, flags

from gigagan_jax.config_utils import load_module, split_spec, validate


@dataclasses.dataclass
class Variant:
  name: str
  overrides: dict          # dotted field -> value
  config: ml_collections.ConfigDict


def expand(spec: str) -> list[Variant]:
  """The validated variants of sweep file `spec` ('path[:arg]')."""
  path, arg = split_spec(spec)
  module = load_module(path)
  if not hasattr(module, 'get_sweep'):
    raise ValueError(f'{path} has no get_sweep(arg); a sweep file defines get_config and get_sweep')
  variants, seen = [], set()
  for entry in module.get_sweep(arg):
    entry = dict(entry)
    name = entry.pop('name', None)
    if not name or not all(ch.isalnum() or ch in '_-.' for ch in name):
      raise ValueError(f'{path}: every sweep entry needs a name of letters, digits, _-. ; got {name!r}')
    if name in seen:
      raise ValueError(f'{path}: sweep entry name {name!r} is used twice')
    seen.add(name)
    config = module.get_config(arg)
    for field, value in entry.items():
      *parents, leaf = field.split('.')
      node = config
      for key in parents:
        node = node.get(key) if isinstance(node, ml_collections.ConfigDict) else None
      if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        raise ValueError(f'{path}: sweep entry {name!r} sets {field!r}, which is not a field of '
                         'the config (a typo?)')
      try:
        node[leaf] = value  # ConfigDict refuses a value of another type
      except TypeError as e:
        raise ValueError(f'{path}: sweep entry {name!r} sets {field!r}: {e}') from None
    try:
      validate(config)
    except ValueError as e:
      raise ValueError(f'{path}: sweep entry {name!r}: {e}') from None
    variants.append(Variant(name, entry, config))
  return variants


def flag_value(value) -> str:
  """A config value as ml_collections' config flags parse it back."""
  if isinstance(value, (tuple, list)):
    return '(' + ''.join(f'{flag_value(v)},' for v in value) + ')'
  return str(value)


def override_flags(variant: Variant) -> list[str]:
  return [f'--config.{k}={flag_value(v)}' for k, v in variant.overrides.items()]


def train_command(spec: str, variant: Variant, workdir_root: str) -> list[str]:
  return ([sys.executable, '-m', 'gigagan_jax.train', f'--config={spec}'] +
          override_flags(variant) + [f'--workdir={workdir_root.rstrip("/")}/{variant.name}'])


def launcher_command(launcher: str, spec: str, variant: Variant, workdir_root: str,
                     extra: list[str]) -> list[str]:
  return (['bash', launcher, f'--config={spec}',
           f'--workdir={workdir_root.rstrip("/")}/{variant.name}',
           f'--extra={" ".join(override_flags(variant))}'] + list(extra))


def define_flags():
  """Flags of the CLI, defined only when run as a program (see sample.define_flags)."""
  flags.DEFINE_string('config', None, 'Sweep file, path[:arg] (get_config + get_sweep).')
  flags.DEFINE_string('workdir_root', 'runs/sweep', 'Each variant trains in WORKDIR_ROOT/NAME.')
  flags.DEFINE_list('only', [], 'Run only these variant names.')
  flags.DEFINE_bool('dry-run', False, 'Print the variants and commands; run nothing.')
  flags.DEFINE_string('launcher', None, 'Launch script (launch/slurm.sh, launch/tpu_pod.sh, ...) '
                      'given --config, --workdir, --extra and the arguments after "--"; '
                      'default: train locally, one variant after another.')
  flags.mark_flags_as_required(['config'])


def main(argv):
  f = flags.FLAGS
  extra = argv[1:]
  if extra and not f.launcher:
    raise app.UsageError(f'arguments after "--" go to --launcher, but none is given: {extra}')
  try:
    variants = expand(f.config)
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(str(e))
  unknown = set(f.only) - {v.name for v in variants}
  if unknown:
    raise app.UsageError(f'--only: no variant {sorted(unknown)}; the sweep has '
                         f'{[v.name for v in variants]}')
  chosen = [v for v in variants if not f.only or v.name in f.only]
  print(f'sweep {f.config}: {len(chosen)} of {len(variants)} variant(s)')
  for v in chosen:
    cmd = (launcher_command(f.launcher, f.config, v, f.workdir_root, extra) if f.launcher
           else train_command(f.config, v, f.workdir_root))
    print(f'\n[{v.name}] overrides: {v.overrides or "(none)"}\n  {shlex.join(cmd)}', flush=True)
    if not f['dry-run'].value:
      rc = subprocess.call(cmd)
      if rc != 0:
        sys.exit(f'sweep: variant {v.name!r} failed with exit code {rc}; the others after it '
                 'were not started (rerun with --only to continue)')


if __name__ == '__main__':
  define_flags()
  app.run(main)
