"""The training system on 8 fake CPU devices (tests/conftest.py).

Sharded vs single-device steps, SIGKILL + resume vs a straight run, restore
onto another mesh, non-finite steps, and the refusal to resume a
different config. (Two processes vs one: test_preemption.py.) Everything uses configs/t2i_micro.py on
a 256-image captioned_shapes build.
"""
import json
import os
import shutil
import threading

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cloud
import conftest
import test_exits
from gigagan_jax import parallel
from gigagan_jax.config_utils import validate
from gigagan_jax.data.pipeline import make_dataset
from gigagan_jax.text.tokenizer import make_tokenizer
from gigagan_jax.train import loop
from gigagan_jax.train import state as state_lib
from gigagan_jax.train.checkpoint import Checkpointer, ConfigMismatchError
from gigagan_jax.train.step import BATCH_NDIMS, all_finite, jit_train_step, make_train_step
from gigagan_jax.train.writers import drop_records_after

pytestmark = pytest.mark.slow


@pytest.fixture(scope='session')
def data_dir(micro_data_dir):
  return micro_data_dir


def micro_config(data_dir, overrides=None):
  config = conftest.micro_config(data_dir)
  config.update_from_flattened_dict(overrides or {})
  return validate(config)


def single_device():
  return jax.devices()[:1]


def mesh_parts(config, mesh_shape, feature_dim: int = 0):
  """(mesh, tokenizer, Parts) for `config` on the first prod(mesh_shape) devices;
  feature_dim: the backbone features' width (0: no backbone)."""
  config = config.copy_and_resolve_references()
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = mesh_shape
  mesh = parallel.make_mesh(config.mesh, jax.devices()[:int(np.prod(mesh_shape))])
  tokenizer = make_tokenizer(config.text)
  return mesh, tokenizer, state_lib.build(config, mesh, tokenizer.vocab_size, feature_dim)


def assert_trees_close(a, b, rtol, atol, outlier_atol=None):
  """outlier_atol: up to 0.1% of a leaf's elements may be off by this much instead.
  Adam (beta1 0) moves a weight whose gradient is float32 rounding noise (one
  such D weight in t2i_micro's first step: |g| 7e-9, median 7e-3) by about its
  learning rate, in a direction that the reduction order, i.e. the mesh, picks."""
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    off = ~np.isclose(x, y, rtol=rtol, atol=atol)
    if outlier_atol and off.mean() <= 1e-3 and np.all(np.abs(x - y)[off] <= outlier_atol):
      continue
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path))


# ------------------------------------------------------------ sharded steps

# This module is the longest of the suite: its independent parts run in their
# own xdist groups (tests/conftest.py), so the two workers share it. The steps of
# t2i_micro on (1,1,1) and (2,4,1), in this process's XLA setup, are also those
# of test_plan.py's CLI, test_train_step.py and test_exits.py: one group, each
# program compiled once (persistent cache).
@pytest.mark.xdist_group('micro_programs')
def test_sharded_steps_match_single_device_and_restore_across_meshes(data_dir, micro_step,
                                                                     tmp_path):
  """Three steps on (2,4,1) equal three on (1,1,1); the (2,4,1) state, saved and
  restored onto (1,1,1) by the Checkpointer, then trained three more steps there,
  equals six steps on (1,1,1). Two compiled programs in all. (Tensor parallelism:
  the (2,2,2) mesh of test_train_frozen_losses.py, with every loss on.)"""
  config = micro_config(data_dir)
  tokenizer = make_tokenizer(config.text)
  data = make_dataset(config.data, tokenize=tokenizer, seed=0, process_index=0, process_count=1)
  batches = [{k: b[k] for k in BATCH_NDIMS} for b in (next(data) for _ in range(6))]

  def compiled(mesh_shape):
    mesh, _, parts = mesh_parts(config, mesh_shape)
    return mesh, parts, jit_train_step(
        make_train_step(parts.g, parts.d, parts.g_tx, parts.d_tx, config), parts.shardings, mesh)

  def run(mesh, step, state, batches):
    losses = []
    for batch in batches:
      state, metrics = step(state, parallel.global_batch(batch, mesh), {})
      losses.append([float(metrics[k]) for k in ('d_loss', 'g_loss', 'r1')])
    return state, np.array(losses)

  _, mesh1, parts1, step1 = micro_step
  state, ref_losses = run(mesh1, step1, parts1.init(config), batches[:3])
  ref_state = jax.device_get(state)
  ref_state6, ref_losses6 = jax.device_get(run(mesh1, step1, state, batches[3:]))
  assert np.all(np.isfinite(ref_losses)) and ref_losses[0, 2] > 0  # R1 ran at step 0
  outlier_atol = 2 * 3 * max(config.optim.g_lr, config.optim.d_lr)
  # (2,4,1) shards data (2) and weights (fsdp 4); a pure data-parallel (8,1,1)
  # mesh adds no path that it misses.
  mesh, parts, step = compiled((2, 4, 1))
  state, losses = run(mesh, step, parts.init(config), batches[:3])
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-4, atol=1e-5)
  for key in ('g', 'd', 'ema'):
    assert_trees_close(jax.device_get(state[key]), ref_state[key], rtol=1e-3, atol=2e-5,
                       outlier_atol=outlier_atol)
  # FSDP=4: each device holds a quarter of every fsdp-sharded weight.
  params = {'g': state['g'], 'd': state['d']}
  sharded = [x for x in jax.tree.leaves(params) if 'fsdp' in jax.tree.leaves(
      tuple(x.sharding.spec))]
  total = sum(x.nbytes for x in sharded)
  per_device = parallel.param_bytes_per_device(sharded)
  assert len(per_device) == 8
  for nbytes in per_device.values():
    assert nbytes == total // 4
  # and the sharded weights are nearly all of the parameter bytes
  assert total > 0.8 * sum(x.nbytes for x in jax.tree.leaves(params))

  # The fsdp checkpoint restores onto one device and trains on from there.
  ckpt = Checkpointer(str(tmp_path), config.train)
  ckpt.save(3, state, None, config, force=True)
  ckpt.wait()
  restored = ckpt.restore(3, parts1.abstract)
  ckpt.close()
  assert all(x.sharding.mesh.devices.size == 1 for x in jax.tree.leaves(restored['g']))
  state6, losses6 = jax.device_get(run(mesh1, step1, restored, batches[3:]))
  np.testing.assert_allclose(losses6, ref_losses6, rtol=1e-3, atol=1e-4)
  for key in ('g', 'd', 'ema'):  # six Adam steps of rounding-noise outliers (see above)
    assert_trees_close(state6[key], ref_state6[key], rtol=1e-2, atol=1e-4,
                       outlier_atol=2 * outlier_atol)


# ------------------------------------------------------- resume, restore

# straight_run: tests/conftest.py. SIGKILL and resume, bitwise: test_crash.py (killed
# during a save) and test_gcs.py (killed after one, in gs://).

def test_refuses_to_resume_another_config(data_dir, straight_run):
  changed = micro_config(data_dir, {'loss.r1_gamma': 1.0, 'train.steps': 7})
  with pytest.raises(ConfigMismatchError, match=r'loss\.r1_gamma: saved 0\.2048, now 1\.0'):
    loop.train(changed, straight_run, devices=single_device())
  # train.steps alone is not a different experiment (asserted by the resume above).


def test_allow_config_change_resumes_and_names_the_change(data_dir, straight_run, tmp_path,
                                                          capsys):
  workdir = str(tmp_path / 'changed')
  shutil.copytree(straight_run, workdir)
  changed = micro_config(data_dir, {'loss.r1_gamma': 1.0})  # steps: 6, all done
  loop.train(changed, workdir, allow_config_change=True, devices=single_device())
  out = capsys.readouterr().out
  assert f'resumed from {workdir}/checkpoints/6 (config changed: loss.r1_gamma: saved 0.2048, ' \
         'now 1.0)' in out, out


def test_allowed_change_of_the_state_s_shape_names_the_field(data_dir, straight_run, tmp_path):
  """A learning-rate schedule adds a step count to Adam's state: even with
  allow_config_change the saved state cannot be restored into it. The error
  names the changed field, not only Orbax's tree mismatch, and the saved
  checkpoints are left as they were."""
  workdir = str(tmp_path / 'scheduled')
  shutil.copytree(straight_run, workdir)
  changed = micro_config(data_dir, {'optim.lr_schedule': ((3, 1.0), (6, 0.5))})
  with pytest.raises(ConfigMismatchError, match=r'(?s)cannot be restored.*optim\.lr_schedule'):
    loop.train(changed, workdir, allow_config_change=True, devices=single_device())
  assert sorted(os.listdir(f'{workdir}/checkpoints')) == sorted(
      os.listdir(f'{straight_run}/checkpoints'))


# ------------------------------------------------------- SIGTERM, NaN

# One NaN element in G's gradients at step 2 and in D's at steps 4-6
# (config.train.inject_nan_g_steps / inject_nan_steps); three skips in a row
# restore checkpoint 3. (The loop and the direct step compile different programs.)
NAN_DRILL = {'train.inject_nan_g_steps': (2,), 'train.inject_nan_steps': (4, 5, 6),
             'train.max_consecutive_skips': 3, 'train.steps': 8}


@pytest.mark.crash
@pytest.mark.xdist_group('train_faults')
def test_non_finite_steps_are_skipped_then_restored(data_dir, tmp_path, capsys):
  workdir = str(tmp_path / 'nan')
  loop.train(micro_config(data_dir, NAN_DRILL), workdir, devices=single_device())
  out = capsys.readouterr().out
  assert 'no checkpoint in the middle of non-finite steps' in out  # step 6
  assert 'restored checkpoint 3 and continue from step 3' in out
  log = cloud.logged(workdir)
  step, skipped = log[:, 0], log[:, cloud.LOGGED.index('skipped')]
  assert step.tolist() == [1, 2, 3, 4, 5, 6, 4, 5, 6, 7, 8]
  assert skipped.tolist() == [0, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0]
  final = cloud.saved_state(micro_config(data_dir, NAN_DRILL), workdir, 8)
  assert int(final['total_skips']) == 4
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(final['g']))

  # Without a checkpoint to go back to, the run stops with a clear error, and
  # leaves no thread running (test_exits.py: the other ways out).
  no_ckpt = micro_config(data_dir, dict(NAN_DRILL, **{'train.ckpt_every': 100}))
  before = set(threading.enumerate())
  with pytest.raises(loop.NonFiniteError, match='3 consecutive non-finite steps .* no checkpoint'):
    loop.train(no_ckpt, str(tmp_path / 'nan_no_ckpt'), devices=single_device())
  assert test_exits.new_threads(before) == []


@pytest.mark.crash
@pytest.mark.xdist_group('train_faults')
def test_a_nan_in_g_or_d_gradients_leaves_the_state_bitwise_unchanged(data_dir):
  """The step itself, not the loop's rollback: a skipped step changes no weight,
  EMA or optimiser state and counts the skip; the finite steps around it do
  change them (so the comparison could fail)."""
  config = micro_config(data_dir, NAN_DRILL)
  mesh, tokenizer, parts = mesh_parts(config, (1, 1, 1))
  step = jit_train_step(make_train_step(parts.g, parts.d, parts.g_tx, parts.d_tx, config),
                        parts.shardings, mesh)
  data = make_dataset(config.data, tokenize=tokenizer, seed=0, process_index=0, process_count=1)
  trained = ('g', 'd', 'ema', 'g_opt', 'd_opt')
  state = parts.init(config)
  for n in range(1, 5):  # G's fault at step 2, D's at step 4
    before = jax.device_get(state)  # the step donates its input
    batch = parallel.global_batch({k: v for k, v in next(data).items() if k in BATCH_NDIMS}, mesh)
    state, metrics = step(state, batch, {})
    after = jax.device_get(state)
    changed = {k: [not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(before[k]),
                                                             jax.tree.leaves(after[k]))]
               for k in trained}
    if n in (2, 4):
      assert bool(metrics['skipped']) and int(after['skips']) == 1, n
      assert int(after['total_skips']) == n // 2, n
      assert not any(any(c) for c in changed.values()), (n, changed)
      norm = 'g_grad_norm' if n == 2 else 'd_grad_norm'
      assert np.isnan(metrics[norm]) and np.isfinite(metrics['d_loss']), (n, metrics)
    else:
      assert not bool(metrics['skipped']) and int(after['skips']) == 0, n
      assert all(any(c) for c in changed.values()), (n, changed)
    assert int(after['step']) == n


@pytest.mark.crash
def test_the_finite_check_keeps_finite_gradients_whose_squares_overflow():
  big = {'w': jnp.full((4, 4), 3e19, jnp.float32), 'b': jnp.ones(3, jnp.float32)}
  assert float(optax.tree.norm(big)) == np.inf  # a sum of squares would call it non-finite
  assert bool(all_finite(big, jnp.float32(1.0)))
  for bad in (np.nan, np.inf, -np.inf):
    assert not bool(all_finite(big, {'x': jnp.array([0.0, bad, 1.0])})), bad


def test_a_resumed_run_drops_the_metrics_records_it_replays(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  assert drop_records_after(str(path), 3) == 0 and not path.exists()  # a first run
  path.write_text(''.join(f'{{"step": {s}, "d_loss": {s / 10}}}\n' for s in (2, 4, 6, 8)))
  assert drop_records_after(str(path), 4) == 2
  assert [json.loads(l)['step'] for l in path.read_text().splitlines()] == [2, 4]
  assert drop_records_after(str(path), 4) == 0
