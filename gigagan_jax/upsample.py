r"""Upsample an image of any size with a trained super-resolution run.

  python -m gigagan_jax.upsample --workdir=runs/up_tiny --in=photo.png [--out=photo_x4.png]
      [--step=N] [--prompt="a red circle"] [--seed=0] [--tile=N] [--overlap=N]
      [--times=1] [--batch=8] [--bicubic] [--progress]

The run is any `config.task = 'sr'` run (configs/up_*.py, configs/sr_baselines.py):
its EMA upsampler (GigaGAN's text-conditioned one or a baseline) is restored
from the checkpoint and applied tile by tile (gigagan_jax/tiling.py), so the
input can be far larger than the training crops. `--times=2` feeds the output
back in (64 -> 512 -> 4096 px with an 8x model, as the paper's chained 4K
upsampling). The prompt conditions the GigaGAN upsampler (empty: the
unconditional case, as in training with caption dropout); baselines ignore it.
The latent z comes from `--seed` (the same for every tile: tiles of one image
share a style, so seams do not change texture).

Tile sizes. By default a tile is the LR side the run was trained on
(data.degradation.hr_size / scale: 16 px for configs/up_tiny.py, 64 for
up_paper), so the model sees inputs of the size it learned from; on larger
tiles its global self-attention and its deepest features (2**num_down times
smaller) meet other sizes than in training. Measured for up_tiny
(ABLATION.md): 16 px tiles scored 0.14 dB PSNR-Y more than whole 64 px
inputs on bench/sr_natural.py's validation crops, -0.02 to +0.09 dB on its
test crops (three seeds); SRCNN scores the same either way. Larger tiles
are faster.

GigaGAN's upsampler needs input sides that are multiples of
2**num_down (8 in our configs), SwinIR of its window; `--tile` is rounded up
to that multiple, and shrunk to the image (rounded up likewise) when the
image is smaller, so a small image is one tile with at most a few reflected
pixels of padding. Tiles of the last row/column are placed flush with the
border (no padding), see tiling.py.

Library use (tests, notebooks):
  model = SRModel.from_run(workdir)            # config, step, EMA params
  out = upsample_image(model, uint8_image, prompt='', seed=0)   # tile: model.train_tile
"""
import io
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from PIL import Image, ImageOps

from gigagan_jax import runtime
from gigagan_jax import storage
from gigagan_jax import tiling
from gigagan_jax.models.build import build_models, z_dim
from gigagan_jax.inference import load_run
from gigagan_jax.text.backbone import make_backbone
from gigagan_jax.text.tokenizer import make_tokenizer
from gigagan_jax.train.samples import to_uint8


class UpsampleError(RuntimeError):
  """A user-facing problem (unreadable image, wrong kind of run); the CLI prints it."""


def input_multiple(ucfg) -> int:
  """Input sides of upsampler block `ucfg` must be multiples of this (1: any side).

  GigaGAN: 2**num_down (its down blocks halve the side num_down times). SwinIR
  pads to its window itself, but a tile that is already a multiple wastes no
  compute on padding.
  """
  if ucfg.kind == 'gigagan':
    return 2**int(ucfg.num_down)
  if ucfg.kind == 'swinir':
    return int(ucfg.window_size)
  return 1


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def pad_to_multiple(x: np.ndarray, m: int) -> np.ndarray:
  """Reflect-pads [B, h, w, C] at the bottom/right so h, w become multiples of m."""
  h, w = x.shape[1:3]
  ph, pw = _round_up(h, m) - h, _round_up(w, m) - w
  if not (ph or pw):
    return x
  # 'symmetric' (edge pixel repeated) works for any pad length, even a 1-px image.
  return np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode='symmetric')


def read_image(path: str) -> np.ndarray:
  """uint8 [H, W, 3] of the image file at `path` (any mode; alpha composited on white).

  Raises UpsampleError naming the file when it is missing or cannot be decoded.
  """
  if not storage.run_path(path).is_file():
    raise UpsampleError(f'input image not found: {path}')
  try:
    with Image.open(io.BytesIO(storage.run_path(path).read_bytes())) as im:
      im.load()  # decode now, so a truncated file fails here
      im = ImageOps.exif_transpose(im)
      if im.mode in ('RGBA', 'LA', 'P', 'PA'):
        im = im.convert('RGBA')
        im = Image.alpha_composite(Image.new('RGBA', im.size, (255, 255, 255, 255)), im)
      return np.asarray(im.convert('RGB'), np.uint8)
  except Exception as e:  # pylint: disable=broad-except
    # Pillow raises many types (UnidentifiedImageError, OSError, ValueError...).
    raise UpsampleError(f'cannot read image {path}: {type(e).__name__}: {e}') from None


class SRModel:
  """An SR run's upsampler with its tokenizer and frozen text backbone.

  Call it on float batches: `model(lr [B, h, w, 3] in [-1, 1], text, z [B, z_dim])
  -> float32 [B, h*scale, w*scale, 3]` (not clipped). Params are an argument of
  the jitted function, so one compilation serves every checkpoint with the
  same shapes; each new input shape compiles once.

  Attributes:
    config, params: the run's config and the upsampler's (EMA) params.
    kind: 'gigagan' or a baseline name; scale: output side / input side.
    multiple: input sides must be multiples of it (`input_multiple`).
    z_dim: width of z (1 for baselines, which ignore it).
    step: the checkpoint step (None when built from params directly).
    train_tile: the LR side of the training crops (data.degradation.hr_size /
      scale), the default tile.
  """

  def __init__(self, config, params, step=None):
    if config.get('task', 't2i') != 'sr':
      raise UpsampleError(f"config.task={config.get('task', 't2i')!r}: this is not a "
                          'super-resolution run (use gigagan_jax.sample for text-to-image runs)')
    self.config, self.params, self.step = config, params, step
    u = config.upsampler
    self.kind, self.scale, self.multiple = u.kind, int(u.scale), input_multiple(u)
    self.z_dim = z_dim(config)
    self.train_tile = int(config.data.degradation.hr_size) // self.scale
    self.tokenizer = make_tokenizer(config.text)
    self.backbone = make_backbone(config.text)
    g, _ = build_models(config, self.tokenizer.vocab_size)
    # Chained passes feed outputs (which overshoot at edges) back in: clip
    # to the training range first.
    self._apply = jax.jit(lambda p, lr, text, z: g.apply(
        {'params': p}, jnp.clip(lr, -1.0, 1.0), text, z))

  @classmethod
  def from_run(cls, workdir: str, step: int | None = None) -> 'SRModel':
    """The EMA upsampler of checkpoint `step` (default: latest) of run `workdir`."""
    config, step, params = load_run(workdir, step)
    return cls(config, params, step)

  def num_params(self) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(self.params)))

  def text(self, prompts) -> dict:
    """Text inputs for `prompts`: tokens int32 [N, L], eot int32 [N] (+ features [N, L, Df])."""
    text = self.tokenizer(list(prompts))
    if self.backbone is not None:
      text['features'] = np.asarray(
          self.backbone.apply(self.backbone.params, text['tokens'], text['eot']))
    return text

  def latents(self, seeds) -> np.ndarray:
    """[N, z_dim] float32: z of each seed (jax.random.normal(PRNGKey(seed), (z_dim,)))."""
    return np.stack([np.asarray(jax.random.normal(jax.random.PRNGKey(int(s)), (self.z_dim,)))
                     for s in seeds])

  def __call__(self, lr, text, z):
    """lr float [B, h, w, 3] in [-1, 1] (any h, w) -> float32 [B, h*s, w*s, 3].

    Sides that are not multiples of `multiple` are reflect-padded and the
    output cropped back. Returns a jax array (dispatch is asynchronous).
    """
    lr = np.asarray(lr, np.float32)
    h, w = lr.shape[1:3]
    out = self._apply(self.params, pad_to_multiple(lr, self.multiple), text, z)
    if out.shape[1:3] != (h * self.scale, w * self.scale):
      out = out[:, :h * self.scale, :w * self.scale]
    return out

  def tile_fn(self, prompt: str, seed: int, batch: int):
    """fn([batch, t, t, 3]) -> [batch, t*s, t*s, 3] for `tiling.upsample_tiled`,
    every tile with the same prompt and z (one image, one style)."""
    text = {k: np.repeat(v, batch, axis=0) for k, v in self.text([prompt]).items()}
    z = np.repeat(self.latents([seed]), batch, axis=0)
    return lambda tiles: self(tiles, text, z)


def tile_plan(h: int, w: int, tile: int, multiple: int, overlap: int | None):
  """(tile, overlap, number of tiles) actually used for an h x w input.

  The tile is rounded up to `multiple` and shrunk to the image when the image
  is smaller (rounded up too); overlap None -> tiling's default, and it is
  kept below the tile.
  """
  if tile < 1:
    raise UpsampleError(f'--tile={tile}: must be >= 1')
  t = _round_up(min(tile, max(h, w)), multiple)
  ov = tiling.default_overlap(t) if overlap is None else min(overlap, t - 1)
  if ov < 0:
    raise UpsampleError(f'--overlap={overlap}: must be >= 0')
  n = len(tiling.tile_starts(max(h, t), t, ov)) * len(tiling.tile_starts(max(w, t), t, ov))
  return t, ov, n


def upsample_image(model: SRModel, image, *, prompt: str = '', seed: int = 0,
                   tile: int | None = None,
                   overlap: int | None = None, times: int = 1, batch: int = 8,
                   progress=None):
  """Upsamples one image by model.scale**times, tile by tile.

  Args:
    model: an SRModel.
    image: uint8 [H, W, 3].
    prompt, seed: the caption and the seed of z (shared by every tile and pass).
    tile, overlap: LR tile side (None: model.train_tile) and minimum overlap
      (see `tile_plan`, tiling.py).
    times: passes of the model (each multiplies the side by model.scale).
    batch: tiles per model call (at most; fewer when the image has fewer tiles).
    progress: as in tiling.upsample_tiled.

  Returns:
    (uint8 [H*S, W*S, 3] with S = scale**times, list of per-pass dicts with
    the input size, tile, overlap, tile count and batch used).
  """
  if times < 1:
    raise UpsampleError(f'--times={times}: must be >= 1')
  tile = model.train_tile if tile is None else tile
  x = np.asarray(image, np.float32) / 127.5 - 1.0
  passes = []
  for _ in range(times):
    h, w = x.shape[:2]
    t, ov, n = tile_plan(h, w, tile, model.multiple, overlap)
    b = max(1, min(batch, n))
    x = tiling.upsample_tiled(model.tile_fn(prompt, seed, b), x, scale=model.scale, tile=t,
                              overlap=ov, batch=b, progress=progress)
    # Clip between passes: the next pass was trained on images in [-1, 1].
    x = np.clip(x, -1.0, 1.0)
    passes.append({'in_size': [h, w], 'tile': t, 'overlap': ov, 'tiles': n, 'batch': b})
  return to_uint8(x[None])[0], passes


def bicubic_reference(image, factor: int) -> np.ndarray:
  """uint8 [H, W, 3] -> uint8 [H*factor, W*factor, 3] by Pillow's bicubic (the comparison output)."""
  h, w = image.shape[:2]
  return np.asarray(Image.fromarray(image).resize((w * factor, h * factor), Image.BICUBIC))


def default_out_path(in_path: str, factor: int) -> str:
  stem, _ = os.path.splitext(in_path)
  return f'{stem}_x{factor}.png'


def run(workdir: str, in_path: str, *, out: str | None = None, step: int | None = None,
        prompt: str = '', seed: int = 0, tile: int | None = None, overlap: int | None = None,
        times: int = 1, batch: int = 8, bicubic: bool = False, progress=None) -> dict:
  """The CLI without flags: reads `in_path`, upsamples, writes PNG(s).

  Returns a dict: paths ('in', 'out', 'bicubic' or None), sizes ('in_size',
  'out_size' as [H, W]), 'factor', 'kind', 'step', 'passes', 'seconds'
  (upsampling wall time, compilation included) and 'load_seconds'.
  Raises UpsampleError / FileNotFoundError naming the bad file or run.
  """
  image = read_image(in_path)  # before the (slower) model load: fail fast
  t0 = time.perf_counter()
  model = SRModel.from_run(workdir, step)
  t1 = time.perf_counter()
  result, passes = upsample_image(model, image, prompt=prompt, seed=seed, tile=tile,
                                  overlap=overlap, times=times, batch=batch, progress=progress)
  t2 = time.perf_counter()
  factor = model.scale**times
  out = out or default_out_path(in_path, factor)
  storage.save_image(Image.fromarray(result), out)  # local or gs://
  bic_path = None
  if bicubic:
    stem, ext = os.path.splitext(out)
    bic_path = f'{stem}_bicubic{ext or ".png"}'
    storage.save_image(Image.fromarray(bicubic_reference(image, factor)), bic_path)
  return {'in': in_path, 'out': out, 'bicubic': bic_path, 'in_size': list(image.shape[:2]),
          'out_size': list(result.shape[:2]), 'factor': factor, 'kind': model.kind,
          'step': model.step, 'passes': passes, 'seconds': t2 - t1, 'load_seconds': t1 - t0}


# ---------------------------------------------------------------------- CLI

def define_flags():
  """Flags of the CLI, defined only when run as a program (importing never
  collides with another CLI's flags)."""
  flags.DEFINE_string('workdir', None, "SR training run directory (config.task='sr'; its "
                      'checkpoints/).')
  flags.DEFINE_integer('step', None, 'Checkpoint step; default: the latest.')
  flags.DEFINE_string('in', None, 'Input image (any size; PNG, JPEG, ...; converted to RGB).')
  flags.DEFINE_string('out', None, 'Output PNG; default: INPUT_STEM_x<factor>.png beside the input.')
  flags.DEFINE_string('prompt', '', 'Caption for the text-conditioned upsampler; empty = '
                      'unconditional. Beyond config.text.max_len tokens it is cut (start and '
                      'end tokens kept). Baselines ignore it.')
  flags.DEFINE_integer('seed', 0, 'Seed of the latent z (one z for the whole image).')
  flags.DEFINE_integer('tile', None, 'Low-res tile side in pixels (rounded up to the model\'s '
                       'input multiple; shrunk to the image when it is smaller); default: the '
                       'LR side the run was trained on (data.degradation.hr_size / scale).')
  flags.DEFINE_integer('overlap', None, 'Minimum overlap of neighbouring tiles (LR pixels); '
                       'default: tile // 4.')
  flags.DEFINE_integer('times', 1, 'Passes of the model: 2 chains it with itself (e.g. 64 -> 512 '
                       '-> 4096 px with an 8x model).')
  flags.DEFINE_integer('batch', 8, 'Tiles per model call (bounds device memory).')
  flags.DEFINE_bool('bicubic', False, 'Also write OUT_bicubic.png, the input upsampled by '
                    'bicubic interpolation to the same size, for comparison.')
  flags.DEFINE_bool('progress', False, 'Show a tqdm progress bar over the tiles.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  runtime.quiet_gc()
  FLAGS = flags.FLAGS
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every read at INFO
  in_path = FLAGS['in'].value
  if not FLAGS.workdir or not in_path:
    raise app.UsageError('--workdir and --in are required')
  try:
    info = run(FLAGS.workdir, in_path, out=FLAGS.out, step=FLAGS.step, prompt=FLAGS.prompt,
               seed=FLAGS.seed, tile=FLAGS.tile, overlap=FLAGS.overlap, times=FLAGS.times,
               batch=FLAGS.batch, bicubic=FLAGS.bicubic, progress=FLAGS.progress or None)
  except (UpsampleError, FileNotFoundError) as e:
    sys.exit(f'upsample: error: {e}')
  (h, w), (oh, ow) = info['in_size'], info['out_size']
  tiles = ' + '.join(str(p['tiles']) for p in info['passes'])
  print(f'upsample: {w}x{h} -> {ow}x{oh} px ({info["factor"]}x in {len(info["passes"])} '
        f'pass(es), {info["kind"]} checkpoint {info["step"]}, {tiles} tiles of '
        f'{info["passes"][0]["tile"]} px) in {info["seconds"]:.2f} s (compilation included; '
        f'model load {info["load_seconds"]:.1f} s)\n  wrote {info["out"]}' +
        (f'\n  bicubic {info["bicubic"]}' if info['bicubic'] else ''))


if __name__ == '__main__':
  define_flags()
  app.run(main)
