"""All of Orbax in one place: what a checkpoint holds and how it comes back.

A checkpoint (workdir/checkpoints/<step>/) holds
  state   the whole train state (G, D, G_ema, both optimiser states, step,
          PRNG key, skip counters) via StandardSave, restorable onto any mesh
  data    the grain iterator position of every process
  config  the resolved config as JSON (checked on resume)
Saving is asynchronous: the loop goes on while the files are written.
"""
import asyncio
import json

import grain
import jax
import orbax.checkpoint as ocp
# Orbax's definition of "not committed" (local tmp suffix, object-store commit
# file); the same function its cleanup_tmp_directories uses.
from orbax.checkpoint._src.path import temporary_paths

from gigagan_jax import storage
from gigagan_jax.config_utils import FROZEN_LOSS_FIELDS


class ConfigMismatchError(RuntimeError):
  """The workdir holds a run of a different config."""


def config_to_dict(config) -> dict:
  return json.loads(config.to_json())


def diff_configs(saved: dict, current: dict, prefix: str = '',
                 labels: tuple = ('saved ', ', now ')) -> list[str]:
  """'dotted.name: <labels[0]>a<labels[1]>b' for every field whose values differ
  (or exist on one side only)."""
  out = []
  for k in sorted(set(saved) | set(current)):
    a, b = saved.get(k, '<missing>'), current.get(k, '<missing>')
    if isinstance(a, dict) and isinstance(b, dict):
      out += diff_configs(a, b, f'{prefix}{k}.', labels)
    elif a != b:
      out.append(f'{prefix}{k}: {labels[0]}{a!r}{labels[1]}{b!r}')
  return out


# Fields that may change between a run and its resumption (how long, how
# often to log/save, fault injection, the mesh it runs on, how the same
# functions are computed) without making it another experiment.
RESUMABLE_FIELDS = ('mesh.', 'train.steps', 'train.max_minutes', 'train.log_every',
                    'train.sample_every', 'train.ckpt_every', 'train.keep_last',
                    'train.keep_every', 'train.inject_nan_steps', 'train.inject_nan_g_steps',
                    'generator.conv_impl', 'upsampler.conv_impl', 'generator.remat',
                    'discriminator.remat', 'text.feature_cache')


# Loss fields added since the first checkpoints, besides FROZEN_LOSS_FIELDS,
# at the defaults configs/base.py declares.
_ADDED_LOSS_FIELDS = (('matching_in_g', True), ('contrastive_weight', 0.0),
                      ('contrastive_temperature', 0.1), ('d_translate', 0.0))
# Fields added to config.discriminator since runs were first saved; the
# values those runs trained with (the MS-I/O D; the projection D's sizes are
# unused by it).
_ADDED_D_FIELDS = (('kind', 'msio'), ('projection_channels', (128, 256, 512, 512)),
                   ('projection_fc', 512))
# What hard negatives changed before config.data.hard_negative_attributes
# existed: every attribute but position, whose negatives came with the field.
_HARD_NEGATIVE_ATTRIBUTES_BEFORE = ('shape', 'color', 'count', 'size', 'background')


def with_added_defaults(saved: dict) -> dict:
  """A saved config with the fields added since it was written at their
  defaults: config.loss (config_utils.FROZEN_LOSS_FIELDS, _ADDED_LOSS_FIELDS),
  config.discriminator (_ADDED_D_FIELDS), the text encoders'
  sentence_whitening, config.text.whitening_captions,
  config.generator.input_from_w, config.optim.lr_schedule (on the steps' clock),
  config.data.hard_negatives, config.data.hard_negative_attributes and
  config.train.shared_fakes. Those runs trained as the defaults say (those
  losses off, Eq. 8 in G and D, no contrastive term, the MS-I/O D, no
  whitening, a constant input, constant learning rates, no hard negatives, or
  hard negatives of every attribute but position, G's own latents), so
  resuming them is no config change."""
  as_json = lambda v: json.loads(json.dumps(v))  # tuples as the JSON lists
  out = dict(saved)
  if 'loss' in saved:
    loss = out['loss'] = dict(saved['loss'])
    for field, default in [f[:2] for f in FROZEN_LOSS_FIELDS] + list(_ADDED_LOSS_FIELDS):
      loss.setdefault(field, as_json(default))
  if 'discriminator' in saved:
    d = out['discriminator'] = dict(saved['discriminator'])
    for field, default in _ADDED_D_FIELDS:
      d.setdefault(field, as_json(default))
  # Sentence whitening (text/whitening.py): off in every T, and its caption
  # count; G's input the constant alone.
  for block in ('generator', 'upsampler', 'discriminator'):
    if isinstance(out.get(block), dict) and isinstance(out[block].get('text_encoder'), dict):
      out[block] = dict(out[block], text_encoder=dict(out[block]['text_encoder']))
      out[block]['text_encoder'].setdefault('sentence_whitening', False)
  if isinstance(out.get('generator'), dict):
    out['generator'] = dict(out['generator'])
    out['generator'].setdefault('input_from_w', False)
  if 'text' in saved:
    out['text'] = dict(saved['text'])
    out['text'].setdefault('whitening_captions', 4096)
  if 'optim' in saved:
    out['optim'] = dict(saved['optim'])
    out['optim'].setdefault('lr_schedule', [])
    out['optim'].setdefault('lr_schedule_clock', 'steps')
  if 'data' in saved:
    out['data'] = dict(saved['data'])
    out['data'].setdefault('hard_negatives', False)
    out['data'].setdefault('hard_negative_attributes', as_json(_HARD_NEGATIVE_ATTRIBUTES_BEFORE))
  if 'train' in saved:  # G's own latents, as before train.shared_fakes
    out['train'] = dict(saved['train'])
    out['train'].setdefault('shared_fakes', False)
  return out


def unfinished_saves(directory) -> list[str]:
  """Names of the uncommitted checkpoint directories in `directory` (Orbax's own test)."""
  paths = asyncio.run(temporary_paths.all_temporary_paths(directory))
  return sorted(p.get().name for p in paths)


class Checkpointer:
  """Owns the CheckpointManager of a workdir."""

  def __init__(self, workdir, train_cfg):
    # Local or gs://: Orbax writes object stores natively (arrays via tensorstore).
    self.directory = storage.run_path(workdir) / 'checkpoints'
    # A save cut short (SIGKILL, a lost machine) leaves a directory that was
    # never committed: a *.orbax-checkpoint-tmp-* one locally, a step directory
    # without commit_success.txt in an object store. Such a checkpoint is not
    # listed, never restored, and removed here (process 0) so that the same
    # step can be saved again; nothing committed is touched.
    self.unfinished = unfinished_saves(self.directory) if jax.process_index() == 0 else []
    options = ocp.CheckpointManagerOptions(
        max_to_keep=train_cfg.keep_last, keep_period=train_cfg.keep_every or None,
        enable_async_checkpointing=True, create=True, cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'config': ocp.JsonCheckpointHandler(),
                       'data': grain.checkpoint.CheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state, data_iter, config, force: bool = False) -> bool:
    args = {'state': ocp.args.StandardSave(state), 'config': ocp.args.JsonSave(config_to_dict(config))}
    if data_iter is not None:
      args['data'] = grain.checkpoint.CheckpointSave(data_iter)
    return self.manager.save(step, args=ocp.args.Composite(**args), force=force)

  def saved_config(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))['config']

  def check_config(self, step: int, config, allow_change: bool):
    """Refuses to resume a run of another config unless `allow_change`."""
    saved = with_added_defaults(self.saved_config(step))
    diffs = [d for d in diff_configs(saved, config_to_dict(config))
             if not d.split(':')[0].startswith(RESUMABLE_FIELDS)]
    if diffs and not allow_change:
      raise ConfigMismatchError(
          f'{self.directory} holds a run with another config (checkpoint {step}); differing '
          'fields:\n  ' + '\n  '.join(diffs) +
          '\nUse another --workdir, or pass --allow_config_change to resume anyway.')
    return diffs

  def restore(self, step: int, abstract_state, data_iter=None, changed=()):
    """State restored onto the shardings carried by `abstract_state`; the data
    iterator (if given) is set to its saved position in place. `changed`: the
    config fields allowed to differ (check_config's list); if the saved tree
    does not fit `abstract_state`, ConfigMismatchError names them."""
    args = {'state': ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      args['data'] = grain.checkpoint.CheckpointRestore(data_iter)
    try:
      return self.manager.restore(step, args=ocp.args.Composite(**args))['state']
    except ValueError as e:  # Orbax: the saved tree is not the one this config builds
      if not changed:
        raise
      raise ConfigMismatchError(
          f'{self.directory}/{step} cannot be restored into the state this config builds '
          f'(Orbax: {str(e).splitlines()[0]}); one of the changed fields changes what the state '
          'holds (a model or optimiser field):\n  ' + '\n  '.join(changed) +
          '\nResume with those fields as saved, or start in another --workdir.') from e

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()
