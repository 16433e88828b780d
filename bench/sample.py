r"""Inference speed: generator latency and throughput, G + upsampler per image, tiled 4K upsampling.

  python bench/sample.py                                        # t2i_tiny + up_tiny, CPU
  python bench/sample.py --config=configs/t2i_micro.py --batch=4 --pipeline_batch=2 \
      --repeats=1 --tiled_out=128 --tile=16 --tile_batch=4     # smoke
  python bench/sample.py --config=configs/t2i_paper.py --up_config=configs/up_paper.py   # GPU

Random weights (speed does not depend on them); G and the upsampler are built
from the configs exactly as training builds them (gigagan_jax.models.build),
each with its config's frozen text backbone: the real weights when
available, else random weights of the same architecture (--text_backbone,
as bench/train_step.py). Every measurement is, after --warmup calls (the
first compiles), the median of --repeats timed calls, each waited for
(jax.block_until_ready), on jax's default device:

  generator  text backbone + G (text encoder, mapping, synthesis) for random
             captions and z, one jitted call: latency at batch 1 and
             throughput at batch --batch (config.generator.resolution px;
             t2i_paper: 64 px).
  pipeline   the same followed by the upsampler of --up_config on G's images
             (one jitted call): seconds per final image at batch 1 and at
             --pipeline_batch (t2i_tiny 32 px -> up_tiny 4x -> 128 px;
             t2i_paper 64 px -> up_paper 8x -> 512 px, the paper's 0.13 s per
             image on an A100).
  tiled      one --tiled_out px image made from a --tiled_out / scale px one
             by gigagan_jax.tiling.upsample_tiled with --up_config's
             upsampler: --tile px tiles, --tile_batch per call, host-side
             blending included (paper: 3.66 s for 4K, i.e. 512 -> 4096 at 8x).
             Compiled on one tile batch before the timed whole-image runs.

Output: one JSON line per measurement (fields: bench, case, batch,
ms_per_call_median, ms_per_image, img_per_s, times_ms, resolution_in,
resolution_out, params (G), params_up, config, up_config, overrides,
text_backbone, text_backbone_up, dtype, dtype_up, device, device_kind,
peak_tflops, commit, date; tiled adds tile, overlap, tiles, tile_batch,
ms_per_tile), then a one-line summary. The CPU defaults take a few minutes
on 2 shared cores (BENCHMARKS.md).
"""
import json
import os
import statistics
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from bench import peaks
from bench.timing import time_tiled, timed
from bench import train_step as tsb
from gigagan_jax.config_utils import validate
from gigagan_jax.models.build import build_models, example_g_inputs, z_dim
from gigagan_jax.upsample import input_multiple
# pylint: enable=g-import-not-at-top,wrong-import-position

REPO = tsb.REPO
FLAGS = flags.FLAGS


class Model:
  """Random-weight G (config.task 't2i') or upsampler ('sr') of `config` with its text backbone.

  `features(bb_params, text)` adds the backbone's token features to a text
  dict; `inputs(batch)` draws random captions (numpy tokens/eot) and z.
  """

  def __init__(self, config, text_mode: str, seed: int):
    self.config = config = validate(config.copy_and_resolve_references())
    self.task = config.task
    self.backbone, self.backbone_desc = tsb.text_backbone(config.text, text_mode, seed)
    self.feature_dim = self.backbone.dim if self.backbone is not None else 0
    self.vocab = tsb.token_vocab(config.text, self.backbone)
    self.module, _ = build_models(config, 0 if self.backbone is not None else self.vocab)
    self.max_len, self.z_dim = int(config.text.max_len), z_dim(config)
    block = config.upsampler if self.task == 'sr' else config.generator
    self.dtype = block.get('dtype', 'float32')
    if self.task == 'sr':
      self.scale, self.multiple = int(config.upsampler.scale), input_multiple(config.upsampler)
    else:
      self.resolution = int(config.generator.resolution)
    inputs = example_g_inputs(config, 1, self.feature_dim)
    if self.task == 'sr':  # any valid side sizes the params (fully convolutional)
      m = max(self.multiple, 8)
      inputs = (np.zeros((1, m, m, 3), np.float32),) + tuple(inputs[1:])
    variables = jax.jit(self.module.init)(jax.random.PRNGKey(seed), *inputs)
    self.params = nn.meta.unbox(variables['params'])
    self.bb_params = self.backbone.params if self.backbone is not None else {}
    self.rng = np.random.default_rng(seed)

  def num_params(self) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(self.params)))

  def inputs(self, batch: int):
    """(text {'tokens' int32 [B, L], 'eot' int32 [B]}, z float32 [B, z_dim]) as numpy."""
    text = tsb.random_text(self.rng, batch, self.max_len, self.vocab)
    return text, self.rng.normal(size=(batch, self.z_dim)).astype(np.float32)

  def features(self, bb_params, text: dict) -> dict:
    if self.backbone is None:
      return text
    return dict(text, features=self.backbone.apply(bb_params, text['tokens'], text['eot']))

  def generate(self, params, bb_params, text, z):
    """G: float [B, R, R, 3] in about [-1, 1] (the top of the pyramid)."""
    return self.module.apply({'params': params}, z, self.features(bb_params, text))[0]

  def upsample(self, params, bb_params, lr, text, z):
    """Upsampler: lr float [B, h, h, 3] -> [B, h*scale, h*scale, 3]."""
    return self.module.apply({'params': params}, lr, self.features(bb_params, text), z)


def record(case: str, batch: int, times_ms: list[float], **fields) -> dict:
  med = statistics.median(times_ms)
  return dict(bench='sample', case=case, batch=batch, ms_per_call_median=med,
              ms_per_image=med / batch, img_per_s=1000 * batch / med,
              times_ms=[round(t, 3) for t in times_ms], **fields)


def bench_generator(g: Model, batches, warmup, repeats):
  fn = jax.jit(g.generate)
  for b in batches:
    text, z = g.inputs(b)
    times = timed(fn, (g.params, g.bb_params, text, z), warmup, repeats)
    yield record('generator', b, times, resolution_in=None, resolution_out=g.resolution,
                 params=g.num_params())


def bench_pipeline(g: Model, up: Model, batches, warmup, repeats):
  if g.resolution % up.multiple:
    raise app.UsageError(f'G resolution {g.resolution} is not a multiple of {up.multiple}, '
                         'the input multiple of the upsampler')

  def pipeline(gp, gbb, upp, upbb, g_text, g_z, up_text, up_z):
    image = jnp.clip(g.generate(gp, gbb, g_text, g_z), -1.0, 1.0)
    return up.upsample(upp, upbb, image, up_text, up_z)

  fn = jax.jit(pipeline)
  for b in batches:
    (g_text, g_z), (up_text, up_z) = g.inputs(b), up.inputs(b)
    times = timed(fn, (g.params, g.bb_params, up.params, up.bb_params, g_text, g_z, up_text, up_z),
                  warmup, repeats)
    yield record('pipeline', b, times, resolution_in=g.resolution,
                 resolution_out=g.resolution * up.scale, params=g.num_params(),
                 params_up=up.num_params())


def bench_tiled(up: Model, out_side: int, tile: int, overlap, tile_batch: int, repeats: int):
  side = out_side // up.scale
  if tile % up.multiple:
    raise app.UsageError(f'--tile={tile}: must be a multiple of {up.multiple} '
                         '(the input multiple of this upsampler)')
  text, z = up.inputs(1)
  text = {k: np.repeat(v, tile_batch, axis=0) for k, v in text.items()}
  z = np.repeat(z, tile_batch, axis=0)
  apply = jax.jit(up.upsample)
  fn = lambda tiles: apply(up.params, up.bb_params, tiles, text, z)
  image = up.rng.uniform(-1, 1, (side, side, 3)).astype(np.float32)
  times, n, ov = time_tiled(fn, image, scale=up.scale, tile=tile, overlap=overlap,
                            tile_batch=tile_batch, repeats=repeats)
  rec = record('tiled', 1, times, resolution_in=side, resolution_out=side * up.scale,
               params_up=up.num_params(), tile=tile, overlap=ov, tiles=n, tile_batch=tile_batch)
  rec['ms_per_tile'] = rec['ms_per_call_median'] / n
  return rec


def summary(records, device: str) -> str:
  parts = []
  for r in records:
    if r['case'] == 'generator':
      parts.append(f'G {r["resolution_out"]}px b{r["batch"]}: '
                   + (f'{r["ms_per_image"]:.1f} ms' if r['batch'] == 1 else
                      f'{r["img_per_s"]:.1f} img/s'))
    elif r['case'] == 'pipeline':
      parts.append(f'G+up {r["resolution_in"]}->{r["resolution_out"]}px b{r["batch"]}: '
                   f'{r["ms_per_image"]:.1f} ms/img')
    else:
      parts.append(f'tiled {r["resolution_in"]}->{r["resolution_out"]}px ({r["tiles"]} tiles of '
                   f'{r["tile"]}): {r["ms_per_call_median"] / 1000:.2f} s')
  return f'sample bench [{device}]: ' + '; '.join(parts)


def define_flags():
  config_flags.DEFINE_config_file('config', os.path.join(REPO, 'configs/t2i_tiny.py'),
                                  'Text-to-image config FILE[:ARG] of G; --config.FIELD=VALUE '
                                  'overrides fields.')
  config_flags.DEFINE_config_file('up_config', os.path.join(REPO, 'configs/up_tiny.py'),
                                  'Super-resolution config (task sr) of the upsampler of the '
                                  'pipeline and tiled measurements; --up_config.FIELD=VALUE '
                                  'overrides fields.')
  flags.DEFINE_integer('batch', 64, 'Generator throughput batch (batch 1 is always timed).')
  flags.DEFINE_integer('pipeline_batch', 16, 'G + upsampler batched size (batch 1 is always '
                       'timed).')
  flags.DEFINE_integer('warmup', 1, 'Untimed calls before timing (the first one compiles).')
  flags.DEFINE_integer('repeats', 5, 'Timed calls per setting; the median is reported.')
  flags.DEFINE_integer('tiled_out', 4096, 'Tiled measurement: output side; the input side is '
                       'this / the upsampler\'s scale.')
  flags.DEFINE_integer('tile', 64, 'Tiled measurement: LR tile side (a multiple of the '
                       'upsampler\'s input multiple, 2**num_down).')
  flags.DEFINE_integer('overlap', None, 'Tiled measurement: tile overlap; default tile // 4.')
  flags.DEFINE_integer('tile_batch', 8, 'Tiled measurement: tiles per upsampler call.')
  flags.DEFINE_integer('tiled_repeats', 1, 'Tiled measurement: timed whole-image runs (median).')
  flags.DEFINE_bool('skip_pipeline', False, 'Skip the G + upsampler measurement.')
  flags.DEFINE_bool('skip_tiled', False, 'Skip the tiled measurement.')
  flags.DEFINE_enum('dtype', None, ['float32', 'bfloat16'], 'Compute dtype override of G and '
                    'the upsampler (default: the configs\').')
  flags.DEFINE_enum('text_backbone', 'auto', ['auto', 'real', 'random'],
                    'Frozen text backbone weights: real, random (same architecture) or auto '
                    '(real when available).')
  flags.DEFINE_enum('device_kind', 'auto', ['auto'] + list(peaks.PEAK_TFLOPS),
                    'Chip named in the records; auto: from jax\'s device_kind.')
  flags.DEFINE_integer('seed', 0, 'Seed of the random weights and inputs.')
  flags.DEFINE_string('json_out', None, 'Also append the JSON lines to this file.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.ERROR)
  config, up_config = FLAGS.config, FLAGS.up_config
  if config.get('task', 't2i') != 't2i':
    raise app.UsageError('--config must be a text-to-image config (task t2i)')
  if up_config.get('task', 't2i') != 'sr':
    raise app.UsageError('--up_config must be a super-resolution config (task sr)')
  if FLAGS.dtype:
    config.generator.dtype = FLAGS.dtype
    up_config.upsampler.dtype = FLAGS.dtype
  dev = tsb.device_record(FLAGS.device_kind)
  common = {'config': tsb.config_name('config'),
            'overrides': tsb.config_overrides('config') + tsb.config_overrides('up_config')}
  stamp = {**dev, 'commit': tsb.git_commit(), 'date': tsb.today()}
  records = []

  def emit(rec: dict):
    """Prints and saves each record as it comes: a later case that runs out of time (minutes
    of compile on a GPU) does not take the earlier figures with it."""
    records.append(rec)
    line = json.dumps(dict(rec, **stamp))
    print(line, flush=True)
    if FLAGS.json_out:
      with open(FLAGS.json_out, 'a') as f:
        f.write(line + '\n')

  g = Model(config, FLAGS.text_backbone, FLAGS.seed)
  common['text_backbone'] = g.backbone_desc
  for r in bench_generator(g, sorted({1, FLAGS.batch}), FLAGS.warmup, FLAGS.repeats):
    emit(dict(r, **common, dtype=g.dtype))
  if not (FLAGS.skip_pipeline and FLAGS.skip_tiled):
    up = Model(up_config, FLAGS.text_backbone, FLAGS.seed)
    common.update(up_config=tsb.config_name('up_config'), text_backbone_up=up.backbone_desc)
    if not FLAGS.skip_pipeline:
      for r in bench_pipeline(g, up, sorted({1, FLAGS.pipeline_batch}), FLAGS.warmup,
                              FLAGS.repeats):
        emit(dict(r, **common, dtype=g.dtype, dtype_up=up.dtype))
    if not FLAGS.skip_tiled:
      emit(dict(bench_tiled(up, FLAGS.tiled_out, FLAGS.tile, FLAGS.overlap, FLAGS.tile_batch,
                            FLAGS.tiled_repeats), **common, dtype_up=up.dtype))
  print(summary(records, dev['device']), flush=True)


if __name__ == '__main__':
  define_flags()
  app.run(main)
