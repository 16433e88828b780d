r"""Bytes read from disk to open a run for inference: the whole train state vs G_ema only.

  python bench/restore_bytes.py [--config=configs/t2i_tiny.py] [--workdir=/tmp/restore_bytes]

Saves a state of the config (random values in every float array, as
incompressible as a trained state's) as the trainer does (one device), then restores it twice and prints the
bytes tensorstore's file driver read: `Checkpointer.restore` of the whole state
(what sample/evaluate/upsample did before gigagan_jax.inference) and
`inference.load_run` (G_ema and the config only). Also prints the arrays'
in-memory bytes per part of the state. Takes well under a minute for t2i_tiny.
"""
import os
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging
import jax
import tensorstore as ts

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gigagan_jax import inference, parallel  # pylint: disable=g-import-not-at-top,wrong-import-position
from gigagan_jax.config_utils import load_config, validate  # pylint: disable=g-import-not-at-top,wrong-import-position
from gigagan_jax.text.backbone import make_backbone  # pylint: disable=g-import-not-at-top,wrong-import-position
from gigagan_jax.text.tokenizer import make_tokenizer  # pylint: disable=g-import-not-at-top,wrong-import-position
from gigagan_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from gigagan_jax.train.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string('config', 'configs/t2i_tiny.py', 'Training config whose state is saved.')
flags.DEFINE_string('workdir', None, 'Where to save it (default: a temporary directory).')


def file_bytes_read() -> int:
  """Bytes read so far by tensorstore's local-file key-value store (process total)."""
  for metric in ts.experimental_collect_matching_metrics('/tensorstore/kvstore/file/bytes_read'):
    return int(metric['values'][0]['value'])
  return 0


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = validate(load_config(FLAGS.config))
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, 1, 1
  workdir = FLAGS.workdir or tempfile.mkdtemp(prefix='restore_bytes_')
  mesh = parallel.make_mesh(config.mesh, jax.devices()[:1])
  backbone = make_backbone(config.text)
  parts = state_lib.build(config, mesh, make_tokenizer(config.text).vocab_size,
                          backbone.dim if backbone is not None else 0)
  state = parts.init(config)
  # A fresh state's Adam moments are zeros, which compress to almost nothing;
  # after training every array is as incompressible as random values.
  keys = iter(jax.random.split(jax.random.PRNGKey(0), len(jax.tree.leaves(state))))
  state = jax.tree.map(lambda x: jax.random.normal(next(keys), x.shape, x.dtype).astype(x.dtype)
                       if jax.numpy.issubdtype(x.dtype, jax.numpy.floating) else x, state)
  for key in sorted(state):
    nbytes = sum(x.nbytes for x in jax.tree.leaves(state[key]))
    print(f'{key:12s} {nbytes / 2**20:9.2f} MiB in memory')
  ckpt = Checkpointer(workdir, config.train)
  ckpt.save(1, state, None, config, force=True)
  ckpt.wait()

  # G_ema first: anything a first restore left in a cache could only lower
  # the second count, so the saving printed is never overstated.
  before = file_bytes_read()
  inference.load_run(workdir, 1)
  ema_only = file_bytes_read() - before
  before = file_bytes_read()
  ckpt.restore(1, parts.abstract)  # the whole state, as sample/evaluate did
  whole = file_bytes_read() - before
  ckpt.close()
  print(f'{FLAGS.config}: whole-state restore read {whole / 2**20:.2f} MiB ({whole} bytes); '
        f'inference.load_run read {ema_only / 2**20:.2f} MiB ({ema_only} bytes), '
        f'{whole / max(ema_only, 1):.1f}x less')


if __name__ == '__main__':
  app.run(main)
