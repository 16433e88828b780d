"""Sampling from a run's G_ema: grids, style and prompt mixing, interpolations.

  python -m gigagan_jax.sample --workdir=runs/tiny --prompt="a red circle" \
      --prompt="two blue squares" --seeds=0,1,2,3 [--mode=grid] [--psi=0.7]

Modes (--mode):
  grid           every --prompt (rows) x every seed (columns)
  style_mix      per prompt: coarse scales from each seed (rows), fine scales
                 from each --mix_seeds seed (columns); --crossover = first fine scale
  prompt_mix     per seed: layout (coarse scales: styles and cross-attention
                 tokens) from each --prompt, texture (fine scales) from --prompt_b
  interp_latent  per prompt: --frames from the first seed to each next one
                 (linear in w)
  interp_prompt  per seed: --frames from each --prompt to --prompt_b (linear in
                 w and in T's token features; cross-attention sees the tokens
                 of both prompts)
Interpolations are written as a frame strip (PNG) and an animated GIF.

Everything lands in --out (default WORKDIR/samples_cli/MODE): one PNG per
image, the grids, and settings.json naming for every file the checkpoint,
prompts, seeds, psi, crossover and interpolation weight that made it.
Truncation pulls w toward the mean w of each image's own caption.

Chaining: --upsampler=SR_RUN also passes every image through a trained
upsampler (configs/up_*.py), e.g. 64 -> 512 px, or twice with
--upsample_times=2, and writes NNNN_xS.png next to NNNN.png.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from PIL import Image

from gigagan_jax import parallel
from gigagan_jax import runtime
from gigagan_jax import storage
from gigagan_jax import upsample
from gigagan_jax.config_utils import num_scales
# Opening runs lives in gigagan_jax.inference; the names stay importable from here.
from gigagan_jax.inference import checkpoint_steps, load_run, run_config  # noqa: F401
from gigagan_jax.models.build import build_models
from gigagan_jax.models.generator import mix_scales, per_scale, truncate
from gigagan_jax.text.backbone import make_backbone
from gigagan_jax.text.tokenizer import make_tokenizer
from gigagan_jax.train.samples import grid, save_png, to_uint8

MODES = ('grid', 'style_mix', 'prompt_mix', 'interp_latent', 'interp_prompt')


class Sampler:
  """G_ema's pieces (text encoding, mapping, synthesis) as jitted functions.

  Images come out in fixed-size batches (padded), so any number of images
  costs one compilation per function; with a mesh, each batch is split over
  its devices.
  """

  def __init__(self, config, params, *, psi: float = 1.0, batch_size: int = 16,
               mean_samples: int = 256, seed: int = 0, mesh=None):
    g, _ = build_models(config, make_tokenizer(config.text).vocab_size)
    self.g, self.psi, self.batch_size, self.mesh = g, psi, batch_size, mesh
    self.set_params(params)
    self.num_scales = num_scales(config.generator.resolution)
    self.z_dim = config.generator.z_dim
    self.tokenizer = make_tokenizer(config.text)
    self.backbone = make_backbone(config.text)
    self._mean_key = jax.random.PRNGKey(seed)
    # Params are arguments, not constants baked into the programs, so
    # set_params (the next checkpoint) reuses the compiled functions.
    fn = lambda method, *static: jax.jit(
        lambda p, *a: g.apply({'params': p}, *a, *static, method=method))
    encode, map_, mean_w = fn('encode_text'), fn('map'), fn('mean_w', mean_samples)
    synth = jax.jit(lambda p, *a: g.apply({'params': p}, *a, method='synthesize')[0])
    self._encode = lambda *a: encode(self.params, *a)
    self._map = lambda *a: map_(self.params, *a)
    self._mean_w = lambda *a: mean_w(self.params, *a)
    self._synth = lambda *a: synth(self.params, *a)

  def set_params(self, params):
    """Samples from G_ema params `params` from now on (on every mesh device); None (also
    accepted by the constructor) leaves the sampler unusable until params are set."""
    self.params = params if self.mesh is None else jax.device_put(
        params, parallel.replicated(self.mesh))

  def latents(self, seeds) -> np.ndarray:
    """[N, z_dim]: z of each seed, the same whatever else is sampled with it."""
    return np.stack([np.asarray(jax.random.normal(jax.random.PRNGKey(s), (self.z_dim,)))
                     for s in seeds])

  def text(self, prompts):
    """Token features of T for `prompts`: (t_local [N, L, C], t_global [N, C], mask [N, L])
    and the tokenized text (for the truncation centre)."""
    text = self.tokenizer(list(prompts))
    if self.backbone is not None:
      text['features'] = self.backbone.apply(self.backbone.params, text['tokens'], text['eot'])
    return self._encode(text), text

  def styles(self, z, prompts):
    """w [N, w_dim] for latents z [N, z_dim] and one prompt per row, truncated by psi."""
    (_, t_global, _), text = self.text(prompts)
    w = self._map(jnp.asarray(z), t_global)
    if self.psi != 1.0:
      w = truncate(w, self._mean_w(text, self._mean_key), self.psi)
    return w

  def synthesize(self, ws, t_local, t_mask) -> np.ndarray:
    """uint8 [N, R, R, 3] from per-scale ws [N, S, w_dim] and t_local [N, S, L, C], t_mask [N, S, L]."""
    return to_uint8(parallel.map_batches(self._synth, (ws, t_local, t_mask), self.batch_size,
                                         self.mesh))

  # ------------------------------------------------------------------ modes

  def images(self, seeds, prompts) -> np.ndarray:
    """One image per (seed, prompt) pair: uint8 [N, R, R, 3]."""
    (t_local, _, mask), _ = self.text(prompts)
    w = self.styles(self.latents(seeds), prompts)
    s = self.num_scales
    return self.synthesize(per_scale(w, s), per_scale(t_local, s), per_scale(mask, s))

  def style_mix(self, coarse_seeds, fine_seeds, prompts, crossover: int) -> np.ndarray:
    """Scales < crossover styled by coarse_seeds[i], the rest by fine_seeds[i]."""
    (t_local, _, mask), _ = self.text(prompts)
    s = self.num_scales
    ws = mix_scales(per_scale(self.styles(self.latents(coarse_seeds), prompts), s),
                    per_scale(self.styles(self.latents(fine_seeds), prompts), s), crossover)
    return self.synthesize(ws, per_scale(t_local, s), per_scale(mask, s))

  def prompt_mix(self, seeds, prompts_a, prompts_b, crossover: int) -> np.ndarray:
    """Scales < crossover see prompt A (styles and tokens), the rest prompt B."""
    z, s = self.latents(seeds), self.num_scales
    (tl_a, _, m_a), _ = self.text(prompts_a)
    (tl_b, _, m_b), _ = self.text(prompts_b)
    mix = lambda a, b: mix_scales(per_scale(a, s), per_scale(b, s), crossover)
    return self.synthesize(mix(self.styles(z, prompts_a), self.styles(z, prompts_b)),
                           mix(tl_a, tl_b), mix(m_a, m_b))

  def interpolate(self, seeds_a, seeds_b, prompts_a, prompts_b, alphas) -> np.ndarray:
    """Frames between (seed A, prompt A) and (seed B, prompt B): uint8 [N, F, R, R, 3].

    w and T's token features move linearly; cross-attention reads the tokens
    of both prompts along the way (only A's at alpha 0, only B's at 1).
    """
    s, n = self.num_scales, len(seeds_a)
    (tl_a, _, m_a), _ = self.text(prompts_a)
    (tl_b, _, m_b), _ = self.text(prompts_b)
    w_a = self.styles(self.latents(seeds_a), prompts_a)
    w_b = self.styles(self.latents(seeds_b), prompts_b)
    a = jnp.asarray(alphas, jnp.float32)[None, :, None]
    lerp = lambda x, y: ((1 - a) * x[:, None] + a * y[:, None]).reshape((-1,) + x.shape[1:])
    w, tl = lerp(w_a, w_b), lerp(tl_a.reshape(n, -1), tl_b.reshape(n, -1))
    tl = tl.reshape((-1,) + tl_a.shape[1:])
    at_a = jnp.asarray(alphas) == 0
    at_b = jnp.asarray(alphas) == 1
    mask = ((m_a[:, None] & ~at_b[None, :, None]) | (m_b[:, None] & ~at_a[None, :, None]))
    mask = mask.reshape((-1,) + m_a.shape[1:])
    frames = self.synthesize(per_scale(w, s), per_scale(tl, s), per_scale(mask, s))
    return frames.reshape((n, len(alphas)) + frames.shape[1:])


# ---------------------------------------------------------------------- CLI

def define_flags():
  """Flags of the CLI, defined only when run as a program so importing this
  module (tests, notebooks) never collides with another CLI's flags."""
  flags.DEFINE_string('workdir', None, 'Training run directory (its checkpoints/).')
  flags.DEFINE_integer('step', None, 'Checkpoint step; default: the latest.')
  flags.DEFINE_multi_string('prompt', [], 'A prompt; repeat the flag for several.')
  flags.DEFINE_string('prompts_file', None, 'Text file with one prompt per line (added to --prompt).')
  flags.DEFINE_string('prompt_b', None, 'prompt_mix: texture prompt; interp_prompt: end prompt.')
  flags.DEFINE_list('seeds', ['0', '1', '2', '3'], 'Latent seeds.')
  flags.DEFINE_list('mix_seeds', ['100', '101', '102', '103'], 'style_mix: fine-scale seeds.')
  flags.DEFINE_enum('mode', 'grid', MODES, 'What to draw (see the module docstring).')
  flags.DEFINE_float('psi', 1.0, 'Truncation: 1 = none, 0 = the mean w of the caption.')
  flags.DEFINE_integer('crossover', None, 'style_mix/prompt_mix: first scale (0 = 4 px) taken from '
                       'the fine side; default: half of the scales.')
  flags.DEFINE_integer('frames', 8, 'Interpolation frames, ends included.')
  flags.DEFINE_integer('batch_size', 16, 'Images per generator call.')
  flags.DEFINE_integer('gif_ms', 120, 'GIF frame duration in milliseconds.')
  flags.DEFINE_string('out', None, 'Output directory; default WORKDIR/samples_cli/MODE.')
  flags.DEFINE_string('upsampler', None, 'A super-resolution run (config.task=sr): every image '
                      'is also upsampled by its EMA model, with the image\'s prompt and seed, '
                      'and written next to it as NNNN_xS.png.')
  flags.DEFINE_integer('upsampler_step', None, 'Checkpoint of --upsampler; default: the latest.')
  flags.DEFINE_integer('upsample_times', 1, 'Passes of the upsampler (2: e.g. 64 -> 512 -> 4096).')
  flags.DEFINE_integer('upsample_tile', None, 'Low-res tile side of the upsampler passes; '
                       'default: the LR side the upsampler was trained on.')


FLAGS = flags.FLAGS


def read_prompts(prompts, prompts_file) -> list[str]:
  prompts = list(prompts)
  if prompts_file:
    text = storage.run_path(prompts_file).read_text()
    prompts += [line.strip() for line in text.splitlines() if line.strip()]
  if not prompts:
    raise app.UsageError('give at least one --prompt or a --prompts_file')
  return prompts


def run(workdir, *, prompts, seeds, mode='grid', step=None, prompt_b=None, mix_seeds=(100,),
        psi=1.0, crossover=None, frames=8, batch_size=16, gif_ms=120, out=None,
        upsampler=None, upsampler_step=None, upsample_times=1, upsample_tile=None) -> dict:
  """Draws and writes the images of `mode`; returns the settings written to settings.json.

  With `upsampler` (an SR run's workdir) every image also goes through that
  run's EMA upsampler `upsample_times` times, tiled by `upsample_tile` (None: the
  LR side it was trained on).
  """
  if mode in ('prompt_mix', 'interp_prompt') and not prompt_b:
    raise app.UsageError(f'--mode={mode} needs --prompt_b')
  config, step, params = load_run(workdir, step)
  sampler = Sampler(config, params, psi=psi, batch_size=batch_size, seed=config.seed)
  crossover = sampler.num_scales // 2 if crossover is None else crossover
  out = storage.run_path(out) if out else storage.run_path(workdir) / 'samples_cli' / mode
  seeds, mix_seeds = [int(s) for s in seeds], [int(s) for s in mix_seeds]
  records, rows = [], None  # rows: (name of grid, uint8 images [rows, cols, R, R, 3])

  if mode == 'grid':
    pairs = [(p, s) for p in prompts for s in seeds]
    imgs = sampler.images([s for _, s in pairs], [p for p, _ in pairs])
    records = [{'prompt': p, 'seed': s} for p, s in pairs]
    rows = imgs.reshape((len(prompts), len(seeds)) + imgs.shape[1:])
  elif mode == 'style_mix':
    combos = [(p, a, b) for p in prompts for a in seeds for b in mix_seeds]
    imgs = sampler.style_mix([a for _, a, _ in combos], [b for *_, b in combos],
                             [p for p, *_ in combos], crossover)
    records = [{'prompt': p, 'seed': a, 'fine_seed': b, 'crossover': crossover}
               for p, a, b in combos]
    rows = imgs.reshape((len(prompts) * len(seeds), len(mix_seeds)) + imgs.shape[1:])
  elif mode == 'prompt_mix':
    combos = [(p, s) for p in prompts for s in seeds]
    imgs = sampler.prompt_mix([s for _, s in combos], [p for p, _ in combos],
                              [prompt_b] * len(combos), crossover)
    records = [{'prompt': p, 'prompt_b': prompt_b, 'seed': s, 'crossover': crossover}
               for p, s in combos]
    rows = imgs.reshape((len(prompts), len(seeds)) + imgs.shape[1:])
  else:
    alphas = np.linspace(0.0, 1.0, frames)
    if mode == 'interp_latent':
      if len(seeds) < 2:
        raise app.UsageError('--mode=interp_latent needs at least two --seeds')
      ends = [(seeds[0], s, p, p) for p in prompts for s in seeds[1:]]
    else:
      ends = [(s, s, p, prompt_b) for p in prompts for s in seeds]
    rows = sampler.interpolate(*zip(*ends), alphas)  # seeds A, seeds B, prompts A, prompts B
    imgs = rows.reshape((-1,) + rows.shape[2:])
    records = [{'seed': sa, 'seed_b': sb, 'prompt': pa, 'prompt_b': pb, 'alpha': float(t)}
               for sa, sb, pa, pb in ends for t in alphas]
    for i, strip in enumerate(rows):
      frames_ = [Image.fromarray(f) for f in strip]
      storage.save_image(frames_[0], out / f'interp_{i:03d}.gif', save_all=True,
                         append_images=frames_[1:] + frames_[-2:0:-1], duration=gif_ms, loop=0)

  sr_model = None
  if upsampler:
    sr_model = upsample.SRModel.from_run(upsampler, upsampler_step)
  for i, (img, rec) in enumerate(zip(imgs, records)):
    rec['file'] = f'{i:04d}.png'
    storage.save_image(Image.fromarray(img), out / rec['file'])
    if sr_model is not None:
      # The upsampler sees the caption the image was drawn for (the start one
      # of an interpolation) and a z from the same seed.
      hr, _ = upsample.upsample_image(sr_model, img, prompt=rec['prompt'], seed=rec['seed'],
                                      tile=upsample_tile, times=upsample_times)
      rec['upsampled'] = f'{i:04d}_x{hr.shape[0] // img.shape[0]}.png'
      storage.save_image(Image.fromarray(hr), out / rec['upsampled'])
  upscale = max(1, 128 // imgs.shape[1])
  save_png(grid(rows.reshape((-1,) + rows.shape[2:]), rows.shape[0]),
           out / 'grid.png', upscale=upscale)
  settings = {'workdir': str(storage.run_path(workdir)), 'step': step, 'mode': mode, 'psi': psi,
              'truncation_centre': 'mean w of each caption',
              'latent': 'jax.random.normal(PRNGKey(seed), (z_dim,))', 'images': records}
  if sr_model is not None:
    settings['upsampler'] = {'workdir': str(storage.run_path(upsampler)), 'step': sr_model.step,
                             'kind': sr_model.kind, 'times': upsample_times,
                             'tile': upsample_tile or sr_model.train_tile}
  storage.write_bytes(out / 'settings.json', json.dumps(settings, indent=1).encode())
  return settings


def main(argv):
  del argv
  runtime.quiet_gc()
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every read at INFO
  if not FLAGS.workdir:
    raise app.UsageError('--workdir is required')
  settings = run(FLAGS.workdir, prompts=read_prompts(FLAGS.prompt, FLAGS.prompts_file),
                 seeds=FLAGS.seeds, mode=FLAGS.mode, step=FLAGS.step, prompt_b=FLAGS.prompt_b,
                 mix_seeds=FLAGS.mix_seeds, psi=FLAGS.psi, crossover=FLAGS.crossover,
                 frames=FLAGS.frames, batch_size=FLAGS.batch_size, gif_ms=FLAGS.gif_ms,
                 out=FLAGS.out, upsampler=FLAGS.upsampler, upsampler_step=FLAGS.upsampler_step,
                 upsample_times=FLAGS.upsample_times, upsample_tile=FLAGS.upsample_tile)
  out = FLAGS.out or storage.run_path(FLAGS.workdir) / 'samples_cli' / FLAGS.mode
  print(f'{len(settings["images"])} images of checkpoint {settings["step"]} in {out}/ '
        '(grid.png, settings.json)')


if __name__ == '__main__':
  define_flags()
  app.run(main)
