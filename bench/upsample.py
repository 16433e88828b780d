r"""Upsampler inference latency: ms/image direct (128 -> 512) and tiled (512 -> 4096).

  python bench/upsample.py                                   # tiny models, CPU-friendly
  python bench/upsample.py --size=paper --dtype=bfloat16     # paper-size models, on a GPU/TPU
  python bench/upsample.py --config=configs/sr_baselines.py:esrgan --skip_tiled
  python bench/upsample.py --lr_size=32 --tiled_in=64 --tile=32 --repeats=2   # smoke

Random weights (latency does not depend on them). Two measurements on the
current default device:

  direct  one forward pass of the 4x upsampler (--scale) on --lr_size px inputs
          (128 -> 512 by default), at batch 1 and at batch --batch; after
          --warmup calls (compilation), the median of --repeats timed calls,
          each waiting for the result (block_until_ready).
  tiled   one --tiled_in px image through gigagan_jax.tiling.upsample_tiled with
          the 8x upsampler (--tiled_scale; 512 -> 4096 by default), tiles of
          --tile px, --tile_batch tiles per call; the warm-up compiles on one
          tile batch, then the whole image is timed --tiled_repeats times
          (host-side blending included, as a user experiences it).

Models: --size=tiny (configs/up_tiny.py's text settings with
up_base.tiny_upsampler(scale)) or --size=paper (configs/up_paper.py's,
with up_base.paper_upsampler(scale): 358.6M at 8x; CLIP-sized random text
features stand in for the frozen backbone). --config=FILE[:ARG] takes the
upsampler of any SR config (GigaGAN or baseline) for both measurements at
its own scale instead; --config.upsampler.FIELD=... overrides fields.

Output: one JSON line per measurement (fields: bench, case, model, params,
scale, in, out, batch, ms_per_image, ms_per_call_median, times_ms, device,
dtype), then a one-line summary. The tiny defaults take about 2.5 minutes on 2
shared CPU cores (measured: 128 -> 512 at 464 ms/image at batch 1, 299 at
batch 4; 512 -> 4096 in 26 s, 121 tiles of 64 px), mostly compilation and the
tiled image.
"""
import json
import os
import statistics
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np
from flax import linen as nn
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from bench.timing import time_tiled, timed
from configs import up_base
from gigagan_jax.models.build import build_models, z_dim
from gigagan_jax.text.tokenizer import make_tokenizer
from gigagan_jax.upsample import input_multiple
# pylint: enable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE_CONFIGS = {'tiny': 'configs/up_tiny.py', 'paper': 'configs/up_paper.py'}
SIZE_BLOCKS = {'tiny': up_base.tiny_upsampler, 'paper': up_base.paper_upsampler}

FLAGS = flags.FLAGS
flags.DEFINE_enum('size', 'tiny', ['tiny', 'paper'], 'GigaGAN upsampler size (ignored with '
                  '--config): tiny (~0.76M, CPU) or paper (~359M, an accelerator).')
config_flags.DEFINE_config_file('config', None, 'Optional SR config (FILE[:ARG], e.g. '
                                'configs/sr_baselines.py:swinir) whose upsampler is timed '
                                'in both measurements instead of --size.')
flags.DEFINE_integer('scale', 4, 'Direct measurement: upsampler scale (with --size).')
flags.DEFINE_integer('lr_size', 128, 'Direct measurement: input side (128 -> 512 at 4x).')
flags.DEFINE_integer('batch', 4, 'Direct measurement: the "batch N" size (batch 1 is always timed).')
flags.DEFINE_integer('warmup', 1, 'Untimed calls before timing (the first one compiles).')
flags.DEFINE_integer('repeats', 5, 'Timed calls per direct setting; the median is reported.')
flags.DEFINE_integer('tiled_scale', 8, 'Tiled measurement: upsampler scale (with --size).')
flags.DEFINE_integer('tiled_in', 512, 'Tiled measurement: input side (512 -> 4096 at 8x).')
flags.DEFINE_integer('tile', 64, 'Tiled measurement: LR tile side (a multiple of 2**num_down).')
flags.DEFINE_integer('overlap', None, 'Tiled measurement: tile overlap; default tile // 4.')
flags.DEFINE_integer('tile_batch', 8, 'Tiled measurement: tiles per model call.')
flags.DEFINE_integer('tiled_repeats', 1, 'Tiled measurement: timed whole-image runs (median).')
flags.DEFINE_bool('skip_direct', False, 'Skip the direct measurement.')
flags.DEFINE_bool('skip_tiled', False, 'Skip the tiled measurement.')
flags.DEFINE_enum('dtype', None, ['float32', 'bfloat16'], 'Compute dtype override of the '
                  'upsampler (default: the config\'s; bfloat16 on accelerators).')
flags.DEFINE_integer('seed', 0, 'Seed of the random weights and inputs.')


def _load_config_file(path: str):
  """get_config(arg) of configs/FILE.py[:ARG] (paths relative to the repo root)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  file, _, arg = path.partition(':')
  spec = importlib.util.spec_from_file_location('bench_cfg', os.path.join(REPO, file))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)


def make_config(scale: int):
  """The SR config whose upsampler is timed at `scale` (see the module doc)."""
  if FLAGS.config is not None:
    config = FLAGS.config.copy_and_resolve_references()
  else:
    config = _load_config_file(SIZE_CONFIGS[FLAGS.size])
    config.upsampler = SIZE_BLOCKS[FLAGS.size](scale)
  if FLAGS.dtype:
    config.upsampler.dtype = FLAGS.dtype
  return config


class Model:
  """Random-weight upsampler of `config` with fixed random text and z inputs."""

  def __init__(self, config, seed: int):
    text_cfg = config.text
    self.feature_dim = text_cfg.feature_dim if text_cfg.backbone != 'none' else 0
    # With backbone features T ignores token ids (no vocabulary needed, and a
    # CLIP tokenizer would need its vocab files just to be sized).
    vocab = 0 if self.feature_dim else make_tokenizer(text_cfg).vocab_size
    self.g, _ = build_models(config, vocab)
    u = config.upsampler
    self.kind, self.scale = u.kind, int(u.scale)
    self.multiple = input_multiple(u)
    self.max_len, self.z_dim = int(text_cfg.max_len), z_dim(config)
    self.rng = np.random.default_rng(seed)
    m = max(self.multiple, 8)
    lr, text, z = self.inputs(1, m)
    variables = jax.jit(self.g.init)(jax.random.PRNGKey(seed), lr, text, z)
    self.params = nn.meta.unbox(variables.get('params', {}))
    self.apply = jax.jit(lambda p, lr, text, z: self.g.apply({'params': p}, lr, text, z))

  def inputs(self, batch: int, side: int):
    """Random lr [batch, side, side, 3] in [-1, 1], text dict, z [batch, z_dim]."""
    lr = self.rng.uniform(-1, 1, (batch, side, side, 3)).astype(np.float32)
    tokens = self.rng.integers(1, 200, (batch, self.max_len)).astype(np.int32)
    text = {'tokens': tokens, 'eot': np.full((batch,), self.max_len - 1, np.int32)}
    if self.feature_dim:
      text['features'] = self.rng.normal(size=(batch, self.max_len, self.feature_dim)).astype(
          np.float32)
    z = self.rng.normal(size=(batch, self.z_dim)).astype(np.float32)
    return lr, text, z

  def num_params(self) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(self.params)))

  def __call__(self, lr, text, z):
    return self.apply(self.params, lr, text, z)


def _record(case, model, name, side_in, batch, times_ms, dtype, **extra):
  med = statistics.median(times_ms)
  return dict(bench='upsample', case=case, model=name, kind=model.kind, params=model.num_params(),
              scale=model.scale, **{'in': side_in}, out=side_in * model.scale, batch=batch,
              ms_per_image=med / batch, ms_per_call_median=med,
              times_ms=[round(t, 3) for t in times_ms], dtype=dtype,
              device=f'{jax.devices()[0].platform}:{jax.devices()[0].device_kind}', **extra)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.ERROR)
  name = (config_flags.get_config_filename(FLAGS['config']) if FLAGS.config is not None
          else FLAGS.size)
  summary = []
  if not FLAGS.skip_direct:
    config = make_config(FLAGS.scale)
    model = Model(config, FLAGS.seed)
    for b in sorted({1, FLAGS.batch}):
      times = timed(model, model.inputs(b, FLAGS.lr_size), FLAGS.warmup, FLAGS.repeats)
      rec = _record('direct', model, name, FLAGS.lr_size, b, times, config.upsampler.dtype)
      print(json.dumps(rec), flush=True)
      summary.append(f'{rec["in"]}->{rec["out"]} b{b} {rec["ms_per_image"]:.1f} ms/img')
  if not FLAGS.skip_tiled:
    config = make_config(FLAGS.tiled_scale)
    model = Model(config, FLAGS.seed)
    if FLAGS.tile % model.multiple:
      raise app.UsageError(f'--tile={FLAGS.tile}: must be a multiple of {model.multiple} '
                           '(the input multiple of this upsampler)')
    _, text, z = model.inputs(FLAGS.tile_batch, FLAGS.tile)
    side = FLAGS.tiled_in
    image = model.rng.uniform(-1, 1, (side, side, 3)).astype(np.float32)
    times, n, ov = time_tiled(lambda tiles: model(tiles, text, z), image, scale=model.scale,
                              tile=FLAGS.tile, overlap=FLAGS.overlap,
                              tile_batch=FLAGS.tile_batch, repeats=FLAGS.tiled_repeats)
    rec = _record('tiled', model, name, FLAGS.tiled_in, 1, times, config.upsampler.dtype,
                  tile=FLAGS.tile, overlap=ov, tiles=n, tile_batch=FLAGS.tile_batch,
                  ms_per_tile=statistics.median(times) / n)
    print(json.dumps(rec), flush=True)
    summary.append(f'tiled {rec["in"]}->{rec["out"]} ({n} tiles of {FLAGS.tile}) '
                   f'{rec["ms_per_image"] / 1000:.2f} s/img')
  dev = jax.devices()[0]
  print(f'upsample bench [{name}, {dev.platform}:{dev.device_kind}]: ' + '; '.join(summary))


if __name__ == '__main__':
  app.run(main)
