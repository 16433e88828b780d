"""Process-wide settings of the command-line programs."""
import gc
import os
import sys

# XLA:CPU allocates each step's temporaries (t2i_tiny: ~160 MB) with
# malloc, which glibc serves from fresh mmap'd pages and unmaps again after
# the step: every step faults them in 4 KiB at a time. Backed by transparent
# huge pages (glibc >= 2.35; older ones ignore the name) the faults drop
# threefold; t2i_tiny.py:long's step, 2-core VM: 276 against 378 ms (median),
# 315 against 379 ms (mean with R1), bitwise the same losses.
MALLOC_TUNABLE = 'glibc.malloc.hugetlb=1'


def reexec_with_huge_pages():
  """Restarts this process (same interpreter and arguments) with MALLOC_TUNABLE
  added to GLIBC_TUNABLES, which glibc reads only at start-up; a no-op where it
  is already there and off Linux. Call it first, before any work."""
  tunables = os.environ.get('GLIBC_TUNABLES', '')
  if sys.platform != 'linux' or MALLOC_TUNABLE.split('=')[0] in tunables:
    return
  env = dict(os.environ, GLIBC_TUNABLES=':'.join(filter(None, (tunables, MALLOC_TUNABLE))))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def quiet_gc():
  """Makes CPython's cyclic garbage collector run rarely.

  Tracing a train step allocates millions of short-lived objects; with the
  default gen-0 threshold (700) the collector then runs thousands of times per
  trace. Measured on t2i_micro (2-core CPU, compile cache warm): 3 s of a 20 s
  training run, and a quarter of the step's tracing time. Reference counting
  still frees everything that is not in a cycle. Objects alive now (the
  imported modules) are moved out of the collector's sight (gc.freeze).
  """
  gc.freeze()
  gc.set_threshold(50_000, 20, 20)
