"""gigagan_jax.inference: a run opened for sampling/evaluation reads G_ema and the
config only, never G, D or the optimiser states."""
import jax
import numpy as np
import tensorstore as ts

import cloud
import conftest
from gigagan_jax import inference
from gigagan_jax import parallel
from gigagan_jax.text.tokenizer import make_tokenizer
from gigagan_jax.train import state as state_lib
from gigagan_jax.train.checkpoint import Checkpointer, config_to_dict


def file_bytes_read() -> int:
  """Bytes tensorstore's local-file driver has read in this process so far."""
  for metric in ts.experimental_collect_matching_metrics('/tensorstore/kvstore/file/bytes_read'):
    return int(metric['values'][0]['value'])
  return 0


def test_load_run_reads_g_ema_and_not_the_optimiser_arrays(micro_data_dir, tmp_path):
  """A trainer checkpoint whose every float array holds random values (incompressible,
  as after training: a fresh state's zero Adam moments would compress to nothing).
  load_run returns exactly the saved G_ema and reads about G_ema's bytes from disk;
  restoring the whole state reads over 5x that (G, D, both optimisers' moments)."""
  config = conftest.micro_config(micro_data_dir)
  mesh = parallel.make_mesh(config.mesh, jax.devices()[:1])
  parts = state_lib.build(config, mesh, make_tokenizer(config.text).vocab_size, 0)
  rng = np.random.default_rng(0)  # numpy, not an init program: nothing to compile
  state = jax.tree.map(lambda x: jax.device_put(
      rng.standard_normal(x.shape).astype(x.dtype) if np.issubdtype(x.dtype, np.floating)
      else np.zeros(x.shape, x.dtype), x.sharding), parts.abstract)
  ckpt = Checkpointer(str(tmp_path), config.train)
  ckpt.save(7, state, None, config, force=True)
  ckpt.wait()
  ema_bytes = sum(x.nbytes for x in jax.tree.leaves(state['ema']))

  before = file_bytes_read()
  loaded_config, step, ema = inference.load_run(str(tmp_path))
  ema_only = file_bytes_read() - before
  assert step == 7 and config_to_dict(loaded_config)['generator'] == config_to_dict(config)['generator']
  cloud.assert_trees_equal(jax.device_get(ema), jax.device_get(state['ema']))
  # G_ema's arrays (zstd saves a few % on random floats) plus OCDBT's index nodes.
  assert 0.8 * ema_bytes < ema_only < 1.1 * ema_bytes + 64 * 1024, (ema_only, ema_bytes)

  before = file_bytes_read()
  ckpt.restore(7, parts.abstract)
  whole = file_bytes_read() - before
  ckpt.close()
  assert whole > 5 * ema_only, (whole, ema_only)
