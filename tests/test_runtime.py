"""Process-wide settings of the command-line programs (gigagan_jax/runtime.py)."""
import json
import os
import subprocess
import sys

import pytest

from gigagan_jax import runtime

# Prints 'started' (twice in all when it re-executes), calls
# runtime.reexec_with_huge_pages, then reports what the process that goes on
# sees: its tunables, arguments and the interpreter's -X utf8 option.
_PROBE = ('import json, os, sys\n'
          'from gigagan_jax import runtime\n'
          'print("started", flush=True)\n'
          'runtime.reexec_with_huge_pages()\n'
          'print(json.dumps([os.environ.get("GLIBC_TUNABLES"), sys.argv[1:],\n'
          '                  sys.flags.utf8_mode]))\n')


def _run_probe(tmp_path, tunables):
  script = tmp_path / 'probe.py'
  script.write_text(_PROBE)
  env = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
  if tunables is not None:
    env['GLIBC_TUNABLES'] = tunables
  out = subprocess.run([sys.executable, '-X', 'utf8', str(script), 'a', '--b=c d'], env=env,
                       capture_output=True, text=True, check=True, timeout=60).stdout.splitlines()
  return out[:-1], json.loads(out[-1])


@pytest.mark.parametrize('given, expected', [
    (None, runtime.MALLOC_TUNABLE),
    ('glibc.malloc.arena_max=2', 'glibc.malloc.arena_max=2:' + runtime.MALLOC_TUNABLE)])
def test_reexec_adds_the_tunable_keeps_others_and_the_command_line(tmp_path, given, expected):
  started, (tunables, argv, utf8_mode) = _run_probe(tmp_path, given)
  assert started == ['started', 'started']  # ran twice: before and after the exec
  assert tunables == expected
  assert argv == ['a', '--b=c d'] and utf8_mode == 1


def test_reexec_respects_a_hugetlb_setting_of_the_user(tmp_path):
  started, (tunables, _, _) = _run_probe(tmp_path, 'glibc.malloc.hugetlb=0')
  assert started == ['started']  # no exec
  assert tunables == 'glibc.malloc.hugetlb=0'
