"""The training program: one readable function in stages.

  mesh -> text -> models & shardings -> input -> checkpoint (resume) ->
  writers -> loop (step, log, sample, save; preemption and non-finite guards)

The same code runs on one CPU, on 8 fake CPU devices in tests, on a GPU node
and on every host of a TPU pod (each process feeds its own shard of the batch).
"""
import contextlib
import json
import os
import signal
import time

import jax
import numpy as np
from jax._src import distributed as jax_distributed
from jax.experimental import multihost_utils

from gigagan_jax import parallel
from gigagan_jax import storage
from gigagan_jax.config_utils import ConfigError, sentence_whitening_blocks, validate
from gigagan_jax.data import captioned_shapes
from gigagan_jax.data import pipeline
from gigagan_jax.data.pipeline import ensure_dataset, make_dataset
from gigagan_jax.frozen import lpips
from gigagan_jax.models.build import z_dim
from gigagan_jax.text.backbone import make_backbone
from gigagan_jax.text.feature_cache import FeatureCache
from gigagan_jax.text import whitening
from gigagan_jax.text.tokenizer import make_tokenizer
from gigagan_jax.train import samples as samples_lib
from gigagan_jax.train import frozen_losses
from gigagan_jax.train import state as state_lib
from gigagan_jax.train.checkpoint import Checkpointer, unfinished_saves
from gigagan_jax.train.sr_step import make_sr_train_step
from gigagan_jax.train.step import batch_ndims, feature_cache_on, jit_train_step, make_train_step
from gigagan_jax.train.writers import NullWriter, TensorBoardWriter, drop_records_after


# Metrics on the progress line: (label, metric, decimals); absent ones are left out.
_LOG_FIELDS = (('d', 'd_loss', 3), ('g', 'g_loss', 3), ('pixel', 'pixel', 4),
               ('lpips', 'lpips', 4), ('clip', 'clip', 3), ('d_va', 'd_va', 3),
               ('g_va', 'g_va', 3), ('r1', 'r1', 4), ('acc', 'd_acc', 2),
               ('lr', 'lr_multiplier', 3))


class NonFiniteError(RuntimeError):
  """Training kept producing non-finite losses and there is nothing to restore."""


def _lpips_params(loss_cfg) -> dict:
  """LPIPS-VGG params for the SR perceptual loss, from the npz at loss.lpips_path."""
  path = loss_cfg.lpips_path
  if not path or not os.path.isfile(path):
    raise ConfigError(
        f'config.loss.lpips_path={path!r} is not a file; the LPIPS loss needs converted '
        'VGG16 + linear-head weights (python -m gigagan_jax.frozen.lpips LIN.pth VGG16.pth '
        'OUT.npz), or set config.loss.lpips_weight=0')
  return lpips.load_params_npz(path)


# The jitted train steps of this process, newest last. A step is a function of
# the experiment's config and the mesh alone (models, optimisers, shardings and
# the frozen networks' structure all derive from them; weights are arguments),
# so another train() of the same experiment in this process (a resume, a rerun
# in a notebook or a test) reuses it: no second trace, lowering and load of the
# compiled program (~8 s of t2i_micro's start on 2 CPU cores).
_STEPS: dict = {}
_STEPS_KEPT = 2


def _fit_whitening(state, config, backbone, tokenizer, cache):
  """`state` with T's sentence-whitening statistics fitted on the training
  captions (text/whitening.py), in G, D and the EMA alike; a fresh run only:
  a resumed one restores them with the parameters. With the feature cache
  (or None) the captions' features are computed into it."""
  start = time.time()
  captions = pipeline.read_captions(config.data, config.text.whitening_captions)
  stats = whitening.fit_captions(backbone, tokenizer, captions, cache=cache)
  kept = int(np.count_nonzero(np.abs(stats[whitening.MATRIX]).sum(0)))
  _say(f'sentence whitening: fitted on {len(captions)} training captions, {kept} of '
       f'{len(stats[whitening.MEAN])} directions kept ({time.time() - start:.1f} s)')
  return dict(state, **{k: whitening.set_stats(state[k], stats) for k in ('g', 'd', 'ema')})


def _cache_counterfactuals(config, tokenizer, cache, block: int = 256):
  """Computes into `cache` the features of every counterfactual of the training
  captions (data.hard_negatives) in data.hard_negative_attributes, fresh or
  resumed: drawn a few per epoch, they would otherwise miss for most of a run,
  a padded block of 16 rows per step (t2i_tiny: 48-60 against 75 img/s)."""
  start = time.time()
  captions = sorted(set(pipeline.read_captions(config.data, None)))
  attributes = pipeline.hard_negative_attributes(config.data)
  negatives = sorted({c for caption in captions
                      for a, cs in captioned_shapes.counterfactuals(caption).items()
                      if a in attributes for c in cs})
  for i in range(0, len(negatives), block):
    text = tokenizer(negatives[i:i + block])
    cache(np.asarray(text['tokens']), np.asarray(text['eot']))
  _say(f'hard negatives: features of {len(negatives)} counterfactual captions of '
       f'{len(captions)} training captions cached ({time.time() - start:.1f} s)')


def _jitted_step(config, mesh, parts, backbone, clip_cfg):
  """The jitted step of (config, mesh), built from `parts` unless this process
  already has it."""
  key = (config.to_json_best_effort(sort_keys=True), mesh.shape_tuple,
         tuple(d.id for d in mesh.devices.flat))
  if key not in _STEPS:
    make = make_sr_train_step if config.task == 'sr' else make_train_step
    _STEPS[key] = jit_train_step(
        make(parts.g, parts.d, parts.g_tx, parts.d_tx, config, backbone, clip_cfg),
        parts.shardings, mesh, batch_ndims(config))
    while len(_STEPS) > _STEPS_KEPT:
      del _STEPS[next(iter(_STEPS))]
  return _STEPS[key]


def _say(msg: str):
  if jax.process_index() == 0:
    print(msg, flush=True)


def _fmt_time(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m' if seconds >= 3600 else \
      f'{seconds // 60}m{seconds % 60:02d}s'


class _Preemption:
  """When to stop for a preemption notice (SIGTERM): at the same step on every process.

  Several processes (jax.distributed, whose preemption service is on by
  default): jax.distributed.initialize installs its own SIGTERM handler,
  which tells the coordination service, which tells every process; then
  `reached_preemption_sync_point` turns True on all of them at one step (the
  highest step any of them had reached, plus one). A Python handler would
  replace JAX's, and the signalled process would stop alone while the others
  wait forever in the next collective; so none is installed.

  One process: a Python handler sets a flag, read after the current step.
  """

  def __init__(self):
    # No public API says whether the service runs; multihost_utils reads the same field.
    self._synced = getattr(jax_distributed.global_state, 'preemption_sync_manager',
                           None) is not None
    self.requested = False
    self._previous = None if self._synced else signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):
    del signum, frame
    self.requested = True

  def should_stop(self, step: int) -> bool:
    if self._synced:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def restore(self):
    if not self._synced:
      signal.signal(signal.SIGTERM, self._previous)


def _training_seconds(t_start: float, offset: float) -> float:
  """offset plus the seconds since t_start, by process 0's clock on every process."""
  seconds = offset + time.perf_counter() - t_start
  if jax.process_count() > 1:
    seconds = float(multihost_utils.broadcast_one_to_all(np.float64(seconds)))
  return seconds


def train(config, workdir: str, *, allow_config_change: bool = False, make_iterator=None,
          devices=None) -> dict:
  """Trains until config.train.steps; returns the last logged metrics.

  Args:
    config: a validated or raw experiment config.
    workdir: holds checkpoints/, samples/, TensorBoard events, metrics.jsonl.
    allow_config_change: resume even if the saved config differs.
    make_iterator: optional (tokenize) -> batch iterator replacing the TFDS
      pipeline (tests feeding in-memory data); it must support grain's
      get_state/set_state if checkpoints are saved. tokenize is the run's
      tokenizer, or with the CLIP loss a frozen_losses.BatchTokenizer that adds
      the CLIP tokens.
    devices: devices for the mesh (default: all).
  """
  config = validate(config, check_files=True)  # also the CLIP checkpoint at loss.clip_dir
  # Local or gs://; a missing bucket or no write access fails here, before any work.
  workdir = storage.check_writable(workdir, probe=f'.write_check_{jax.process_index()}')
  tcfg = config.train

  # ------------------------------------------------------------------ mesh
  mesh = parallel.make_mesh(config.mesh, devices)
  _say(f'mesh {dict(mesh.shape)} over {mesh.devices.size} {jax.devices()[0].platform} devices, '
       f'{jax.process_count()} process(es)')

  # ------------------------------------------------------------------ text
  tokenizer = make_tokenizer(config.text)
  backbone = make_backbone(config.text)
  feature_dim = backbone.dim if backbone is not None else 0
  backbone_params = backbone.params if backbone is not None else {}
  # Frozen CLIP of the CLIP loss / vision-aided D ({} when both are off); the
  # CLIP loss also needs the captions in CLIP's BPE, a second tokenization.
  clip_cfg, frozen_clip = frozen_losses.load(config)
  batch_tokenize = frozen_losses.batch_tokenizer(config, tokenizer, clip_cfg)
  if frozen_clip:
    uses = {'clip': 'the CLIP loss', 'vision_aided': 'the vision-aided D'}
    _say(f'frozen CLIP from {config.loss.clip_dir} for ' + ' and '.join(uses[k] for k in frozen_clip)
         + f' ({sum(x.nbytes for x in jax.tree.leaves(frozen_clip)) / 2**20:.1f} MiB, replicated)')

  # ------------------------------------------------------- models, shardings
  parts = state_lib.build(config, mesh, tokenizer.vocab_size, feature_dim)
  sr = config.task == 'sr'
  ndims = batch_ndims(config)
  # Frozen params of the step: text backbone, CLIP (loss, vision-aided tower) and,
  # for SR, LPIPS-VGG.
  # With the feature cache the loop, not the step, runs the backbone.
  cache = FeatureCache(backbone) if feature_cache_on(config.text) else None
  frozen = {'backbone': {} if cache is not None else backbone_params, **frozen_clip}
  if sr:
    frozen['lpips'] = _lpips_params(config.loss) if config.loss.lpips_weight > 0 else {}
  # On the devices once, not sent with every step; every process holds all of it.
  frozen = jax.tree.map(lambda x: jax.make_array_from_process_local_data(
      parallel.replicated(mesh), np.asarray(x)), frozen)
  step_fn = _jitted_step(config, mesh, parts, backbone, clip_cfg)

  # ------------------------------------------------------------------ input
  if make_iterator is not None:
    data_iter = make_iterator(batch_tokenize)
  else:
    if jax.process_count() > 1:
      # The first use builds captioned_shapes; one builder per data_dir, or
      # the processes race on the same files (FileExistsError).
      if jax.process_index() == 0:
        ensure_dataset(config.data)
      multihost_utils.sync_global_devices('gigagan_jax: dataset prepared')
    data_iter = make_dataset(config.data, tokenize=batch_tokenize, seed=config.seed,
                             degradation=config.data.degradation if sr else None)

  # ------------------------------------------------------ checkpoint / resume
  # Every way out of here (the end, preemption, ConfigMismatchError,
  # NonFiniteError, Ctrl-C) closes what it opened: last in, first closed.
  with contextlib.ExitStack() as cleanup:
    if hasattr(data_iter, 'close'):  # grain's reader threads and worker processes
      cleanup.callback(data_iter.close)
    ckpt = Checkpointer(workdir, tcfg)
    cleanup.callback(ckpt.close)  # waits for a save in flight
    if ckpt.unfinished:
      _say(f'ignored and removed unfinished checkpoint save(s) {", ".join(ckpt.unfinished)} in '
           f'{ckpt.directory} (a save cut short); resuming from the last complete one')
    latest = ckpt.latest_step()
    if latest is not None:
      diffs = ckpt.check_config(latest, config, allow_config_change)
      state = ckpt.restore(latest, parts.abstract, data_iter, changed=diffs)
      _say(f'resumed from {ckpt.directory}/{latest}' +
           (f' (config changed: {"; ".join(diffs)})' if diffs else ''))
    else:
      state = parts.init(config)
      if sentence_whitening_blocks(config):
        state = _fit_whitening(state, config, backbone, tokenizer, cache)
      _say(f'initialised G ({state_lib.count_params(state["g"]) / 1e6:.2f}M params) and '
           f'D ({state_lib.count_params(state["d"]) / 1e6:.2f}M params)')
    if cache is not None and config.data.get('hard_negatives', False):
      _cache_counterfactuals(config, tokenizer, cache)

    # -------------------------------------------------------------- writers
    # metrics.jsonl and the TensorBoard events grow by appends, which object
    # stores lack: they are written locally and uploaded whole at each sync.
    if jax.process_index() == 0:
      logs = storage.StagedDir(workdir, fetch=('metrics.jsonl',))
      cleanup.callback(logs.close)
      start = int(state['step'])
      dropped = drop_records_after(logs.path('metrics.jsonl'), start)
      if dropped:
        _say(f'metrics.jsonl: dropped {dropped} record(s) after step {start}, '
             'the steps this run replays')
      writer = TensorBoardWriter(logs.path(''))
      cleanup.callback(writer.close)  # before logs.close uploads its last events
    else:
      logs, writer = None, NullWriter()
    metrics_path = workdir / 'metrics.jsonl'
    samples_dir = workdir / 'samples'

    def sync_logs():
      if logs is not None:
        writer.flush()
        logs.sync()

    def with_features(text):
      if backbone is None:
        return text
      return dict(text, features=backbone.apply(backbone_params, text['tokens'], text['eot']))

    if sr:
      # Fixed inputs: the first examples of the data in stored order, the same
      # on every process.
      first = next(make_dataset(config.data, tokenize=tokenizer, seed=config.seed, shuffle=False,
                                process_index=0, process_count=1,
                                degradation=config.data.degradation))
      sample_grid = samples_lib.SRSampleGrid(
          jax.jit(lambda ema, lr, text, z: parts.g.apply({'params': ema}, lr, with_features(text),
                                                         z)),
          first, tcfg.num_sample_seeds, z_dim(config), config.seed)
      resolution = config.data.degradation.hr_size
    else:
      sample_grid = samples_lib.SampleGrid(
          jax.jit(lambda ema, z, text: parts.g.apply({'params': ema}, z, with_features(text))),
          tcfg.sample_prompts, tokenizer, z_dim(config), tcfg.num_sample_seeds, config.seed)
      resolution = config.generator.resolution

    def write_samples(step: int):
      image = sample_grid.render(state['ema'])
      if jax.process_index() == 0:
        path = samples_dir / f'step_{step:07d}.png'
        samples_lib.save_png(image, path, upscale=max(1, 128 // resolution))
        writer.write_images(step, {'samples': image})
        return path

    # ----------------------------------------------------------------- loop
    preemption = _Preemption()
    cleanup.callback(preemption.restore)
    step = int(state['step'])
    start_step, last_saved, last_metrics, pending, last_r1 = step, step, {}, None, None
    restored_from = None  # checkpoint restored after non-finite steps
    t_loop = t_log = time.perf_counter()
    # The budget is this invocation's, or on the budget's clock the run's: the
    # seconds its checkpoints carry go on from where they stopped.
    budget_clock = 'budget_s' in state
    budget_offset = float(jax.device_get(state['budget_s'])) if budget_clock else 0.0
    step_at_log = step
    batch_size = config.data.batch_size
    cached_at_start = len(cache) if cache is not None else 0  # the whitening fit's captions
    if step == 0:
      write_samples(0)
    _say(f'training from step {step} to {tcfg.steps} (the first step compiles, which takes a '
         'while)')
    while step < tcfg.steps:
      batch = next(data_iter)
      if cache is not None:
        batch['features'] = cache(batch['tokens'], batch['eot'])
        if 'negative_tokens' in batch:
          batch['negative_features'] = cache(batch['negative_tokens'], batch['negative_eot'])
      batch = parallel.global_batch({k: batch[k] for k in ndims}, mesh)
      # lazy R1: the host picks the compiled variant, from its own step count
      r1_due = step_fn.r1_due(step)
      state, metrics = step_fn(state, batch, frozen, r1_due)
      if 'r1' in metrics and (r1_due or last_r1 is None):  # no D, no 'r1'
        last_r1 = metrics['r1']  # logged until the next R1 step, not the 0 of the steps between
      step += 1

      # Non-finite guard, one step behind so the host never waits on the device.
      if pending is not None and int(pending['consecutive_skips']) >= tcfg.max_consecutive_skips:
        latest = ckpt.latest_step()
        if latest is None or latest == restored_from:
          raise NonFiniteError(
              f'{int(pending["consecutive_skips"])} consecutive non-finite steps (up to step '
              f'{step - 1}) and ' + ('no checkpoint to restore' if latest is None else
                                     f'checkpoint {latest} was already restored once') +
              '; lower the learning rates or check the data')
        ckpt.wait()
        total_skips = state['total_skips']  # the run's count survives the restore
        state = dict(ckpt.restore(latest, parts.abstract, data_iter), total_skips=total_skips)
        step, restored_from, pending = int(state['step']), latest, None
        t_log, step_at_log = time.perf_counter(), step
        _say(f'WARNING: {tcfg.max_consecutive_skips} consecutive non-finite steps; '
             f'restored checkpoint {latest} and continue from step {step}')
        continue
      pending = metrics

      seconds = None  # the budget's clock is read at log steps
      if tcfg.max_minutes and step % tcfg.log_every == 0:
        seconds = _training_seconds(t_loop, budget_offset)
        if budget_clock:  # the schedule's position from the next step on, and checkpointed
          state['budget_s'] = jax.device_put(np.float32(seconds), parallel.replicated(mesh))
      if step % tcfg.log_every == 0 or step == tcfg.steps:
        last_metrics = {k: float(v) for k, v in jax.device_get(
            metrics if last_r1 is None else dict(metrics, r1=last_r1)).items()}
        last_metrics['total_skips'] = int(state['total_skips'])
        now = time.perf_counter()
        rate = (step - step_at_log) * batch_size / max(now - t_log, 1e-9)
        eta = (tcfg.steps - step) * batch_size / max(rate, 1e-9)
        if tcfg.max_minutes:  # the time budget may end the run first
          eta = max(0.0, min(eta, 60 * tcfg.max_minutes - (budget_offset + now - t_loop)))
        t_log, step_at_log = now, step
        writer.write_scalars(step, dict(last_metrics, img_per_sec=rate))
        if logs is not None:
          with open(logs.path('metrics.jsonl'), 'a') as f:
            f.write(json.dumps({'step': step, 'img_per_sec': rate, **last_metrics}) + '\n')
        losses = ' '.join(f'{name} {last_metrics[key]:.{digits}f}' for name, key, digits in
                          _LOG_FIELDS if key in last_metrics)
        _say(f'step {step}/{tcfg.steps} | {rate:.1f} img/s | {losses} '
             f'skips {last_metrics["total_skips"]} | eta {_fmt_time(eta)}')
        sync_logs()
      if step % tcfg.sample_every == 0:
        write_samples(step)
      if step % tcfg.ckpt_every == 0:
        if int(metrics['consecutive_skips']):  # a restore must find a good state
          _say(f'step {step}: no checkpoint in the middle of non-finite steps')
        else:
          ckpt.save(step, state, data_iter, config)
          last_saved, restored_from = step, None
          sync_logs()
          _test_hook_after_save(step, ckpt)
      if preemption.should_stop(step):
        if last_saved != step:
          ckpt.save(step, state, data_iter, config, force=True)
        ckpt.wait()
        _say(f'preempted (SIGTERM): saved checkpoint {step} to {ckpt.directory}; '
             'run the same command to resume')
        return last_metrics
      if seconds is not None and seconds >= 60 * tcfg.max_minutes:
        _say(f'time budget spent: {tcfg.max_minutes:g} min (train.max_minutes) at step {step}')
        break

    # ------------------------------------------------------------------ end
    if step > start_step:
      if last_saved != step:
        ckpt.save(step, state, data_iter, config, force=True)
      if step % tcfg.sample_every:
        write_samples(step)
    ckpt.wait()
    if cache is not None and cache.hits + cache.misses:
      _say(f'text feature cache: {len(cache)} distinct captions ({cached_at_start} cached '
           f'before the first step), {cache.hits / (cache.hits + cache.misses):.0%} of '
           'lookups hit')
    _say(f'done: {step} steps\n'
         f'  checkpoint  {ckpt.directory}/{ckpt.latest_step()}\n'
         f'  samples     {samples_dir}/\n'
         f'  metrics     {metrics_path} and TensorBoard events in {workdir}\n'
         f'  (tensorboard --logdir {workdir})')
    return last_metrics


def _holds_a_file(directory) -> bool:
  """Whether `directory` (local or an object store) holds a file at any depth."""
  return any(p.is_file() or (p.is_dir() and _holds_a_file(p)) for p in directory.iterdir())


def _test_hook_after_save(step: int, ckpt: Checkpointer):
  """Tests of unclean deaths (SIGKILL, like a lost machine), by environment variable:
  GIGAGAN_SIGKILL_AFTER_SAVE=N once checkpoint N is committed;
  GIGAGAN_SIGKILL_DURING_SAVE=N while checkpoint N is being written in the
  background: as soon as the first of its files exists, before Orbax commits it."""
  if os.environ.get('GIGAGAN_SIGKILL_AFTER_SAVE') == str(step):
    ckpt.wait()
    os.kill(os.getpid(), signal.SIGKILL)
  if os.environ.get('GIGAGAN_SIGKILL_DURING_SAVE') == str(step):
    deadline = time.time() + 60
    while time.time() < deadline:
      unfinished = unfinished_saves(ckpt.directory)
      for name in unfinished:
        if _holds_a_file(ckpt.directory / name):
          os.kill(os.getpid(), signal.SIGKILL)
      if not unfinished and (ckpt.directory / str(step)).exists():
        break  # committed before a file was seen: the test names the miss
      time.sleep(0.001)
    raise RuntimeError(f'GIGAGAN_SIGKILL_DURING_SAVE={step}: the save was not caught between '
                       'its first file and its commit')
