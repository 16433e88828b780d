"""A checkpoint written on one mesh restores onto another, both ways (README,
"Resume"): the trainer's Checkpointer saves a sharded state and restores it onto
the shardings of another mesh, values bitwise equal. (2,4,1) -> (1,1,1), with
training on from there, is tested in test_train.py; these add (1,1,1) -> (2,4,1)
and (2,2,2) -> (8,1,1). States are random arrays made in numpy and placed on
the mesh: nothing is compiled."""
import jax
import numpy as np
import pytest

import cloud
import conftest
from gigagan_jax import parallel
from gigagan_jax.text.tokenizer import make_tokenizer
from gigagan_jax.train import state as state_lib
from gigagan_jax.train.checkpoint import Checkpointer


def parts_on(config, mesh_shape):
  config = config.copy_and_resolve_references()
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = mesh_shape
  mesh = parallel.make_mesh(config.mesh, jax.devices()[:int(np.prod(mesh_shape))])
  return state_lib.build(config, mesh, make_tokenizer(config.text).vocab_size, 0)


@pytest.mark.parametrize('source,target', [((1, 1, 1), (2, 4, 1)), ((2, 2, 2), (8, 1, 1))])
def test_checkpoint_restores_onto_another_mesh(micro_data_dir, tmp_path, source, target):
  config = conftest.micro_config(micro_data_dir)
  src, dst = parts_on(config, source), parts_on(config, target)
  rng = np.random.default_rng(0)
  host = jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(x.dtype)
                      if np.issubdtype(x.dtype, np.floating) else np.zeros(x.shape, x.dtype),
                      src.abstract)
  state = jax.tree.map(lambda x, a: jax.device_put(x, a.sharding), host, src.abstract)
  ckpt = Checkpointer(str(tmp_path), config.train)
  try:
    ckpt.save(1, state, None, config, force=True)
    ckpt.wait()
    restored = ckpt.restore(1, dst.abstract)
  finally:
    ckpt.close()
  for x, a in zip(jax.tree.leaves(restored), jax.tree.leaves(dst.abstract)):
    assert x.sharding == a.sharding  # laid out as the target mesh says
  # The meshes really lay the weights out differently (else this proves nothing).
  moved = [not x.sharding.is_equivalent_to(y.sharding, x.ndim)
           for x, y in zip(jax.tree.leaves(restored['g']), jax.tree.leaves(state['g']))]
  assert sum(moved) > len(moved) // 2, (sum(moved), len(moved))
  cloud.assert_trees_equal(jax.device_get(restored), host)
