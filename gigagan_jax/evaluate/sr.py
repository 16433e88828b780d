r"""Super-resolution evaluation: PSNR / SSIM / LPIPS of SR runs against bicubic.

  python -m gigagan_jax.evaluate --task=sr --workdir=runs/up_tiny [--workdir=runs/srcnn ...]
      [--step=N] [--out=DIR] [--num_images=N] [--lpips_path=lpips_vgg.npz]
      [--batch_size=8] [--seed=0] [--hr_size=0] [--num_crops=4] [--crop_size=128]
      [--prompts=own,other,empty] [--tile=N] [--data_dir=DIR]

Protocol (written to sr_metrics.json as 'protocol'):
  * inputs: the held-out split ('test') of the runs' data config (from
    `--data_dir` instead of the runs' data.data_dir when given: data that
    moved, or a copy in object storage), read in
    stored order (no shuffle, no flip, no caption dropout: the real caption
    conditions the model), paired by the degradation the runs were trained
    with (data.degradation; `--hr_size` overrides the HR crop side, 0 = the
    whole stored image). Crop positions and degradation noise are seeded by
    `--seed`, so every model and bicubic see the same LR/HR arrays.
  * outputs are rounded to uint8 (what a user gets as a PNG) before any
    metric, as BasicSR does.
  * PSNR and SSIM: Y channel (BT.601), `crop_border = scale` pixels dropped
    on every side (BasicSR convention, gigagan_jax/evaluate/sr_metrics.py);
    averaged over images (the mean of per-image values, as SR tables do).
  * LPIPS-VGG (when --lpips_path names the npz converted by
    `python -m gigagan_jax.frozen.lpips`) on the whole RGB image, mean over images.
  * z of image i is jax.random.normal(PRNGKey(seed + i)): one sample of the
    stochastic upsampler (baselines ignore z).
  * prompts (`--prompts`, default all three): a text-conditioned upsampler
    gets one row per setting: 'own', each image's own caption; 'other', the
    caption of the held-out image half-way round the list, or the next after
    it whose caption differs (a caption that describes another image);
    'empty', the empty prompt. Bicubic and the baselines ignore text: one row
    each.
  * tiles (`--tile`): each model runs on LR tiles of the side it was trained
    on (data.degradation.hr_size / scale), blended as `python -m
    gigagan_jax.upsample` blends them (gigagan_jax/tiling.py, overlap a
    quarter of the tile), --batch_size tiles per call: a model is scored on
    inputs like those it learned from, as a user upsamples with it. --tile=N
    sets N LR px for every model; --tile=0 runs each image whole, in batches
    of --batch_size images. Held-out images no larger than a tile are one
    tile, the same as whole.
  * ms/image: the model's forward passes on the device, after a warm-up call
    (compilation excluded), input transfer and output pull (and the tiling's
    blending) included.

Several --workdir values put models side by side; they must share the scale
and the data (builder, data_dir, resolution, size, degradation), else the
numbers would not be comparable and the evaluation refuses. Bicubic's row
uses the same inputs (jax.image.resize, Keys a = -0.5, the bicubic the
models' residual base and the baselines use).

Writes to --out (default: FIRST_WORKDIR/eval/sr):
  sr_metrics.json   protocol, one entry per row (bicubic first) with means and per-image values
  sr_table.md       the markdown table (also printed)
  sr_crops.png      for the first --num_crops images: bicubic | model(s) (the first
                    prompt setting) | ground truth, centre crops of --crop_size HR pixels
"""
import json
import os
import time

import jax
import ml_collections
import numpy as np
from PIL import Image, ImageDraw

from gigagan_jax.data.pipeline import make_dataset
from gigagan_jax.evaluate import sr_metrics
from gigagan_jax.models.baselines import bicubic_upsample
from gigagan_jax import storage
from gigagan_jax.inference import run_config
from gigagan_jax.train.checkpoint import diff_configs
from gigagan_jax.train.samples import to_uint8
from gigagan_jax.upsample import SRModel, upsample_image

# Data fields that must agree between runs compared in one table.
_DATA_FIELDS = ('builder', 'data_dir', 'resolution', 'num_examples', 'image_key', 'caption_key',
                'caption_template')


# Prompt settings of text-conditioned models (see the module doc).
PROMPT_SETTINGS = ('own', 'other', 'empty')


class IncompatibleRunsError(ValueError):
  """Runs given together do not share scale or data."""


def _name(workdir: str) -> str:
  return os.path.basename(os.path.normpath(workdir))


def data_signature(config, hr_size: int | None = None) -> dict:
  """What decides the evaluation inputs of a run: data fields, degradation, scale."""
  d = config.data
  sig = {f: d.get(f) for f in _DATA_FIELDS}
  if sig['builder'] != 'captioned_shapes':
    del sig['num_examples']  # only the procedural builder is sized by it
  if sig['data_dir']:
    path = sig['data_dir']
    # Links resolved: one dataset reached by two local paths is one dataset.
    sig['data_dir'] = str(storage.run_path(path) if storage.is_remote(path)
                          else os.path.realpath(path))
  deg = d.degradation.to_dict()
  if hr_size is not None:
    deg['hr_size'] = hr_size
  sig['degradation'] = deg
  sig['scale'] = int(config.upsampler.scale)
  return sig


def check_compatible(configs: dict, hr_size: int | None = None) -> None:
  """Raises IncompatibleRunsError naming the runs and fields that differ.

  configs: {workdir: config}, the first is the reference.
  """
  items = list(configs.items())
  ref_dir, ref = items[0]
  ref_sig = data_signature(ref, hr_size)
  for workdir, config in items[1:]:
    diffs = diff_configs(ref_sig, data_signature(config, hr_size), labels=('', ' vs '))
    if diffs:
      what = 'scale' if any(x.startswith('scale:') for x in diffs) else 'data'
      raise IncompatibleRunsError(
          f'runs {ref_dir} and {workdir} differ in {what}, so their metrics would not be '
          'comparable; evaluate them separately. Differences (config.data.* / upsampler.scale):'
          '\n  ' + '\n  '.join(diffs))


def eval_data_config(config, hr_size: int | None = None) -> ml_collections.ConfigDict:
  """config.data for evaluation: one example per read, no augmentation, test split."""
  data = ml_collections.ConfigDict(config.data.to_dict())
  data.batch_size = 1          # every held-out example (make_dataset drops partial batches)
  data.random_flip = False
  data.caption_dropout = 0.0   # each held-out image keeps its whole caption
  data.caption_swap = 0.0
  data.word_dropout = 0.0
  data.num_workers = 0
  data.split = 'test'
  if hr_size is not None:
    data.degradation.hr_size = hr_size
  return data


def _no_tokens(captions):
  # Each model tokenizes the captions with its own tokenizer later.
  return {'tokens': np.zeros((len(captions), 1), np.int32),
          'eot': np.zeros((len(captions),), np.int32)}


def load_pairs(config, *, num_images: int | None = None, seed: int = 0,
               hr_size: int | None = None) -> dict:
  """The held-out (LR, HR) pairs of a run's data, in stored order.

  Returns {'lr': uint8 [N, h, w, 3], 'hr': uint8 [N, h*s, w*s, 3], 'captions': [N] str};
  N = num_images or the whole test split.
  """
  data = eval_data_config(config, hr_size)
  it = make_dataset(data, tokenize=_no_tokens, seed=seed, process_index=0, process_count=1,
                    shuffle=False, num_epochs=1, split='test', degradation=data.degradation)
  lr, hr, captions = [], [], []
  for batch in it:
    lr.append(batch['lr'][0])
    hr.append(batch['image'][0])
    captions.append(str(batch['caption'][0]))
    if num_images and len(lr) >= num_images:
      break
  if not lr:
    raise ValueError(f"the 'test' split of config.data.builder={data.builder!r} in "
                     f'{data.data_dir} is empty')
  return {'lr': np.stack(lr), 'hr': np.stack(hr), 'captions': captions}


def prompts_for(setting: str, captions: list) -> list | None:
  """The prompt of each image under `setting` ('own', 'other' or 'empty').

  'other' gives image i the caption of image i + n // 2 (cyclically), or of
  the next one after it whose caption differs from image i's; None when all
  captions are the same. Half-way round, not the next image: held-out crops
  of one photo sit side by side, and their captions describe the same scene.
  """
  if setting == 'own':
    return list(captions)
  if setting == 'empty':
    return [''] * len(captions)
  if setting != 'other':
    raise ValueError(f'prompt setting {setting!r}: expected one of {PROMPT_SETTINGS}')
  n, other = len(captions), []
  for i, own in enumerate(captions):
    start = i + max(1, n // 2)
    j = next((j % n for j in range(start, start + n) if captions[j % n] != own), None)
    if j is None:
      return None
    other.append(captions[j])
  return other


def _batches(n: int, batch: int):
  """Index arrays of fixed size `batch` covering 0..n-1 (the last padded with n-1)."""
  for start in range(0, n, batch):
    idx = np.arange(start, start + batch)
    yield np.minimum(idx, n - 1), min(batch, n - start)


def run_batched(fn, n: int, batch: int):
  """fn(indices [batch]) -> array [batch, ...] over all n items in fixed-size batches.

  Returns (numpy [n, ...], ms per item): fn is called once first as a warm-up
  (compilation), then timed over all batches, blocking on the last result.
  """
  first = next(_batches(n, batch))[0]
  jax.block_until_ready(fn(first))
  outs = []
  t0 = time.perf_counter()
  for idx, count in _batches(n, batch):
    outs.append((fn(idx), count))
  jax.block_until_ready([o for o, _ in outs])
  ms = (time.perf_counter() - t0) * 1000 / n
  return np.concatenate([np.asarray(o)[:c] for o, c in outs]), ms


def metrics_of(sr: np.ndarray, hr: np.ndarray, scale: int, lpips_params=None,
               batch: int = 8) -> dict:
  """Per-image metrics of uint8 outputs sr vs hr [N, H, W, 3]: psnr, ssim (Y, crop scale)
  and lpips (None without params), as float lists."""
  psnr = np.asarray(sr_metrics.psnr(sr, hr, crop_border=scale), np.float64)
  ssim = np.asarray(sr_metrics.ssim(sr, hr, crop_border=scale), np.float64)
  out = {'psnr': psnr.tolist(), 'ssim': ssim.tolist(), 'lpips': None}
  if lpips_params is not None:
    from gigagan_jax.frozen.lpips import lpips_distance  # pylint: disable=g-import-not-at-top
    x, y = sr.astype(np.float32) / 127.5 - 1, hr.astype(np.float32) / 127.5 - 1
    d, _ = run_batched(lambda i: lpips_distance(lpips_params, x[i], y[i]), len(sr), batch)
    out['lpips'] = np.asarray(d, np.float64).tolist()
  return out


def _row(name, kind, params, step, workdir, per_image, ms, prompt=None, tile=None) -> dict:
  mean = lambda v: None if v is None else float(np.mean(v))
  return {'name': name, 'kind': kind, 'prompt': prompt, 'params': params, 'step': step,
          'workdir': workdir, 'tile': tile,
          'psnr': mean(per_image['psnr']), 'ssim': mean(per_image['ssim']),
          'lpips': mean(per_image['lpips']), 'ms_per_image': ms, 'per_image': per_image}


def evaluate_model(model: SRModel, pairs: dict, *, batch_size: int = 8, seed: int = 0,
                   prompts: list | None = None, tile: int = 0):
  """uint8 outputs [N, H, W, 3] of `model` on pairs['lr'] and its ms/image, with
  `prompts` (default: pairs['captions']) and z of seed + i for image i.

  tile: 0 = whole images, batch_size at a time; else each image in LR tiles of
  this side (upsample_image), batch_size tiles at a time.
  """
  n = len(pairs['lr'])
  prompts = pairs['captions'] if prompts is None else prompts
  if tile:  # one image per call, its tiles batched inside
    def one(idx):
      i = int(idx[0])
      return upsample_image(model, pairs['lr'][i], prompt=prompts[i], seed=seed + i, tile=tile,
                            batch=batch_size)[0][None]
    return run_batched(one, n, 1)
  b = max(1, min(batch_size, n))
  lr = pairs['lr'].astype(np.float32) / 127.5 - 1
  text = model.text(prompts)
  z = model.latents(range(seed, seed + n))
  fn = lambda i: model(lr[i], {k: v[i] for k, v in text.items()}, z[i])
  out, ms = run_batched(fn, n, b)
  return to_uint8(out), ms


def bicubic_outputs(pairs: dict, scale: int, batch_size: int = 8):
  """Bicubic's uint8 outputs [N, H, W, 3] on pairs['lr'] (as the models' inputs) and ms/image."""
  n = len(pairs['lr'])
  lr = pairs['lr'].astype(np.float32) / 127.5 - 1
  up = jax.jit(lambda x: bicubic_upsample(x, scale))
  out, ms = run_batched(lambda i: up(lr[i]), n, max(1, min(batch_size, n)))
  return to_uint8(out), ms


def format_table(rows: list) -> str:
  """Markdown table of the rows (name, kind, prompt, tile, params, step, PSNR, SSIM,
  LPIPS, ms/image); prompt '-' for models that ignore text, tile '-' for bicubic."""
  fmt = lambda v, spec: '-' if v is None else format(v, spec)
  lines = ['| model | kind | prompt | tile | params | step | PSNR (dB) | SSIM | LPIPS | ms/image |',
           '|---|---|---|---:|---:|---:|---:|---:|---:|---:|']
  for r in rows:
    params = '0' if not r['params'] else f'{r["params"] / 1e6:.3f}M'
    tile = {None: '-', 0: 'whole'}.get(r.get('tile'), r.get('tile'))
    lines.append(f'| {r["name"]} | {r["kind"]} | {r.get("prompt") or "-"} | {tile} | {params} | '
                 f'{fmt(r["step"], "d")} | '
                 f'{fmt(r["psnr"], ".3f")} | {fmt(r["ssim"], ".4f")} | {fmt(r["lpips"], ".4f")} | '
                 f'{fmt(r["ms_per_image"], ".2f")} |')
  return '\n'.join(lines)


def crops_image(columns: list, names: list, count: int, crop_size: int, pad: int = 2) -> np.ndarray:
  """One uint8 image: a row per image (the first `count`), a column per output.

  columns: uint8 [N, H, W, 3] per column; each cell is the centre crop of
  min(crop_size, H, W) px, enlarged with hard pixels to at least 128 px so
  small crops stay visible; the column names are written on top.
  """
  h, w = columns[0].shape[1:3]
  c = min(crop_size, h, w)
  y, x = (h - c) // 2, (w - c) // 2
  up = max(1, -(-128 // c))
  cell = c * up
  label_h = 14
  n = min(count, len(columns[0]))
  img = np.full((label_h + pad + n * (cell + pad), len(columns) * (cell + pad) + pad, 3), 255,
                np.uint8)
  for j, col in enumerate(columns):
    for i in range(n):
      crop = col[i, y:y + c, x:x + c].repeat(up, 0).repeat(up, 1)
      top, left = label_h + pad + i * (cell + pad), pad + j * (cell + pad)
      img[top:top + cell, left:left + cell] = crop
  pil = Image.fromarray(img)
  draw = ImageDraw.Draw(pil)
  for j, name in enumerate(names):
    draw.text((pad + j * (cell + pad) + 2, 1), name[:max(4, cell // 6)], fill=(0, 0, 0))
  return np.asarray(pil)


def evaluate_runs(workdirs, *, step: int | None = None, out_dir: str | None = None,
                  num_images: int | None = None, lpips_path: str | None = None,
                  batch_size: int = 8, seed: int = 0, hr_size: int | None = None,
                  num_crops: int = 4, crop_size: int = 128, prompts=PROMPT_SETTINGS,
                  tile: int | None = None, data_dir: str | None = None,
                  verbose: bool = True) -> dict:
  """Evaluates the EMA upsampler of each run (checkpoint `step`, default latest) and bicubic.

  prompts: the settings of PROMPT_SETTINGS a text-conditioned model is evaluated
  under, one row each (see the module doc). tile: LR tile side (None: each
  run's training LR side; 0: whole images). data_dir: read the data there
  instead of at each run's config.data.data_dir.

  Returns the record written to OUT/sr_metrics.json: {'protocol': {...},
  'rows': [bicubic row, one row per run (and prompt setting)], 'table': markdown}; see the
  module doc.
  Raises IncompatibleRunsError when the runs differ in scale or data,
  FileNotFoundError for a missing run, checkpoint or LPIPS file.
  """
  workdirs, prompts = list(workdirs), list(prompts)
  if not workdirs:
    raise ValueError('give at least one --workdir')
  if not prompts or set(prompts) - set(PROMPT_SETTINGS):
    raise ValueError(f'--prompts={",".join(prompts)}: expected one or more of '
                     f'{",".join(PROMPT_SETTINGS)}')
  if tile is not None and tile < 0:
    raise ValueError(f'--tile={tile}: expected 0 (whole images) or a tile side >= 1')
  if data_dir and not storage.run_path(data_dir).is_dir():
    raise FileNotFoundError(f'--data_dir={data_dir} is not a directory')
  if lpips_path and not os.path.isfile(lpips_path):
    raise FileNotFoundError(f'--lpips_path={lpips_path} is not a file (convert the weights with '
                            'python -m gigagan_jax.frozen.lpips LIN.pth VGG16.pth OUT.npz)')
  configs = {}
  for w in workdirs:  # configs first: refuse incompatible runs before any heavy work
    config, _ = run_config(w, step)
    if config.get('task', 't2i') != 'sr':
      raise IncompatibleRunsError(f'{w} is a {config.get("task", "t2i")!r} run, not a '
                                  "super-resolution run (use --task=t2i)")
    if data_dir:
      config.data.data_dir = data_dir
    configs[w] = config
  check_compatible(configs, hr_size)
  ref = configs[workdirs[0]]
  scale = int(ref.upsampler.scale)
  out_dir = storage.run_path(out_dir) if out_dir else storage.run_path(workdirs[0]) / 'eval' / 'sr'
  say = print if verbose else (lambda *a, **k: None)

  pairs = load_pairs(ref, num_images=num_images, seed=seed, hr_size=hr_size)
  n = len(pairs['lr'])
  say(f'evaluate sr: {n} held-out images, {pairs["lr"].shape[1]}x{pairs["lr"].shape[2]} -> '
      f'{pairs["hr"].shape[1]}x{pairs["hr"].shape[2]} ({scale}x)')
  lpips_params = None
  if lpips_path:
    from gigagan_jax.frozen.lpips import load_params_npz  # pylint: disable=g-import-not-at-top
    lpips_params = load_params_npz(lpips_path)

  bic, ms = bicubic_outputs(pairs, scale, batch_size)
  rows = [_row('bicubic', 'bicubic', 0, None, None,
               metrics_of(bic, pairs['hr'], scale, lpips_params, batch_size), ms)]
  outputs, names = [bic], ['bicubic']
  seen = {}
  for w in workdirs:
    model = SRModel.from_run(w, step)
    name = _name(w)
    seen[name] = seen.get(name, 0) + 1
    if seen[name] > 1:  # two runs named alike (a/run, b/run): keep rows apart
      name = f'{name}#{seen[name]}'
    # Only GigaGAN's upsampler reads the text; the baselines get one row.
    settings = prompts if model.kind == 'gigagan' else [None]
    model_tile = model.train_tile if tile is None else tile
    for i, setting in enumerate(settings):
      texts = prompts_for(setting, pairs['captions']) if setting else None
      if setting and texts is None:
        say(f"  {name}: no 'other' prompt setting, every held-out caption is the same")
        continue
      sr, ms = evaluate_model(model, pairs, batch_size=batch_size, seed=seed, prompts=texts,
                              tile=model_tile)
      rows.append(_row(name, model.kind, model.num_params(), model.step,
                       str(storage.run_path(w)),
                       metrics_of(sr, pairs['hr'], scale, lpips_params, batch_size), ms, setting,
                       model_tile))
      if i == 0:
        outputs.append(sr)
        names.append(name)
      say(f'  {name}' + (f' ({setting} prompt)' if setting else '') +
          f': PSNR {rows[-1]["psnr"]:.3f} dB, SSIM {rows[-1]["ssim"]:.4f}')

  table = format_table(rows)
  crops = crops_image(outputs + [pairs['hr']], names + ['ground truth'], num_crops, crop_size)
  storage.save_image(Image.fromarray(crops), out_dir / 'sr_crops.png')
  deg = ref.data.degradation
  record = {
      'protocol': {
          'split': 'test', 'builder': ref.data.builder,
          'data_dir': str(storage.run_path(ref.data.data_dir)), 'resolution': ref.data.resolution,
          'degradation': deg.mode, 'hr_size': int(pairs['hr'].shape[1]),
          'lr_size': int(pairs['lr'].shape[1]), 'scale': scale, 'num_images': n, 'seed': seed,
          'crop_border': scale, 'psnr_ssim_channel': 'Y (BT.601)', 'output': 'uint8-rounded',
          'lpips': 'LPIPS-VGG, ' + lpips_path if lpips_path else None,
          'z': 'jax.random.normal(PRNGKey(seed + i), (z_dim,))', 'batch_size': batch_size,
          'device': jax.devices()[0].device_kind, 'captions': pairs['captions'],
          'prompt_settings': prompts,
          'tile': 'training LR side of each run' if tile is None else tile,
      },
      'rows': rows,
      'table': table,
      'crops': {'file': 'sr_crops.png', 'columns': names + ['ground truth'],
                'images': min(num_crops, n)},
  }
  storage.write_atomic(out_dir / 'sr_metrics.json', json.dumps(record, indent=1).encode())
  storage.write_atomic(out_dir / 'sr_table.md', (
            f'SR evaluation: {n} held-out images of {ref.data.builder} ({deg.mode} degradation), '
            f'{record["protocol"]["lr_size"]} -> {record["protocol"]["hr_size"]} px ({scale}x); '
            f'PSNR/SSIM on Y, {scale}-px border cropped; tile: the LR tile side each model '
            f'ran on.\n\n{table}\n').encode())
  say(table)
  say(f'evaluate sr: wrote {out_dir}/sr_metrics.json, sr_table.md, sr_crops.png')
  return record


# ---------------------------------------------------------------------- CLI glue

def define_flags(flags):
  """The --task=sr flags, defined by gigagan_jax/evaluate/__main__.py (absl `flags` module)."""
  flags.DEFINE_string('out', None, "--task=sr: output directory; default FIRST_WORKDIR/eval/sr.")
  flags.DEFINE_integer('num_images', None, "--task=sr: held-out images to evaluate; default all "
                       "of the 'test' split.")
  flags.DEFINE_string('lpips_path', None, '--task=sr: LPIPS-VGG npz (python -m '
                      'gigagan_jax.frozen.lpips); without it LPIPS is left out.')
  flags.DEFINE_integer('batch_size', 8, '--task=sr: images per model call.')
  flags.DEFINE_integer('seed', 0, '--task=sr: seeds HR crop positions, degradation noise and z.')
  flags.DEFINE_integer('hr_size', None, '--task=sr: HR crop side instead of the trained '
                       'data.degradation.hr_size; 0 = the whole stored image.')
  flags.DEFINE_integer('num_crops', 4, '--task=sr: images shown in sr_crops.png.')
  flags.DEFINE_integer('tile', None, '--task=sr: LR tile side each model runs on; default: '
                       'the LR side it was trained on (data.degradation.hr_size / scale); 0 = '
                       'whole images.')
  flags.DEFINE_string('data_dir', None, "--task=sr: read the held-out data from this directory "
                      "instead of the runs' config.data.data_dir (local or gs://).")
  flags.DEFINE_integer('crop_size', 128, '--task=sr: side (HR px) of the centre crops shown.')
  flags.DEFINE_list('prompts', list(PROMPT_SETTINGS), '--task=sr: prompt settings of '
                    "text-conditioned models, one row each: 'own' (the image's caption), "
                    "'other' (another held-out image's), 'empty'.")


def main(FLAGS) -> dict:
  """Runs the evaluation from parsed flags (--workdir may repeat)."""
  return evaluate_runs(FLAGS.workdir, step=FLAGS.step, out_dir=FLAGS.out,
                       num_images=FLAGS.num_images, lpips_path=FLAGS.lpips_path,
                       batch_size=FLAGS.batch_size, seed=FLAGS.seed, hr_size=FLAGS.hr_size,
                       num_crops=FLAGS.num_crops, crop_size=FLAGS.crop_size,
                       prompts=FLAGS.prompts, tile=FLAGS.tile, data_dir=FLAGS.data_dir)
