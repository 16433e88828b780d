"""Every module of the package imports in one process.

CLI modules define absl flags; two modules defining the same flag at import
time break any process that imports both (a DuplicateFlagError that once
stopped CI at collection). Importing them all together here names the pair.
"""
import importlib
import pkgutil

import gigagan_jax


def test_all_modules_import_together():
  names = [m.name for m in pkgutil.walk_packages(gigagan_jax.__path__, 'gigagan_jax.')
           if not m.name.endswith('__main__')]
  assert len(names) > 20
  for name in names:
    importlib.import_module(name)
