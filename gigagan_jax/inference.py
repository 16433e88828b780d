"""Opening a trained run for inference: its config and G_ema, nothing else.

sample, upsample and evaluate read runs only through this module. A
checkpoint holds the whole train state (G, D, G_ema, both optimiser states:
about 5x G_ema's bytes for the paper model); inference restores the `ema`
subtree alone, an Orbax partial restore, so the other arrays are never read.
Runs may live on local disk or in object storage (gs://).
"""
import contextlib

import jax
import ml_collections
import orbax.checkpoint as ocp

from gigagan_jax import parallel
from gigagan_jax import storage
from gigagan_jax.config_utils import validate
from gigagan_jax.text.backbone import make_backbone
from gigagan_jax.text.tokenizer import make_tokenizer
from gigagan_jax.train import state as state_lib


class NoCheckpointError(FileNotFoundError):
  """The workdir holds no (complete) checkpoint to read."""


def _manager(workdir) -> ocp.CheckpointManager:
  """A read-only view of WORKDIR/checkpoints: creates and deletes nothing."""
  directory = storage.run_path(workdir) / 'checkpoints'
  if not directory.exists():
    raise NoCheckpointError(f'no checkpoints/ in {storage.run_path(workdir)}; train first or '
                            'fix --workdir')
  options = ocp.CheckpointManagerOptions(read_only=True, create=False)
  # PyTreeCheckpointHandler reads what the trainer's StandardCheckpointHandler
  # wrote (the same format) and can restore a subtree (partial_restore).
  return ocp.CheckpointManager(
      directory, options=options,
      item_handlers={'state': ocp.PyTreeCheckpointHandler(),
                     'config': ocp.JsonCheckpointHandler()})


def _steps(manager, workdir) -> list[int]:
  steps = sorted(manager.all_steps())
  if not steps:
    raise NoCheckpointError(
        f'no complete checkpoint in {storage.run_path(workdir) / "checkpoints"}; train first '
        'or fix --workdir')
  return steps


def _restore_config(manager, workdir, step: int | None):
  """(validated config, step) of checkpoint `step` (default: latest) through `manager`."""
  steps = _steps(manager, workdir)
  step = steps[-1] if step is None else step
  if step not in steps:
    raise NoCheckpointError(f'no checkpoint {step} in {storage.run_path(workdir)}/checkpoints; '
                            f'there are {steps}')
  saved = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
  config = ml_collections.ConfigDict(saved['config'])
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 1
  return validate(config), step


def checkpoint_steps(workdir) -> list[int]:
  """Steps of the run's complete checkpoints, ascending; NoCheckpointError when there are none."""
  with contextlib.closing(_manager(workdir)) as manager:
    return _steps(manager, workdir)


def run_config(workdir, step: int | None = None):
  """(validated config, step) of checkpoint `step` (default: latest), for one device."""
  with contextlib.closing(_manager(workdir)) as manager:
    return _restore_config(manager, workdir, step)


def abstract_ema(config, mesh):
  """ShapeDtypeStructs of G_ema's params on `mesh` (shapes only, nothing allocated)."""
  backbone = make_backbone(config.text)
  parts = state_lib.build(config, mesh, make_tokenizer(config.text).vocab_size,
                          backbone.dim if backbone is not None else 0)
  return parts.abstract['ema']


def load_run(workdir, step: int | None = None):
  """(config, step, G_ema params) of checkpoint `step` (default: latest), on one device.

  Reads the config and the `ema` arrays of the checkpoint; G, D and both
  optimiser states stay unread.
  """
  with contextlib.closing(_manager(workdir)) as manager:  # one listing of the run
    config, step = _restore_config(manager, workdir, step)
    mesh = parallel.make_mesh(config.mesh, jax.devices()[:1])
    target = {'ema': abstract_ema(config, mesh)}
    restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), target)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=restore_args, partial_restore=True)))
  return config, step, restored['state']['ema']
