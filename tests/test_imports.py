"""Every module of the package imports in one process.

CLI modules define absl flags; two modules defining the same flag at import
time break any process that imports both (a DuplicateFlagError that once
stopped CI at collection). Importing them all together here names the pair.
"""
import importlib
import os
import pkgutil
import subprocess
import sys

import gigagan_jax


def test_all_modules_import_together():
  names = [m.name for m in pkgutil.walk_packages(gigagan_jax.__path__, 'gigagan_jax.')
           if not m.name.endswith('__main__')]
  assert len(names) > 20
  for name in names:
    importlib.import_module(name)


def test_config_validation_imports_no_model_code():
  """Models import config_utils (num_scales, the upsampler checks), so
  validation must not import models: in a fresh process, validating every
  kind of config loads no gigagan_jax module that loading them had not."""
  code = ('import sys; from gigagan_jax.config_utils import load_config, validate; '
          'loaded = lambda: {m for m in sys.modules if m.startswith("gigagan_jax.")}; '
          'configs = [load_config(c) for c in ("configs/t2i_tiny.py", "configs/up_tiny.py", '
          '"configs/sr_baselines.py:srcnn")]; before = loaded(); '
          '[validate(c) for c in configs]; print(sorted(loaded() - before))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert out.stdout.strip() == '[]', out.stdout
