"""python -m gigagan_jax.train --config=configs/t2i_tiny.py --workdir=runs/tiny

Flags:
  --config               experiment config file (override fields with --config.a.b=value)
  --workdir              run directory: checkpoints/, samples/, TensorBoard events, metrics.jsonl;
                         an existing run there is resumed
  --allow_config_change  resume even though the config differs from the saved one
  --coordinator_address, --num_processes, --process_id
                         multi-process training: passed to jax.distributed.initialize
                         (on TPU pods and SLURM, --distributed alone auto-detects them)
  --distributed          call jax.distributed.initialize() with auto-detection
  --cpu_collectives      'gloo' for multi-process CPU runs (tests, laptops)
  --compile_only         compile the train step for config.mesh on the visible devices, print
                         its per-device memory (as python -m gigagan_jax.plan does) and exit;
                         reads no data and needs no backbone weights
  --verbosity            absl log level; default: warnings only (0 shows Orbax/TFDS INFO logs)

On Linux it first re-executes itself with glibc.malloc.hugetlb=1 added to
GLIBC_TUNABLES (runtime.reexec_with_huge_pages; CPU steps 17-27% faster, BENCHMARKS.md).
"""
import sys

from gigagan_jax import runtime

if __name__ == '__main__':
  runtime.reexec_with_huge_pages()  # before jax allocates anything

import jax  # pylint: disable=g-import-not-at-top
from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (resumed if it holds a run).')
_ALLOW = flags.DEFINE_bool('allow_config_change', False,
                           'Resume although the saved config differs.')
_COORD = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0.')
_NUM = flags.DEFINE_integer('num_processes', None, 'Number of processes.')
_PID = flags.DEFINE_integer('process_id', None, 'Index of this process.')
_DIST = flags.DEFINE_bool('distributed', False, 'jax.distributed.initialize() with auto-detection.')
_CPU_COLL = flags.DEFINE_string('cpu_collectives', None, "CPU collectives, e.g. 'gloo'.")
_COMPILE_ONLY = flags.DEFINE_bool('compile_only', False,
                                  'Compile the step, print its memory per device, and exit.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  runtime.quiet_gc()
  if not flags.FLAGS['verbosity'].present:
    # Orbax and TFDS log every save/read at INFO; keep the console to our progress lines.
    logging.set_verbosity(logging.WARNING)
  if _CPU_COLL.value:
    jax.config.update('jax_cpu_collectives_implementation', _CPU_COLL.value)
  if _COORD.value:
    jax.distributed.initialize(coordinator_address=_COORD.value, num_processes=_NUM.value,
                               process_id=_PID.value)
  elif _DIST.value:
    jax.distributed.initialize()
  if _COMPILE_ONLY.value:
    from gigagan_jax import parallel, plan
    shape = parallel.mesh_shape(_CONFIG.value.mesh, jax.device_count())
    print(plan.format_plan(plan.plan(_CONFIG.value, dict(zip(parallel.MESH_AXES, shape)))))
    return
  from gigagan_jax.storage import StorageError
  from gigagan_jax.train.loop import train  # after distributed init: it queries devices
  try:
    train(_CONFIG.value, _WORKDIR.value, allow_config_change=_ALLOW.value)
  except StorageError as e:  # a missing bucket, no write access: the message says it all
    sys.exit(f'train: error: {e}')


if __name__ == '__main__':
  app.run(main)
