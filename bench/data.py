r"""Input-pipeline throughput: examples/s of make_dataset on CPU.

  python bench/data.py [--resolutions=64,256] [--workers=0,1,2] [--seconds=4] [--sr]

Builds small captioned_shapes sets (cached in --data_dir), then for every
(resolution, num_workers) pulls batches for about --seconds after a warm-up
(worker start-up excluded) and prints examples/s. --sr adds the Real-ESRGAN
pair generation (HR 256 crop -> LR 64) on the 256 px data. Takes about a
minute with the defaults (plus ~20 s for the first build).
"""
import os
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import base  # pylint: disable=g-import-not-at-top,wrong-import-position
from gigagan_jax.data import degrade  # pylint: disable=g-import-not-at-top,wrong-import-position
from gigagan_jax.data import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_list('resolutions', ['64', '256'], 'captioned_shapes resolutions to time.')
flags.DEFINE_list('workers', ['0', '1', '2'], 'data.num_workers values (0 = in-process).')
flags.DEFINE_integer('batch_size', 32, 'Global batch (one process).')
flags.DEFINE_integer('num_examples', 2000, 'Examples to build per resolution.')
flags.DEFINE_float('seconds', 3.0, 'Timed seconds per setting.')
flags.DEFINE_bool('sr', False, 'Also time SR pairs (degradation) on the 256 px data.')
flags.DEFINE_string('data_dir', os.path.join(tempfile.gettempdir(), 'gigagan_bench_data'),
                    'Where the benchmark datasets are built (reused across runs).')


def tokenize(captions):
  """Byte tokenizer stand-in (the text package's tokenizers cost about the same)."""
  tokens = np.zeros((len(captions), 32), np.int32)
  for i, c in enumerate(captions):
    b = np.frombuffer(c.encode()[:31], np.uint8)
    tokens[i, :len(b)] = b
  return {'tokens': tokens, 'eot': (tokens > 0).sum(1).astype(np.int32)}


def measure(cfg, seconds, degradation=None):
  it = pipeline.make_dataset(cfg, tokenize=tokenize, seed=0, process_index=0, process_count=1,
                             degradation=degradation)
  try:
    for _ in range(2):  # warm-up: worker start, first reads
      next(it)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
      n += len(next(it)['image'])
    return n / (time.perf_counter() - t0)
  finally:
    if hasattr(it, 'close'):
      it.close()


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)  # TFDS logs every builder it opens
  print(f'CPU cores: {os.cpu_count()}, batch {FLAGS.batch_size}, data in {FLAGS.data_dir}')
  print(f'{"setting":<34} {"workers":>7} {"examples/s":>11}')
  for res in map(int, FLAGS.resolutions):
    cfg = base.get_base_config().data
    cfg.data_dir, cfg.resolution, cfg.num_examples = FLAGS.data_dir, res, FLAGS.num_examples
    cfg.batch_size = FLAGS.batch_size
    pipeline.ensure_dataset(cfg)
    for w in map(int, FLAGS.workers):
      cfg.num_workers = w
      print(f'{f"captioned_shapes {res}px":<34} {w:>7} {measure(cfg, FLAGS.seconds):>11.0f}',
            flush=True)
    if FLAGS.sr and res >= 256:
      d = degrade.degradation_config()  # HR 256 crop, x4
      for w in map(int, FLAGS.workers):
        cfg.num_workers = w
        print(f'{f"SR pairs {res}->{res // d.scale}px (Real-ESRGAN)":<34} {w:>7} '
              f'{measure(cfg, FLAGS.seconds, d):>11.0f}', flush=True)


if __name__ == '__main__':
  app.run(main)
