r"""4x super-resolution on natural images: GigaGAN's tiny upsampler and SRCNN vs bicubic.

  python bench/sr_natural.py --root=runs/sr_natural --minutes=8 --gan_steps=1000  # README table
  python bench/sr_natural.py --root=/tmp/sr_smoke --steps=5 --gan_steps=5 --gan_ramp=2  # smoke
  python bench/sr_natural.py --root=runs/sr_val --held_out=validation --minutes=4 \
      --models=srcnn,up_tiny_psnr --override=--config.data.word_dropout=0.5  # choosing settings

Does the upsampler beat bicubic and SRCNN on natural images and captions it
never saw? Stages (each prints the command it runs; re-running keeps
what is there: a run bounded by --steps resumes up to them, a --minutes run
that has a checkpoint is not trained again (its wall time was spent), so the
same command then only evaluates; --overwrite_data / a fresh --root starts
over):

  1. images   scikit-image's bundled sample images (no download) written to
              ROOT/src as PNG + .txt caption sidecars: 14 for training
              (rocket, hubble_deep_field, retina, immunohistochemistry,
              brick, grass, gravel, colorwheel, camera, coins, moon, page,
              text, logo), as up to 4 native-resolution 256 px tiles of each
              (--train_tiles=2: 39 files; 0: each whole image resized to 256
              px), and 13 held-out 256 px crops of 4 photos that
              training never sees (astronaut, chelsea, coffee and
              stereo_motorcycle at their own size), each with its own caption.
  2. data     `image_folder` prepared at --resolution (256) px in ROOT/data
              with test_fraction 0.5. image_folder puts a file in 'test' when
              crc32(its relative path) / 2**32 < test_fraction; the file
              names here carry a numeric suffix chosen so that exactly the
              held-out crops hash into 'test' and the training files into 'train'
              (one data_dir, the stock builder, and the split is checked
              after the build). ROOT/data/sr_natural_files.json records the
              files it was built from: a ROOT/data of another --held_out or
              --train_tiles stops the run (--overwrite_data rebuilds it).
  3. train    each of --models (MODELS below), at most --steps each and, with
              --minutes, for that wall time each (equal-time comparisons), on
              random --hr_size (64) px HR crops with their bicubic 4x LR
              inputs (16 px), random flips on; one `python -m
              gigagan_jax.train` per model (ROOT/<name>). up_tiny_gan copies
              up_tiny_psnr's run and continues it for --gan_steps with the GAN
              term ramped in.
  4. evaluate `python -m gigagan_jax.evaluate --task=sr` on the runs with
              --eval_hr_size (0: the whole 256 px held-out crops, 64 px LR
              inputs, 4x), each model run on LR tiles of its training
              side (16 px; --eval_tile=0: whole 64 px inputs, which cost
              the upsampler 0.14 dB on the validation crops and -0.02 to
              +0.09 on the test crops, SRCNN nothing; ABLATION.md): the
              PSNR/SSIM (Y, 4 px border) table vs bicubic,
              the text-conditioned models under each prompt setting (own
              caption, another crop's, empty), written to
              ROOT/eval/sr_table.md, sr_metrics.json, sr_crops.png.
              --noevaluate skips this stage (train now, score chosen
              checkpoints later).

Grayscale samples (camera, coins, moon, page, text) become 3 equal channels;
page and text are smaller than 256 px and get upscaled (image_folder's
report says so): blurry training targets, kept because 14 images is little.
Extra training overrides for every model: --override=--config.optim.g_lr=...
(repeatable).
"""
import json
import os
import shutil
import subprocess
import sys
import zlib

from absl import app
from absl import flags
from absl import logging
import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

TRAIN = {  # skimage.data function -> caption
    'rocket': 'a rocket on a launch pad under a blue sky',
    'hubble_deep_field': 'a deep field of distant galaxies in space',
    'retina': 'a photo of the retina of a human eye',
    'immunohistochemistry': 'a stained tissue sample under a microscope',
    'brick': 'a gray brick wall texture',
    'grass': 'a close-up texture of grass',
    'gravel': 'a close-up texture of gravel',
    'colorwheel': 'a color wheel',
    'camera': 'a black and white photo of a cameraman with a tripod',
    'coins': 'a black and white photo of old coins',
    'moon': 'a black and white photo of the surface of the moon',
    'page': 'a scanned page of printed text',
    'text': 'a photo of handwritten and printed text on a sign',
    'logo': 'the scikit-image logo',
}
# Held out: 256 px crops of photos at their own size, each with its own
# caption (crop name -> (photo, top, left, caption)); 13 crops of 4 photos that
# training never sees. A photo is a skimage.data function, or 'motorcycle': the
# left view of stereo_motorcycle.
HELD_OUT = {
    'astronaut_flag': ('astronaut', 0, 0,
                       'an American flag beside the smiling face of a woman astronaut'),
    'astronaut_shuttle': ('astronaut', 0, 256,
                          'a model of the space shuttle beside the collar of a space suit'),
    'astronaut_patch': ('astronaut', 256, 0, 'an orange space suit with a round mission patch'),
    'astronaut_helmet': ('astronaut', 256, 256,
                         'a black space helmet beside an orange space suit with a name tag'),
    'chelsea_eye': ('chelsea', 22, 40, 'the green eye and striped fur of a tabby cat'),
    'chelsea_nose': ('chelsea', 44, 195, 'the pink nose and green eye of a tabby cat'),
    'coffee_cup': ('coffee', 72, 60, 'a cup of espresso in a red cup on a saucer'),
    'coffee_spoon': ('coffee', 110, 300, 'a silver spoon on a red saucer on a wooden table'),
    'motorcycle_bench': ('motorcycle', 0, 0, 'a wooden bench and a bicycle in a garage'),
    'motorcycle_seat': ('motorcycle', 100, 100, 'the black seat of a red motorcycle'),
    'motorcycle_tank': ('motorcycle', 100, 330,
                        'the red fuel tank and engine of a Yamaha motorcycle'),
    'motorcycle_light': ('motorcycle', 50, 480,
                         'the headlight of a motorcycle in front of shelves with boxes'),
    'motorcycle_wheel': ('motorcycle', 244, 480,
                         'the front wheel of a red motorcycle on a concrete floor'),
}
# A validation set to choose settings on, so that the table's held-out crops
# are not tuned on (--held_out=validation): 13 crops of three photos that
# neither set otherwise holds. matplotlib's grace_hopper.jpg (600 x 512), the
# only one until 2026-12-06, gave margins over SRCNN 0.35 dB above the test
# crops' (ABLATION.md); scikit-learn's china.jpg and flower.jpg (640 x 427)
# add a building, a landscape and a flower.
VALIDATION = {
    'grace_a': ('grace', 0, 0, 'the dark background beside the grey hair of a woman'),
    'grace_b': ('grace', 0, 256, 'the face and grey hair of an old woman in a portrait'),
    'grace_c': ('grace', 256, 0, 'a grey curl of hair against a blue background'),
    'grace_d': ('grace', 256, 256, 'the sleeve of a dark navy uniform with gold stripes'),
    'grace_e': ('grace', 344, 0, 'medals and ribbons on the chest of a navy uniform'),
    'grace_f': ('grace', 344, 256, 'a white collar and a dark jacket with a medal'),
    'china_pagoda': ('china', 0, 60, 'a Chinese pagoda with orange tiled roofs in a hazy sky'),
    'china_pillars': ('china', 160, 40, 'red pillars and green eaves of a pagoda above trees'),
    'china_lake': ('china', 120, 330, 'a wide lake with a small island and boats in the haze'),
    'china_trees': ('china', 171, 384, 'green trees on a hillside above a lake'),
    'flower_dahlia': ('flower', 80, 180, 'an orange dahlia with curled petals'),
    'flower_leaves': ('flower', 0, 384, 'blurred dark green leaves beside an orange flower'),
    'flower_bud': ('flower', 171, 250,
                   'the lower petals of an orange dahlia above a second flower'),
}
HELD_OUT_SIZE = 256
TEST_FRACTION = 0.5
MODELS = {  # run name -> (config, its own overrides)
    'up_tiny': ('configs/up_tiny.py', []),
    # PSNR-oriented: pixel loss only, no D (Real-ESRNet before Real-ESRGAN).
    'up_tiny_psnr': ('configs/up_tiny.py', ['--config.loss.gan_weight=0']),
    # The same without caption and word dropout (SR configs' defaults).
    'up_tiny_psnr_nodrop': ('configs/up_tiny.py', ['--config.loss.gan_weight=0',
                                                   '--config.data.caption_dropout=0',
                                                   '--config.data.word_dropout=0']),
    # up_tiny_psnr's run, continued with the GAN term ramped in over --gan_ramp
    # steps, for --gan_steps steps in all (Real-ESRNet, then Real-ESRGAN).
    'up_tiny_gan': ('configs/up_tiny.py', []),
    'srcnn': ('configs/sr_baselines.py:srcnn', []),
}
GAN_FROM = {'up_tiny_gan': 'up_tiny_psnr'}  # run -> the run it continues

FLAGS = flags.FLAGS
flags.DEFINE_string('root', 'runs/sr_natural', 'Everything goes here: src/, data/, one run '
                    'directory per model, eval/.')
flags.DEFINE_integer('steps', None, 'Training steps of each model (5: a smoke run); with '
                     '--minutes, the most steps. Default: 1500, or with --minutes 100000 '
                     '(the wall time ends the runs).')
flags.DEFINE_float('minutes', 0, 'Wall-time budget of each model\'s training '
                   '(config.train.max_minutes), for comparisons at equal time; 0 = none.')
flags.DEFINE_integer('batch_size', 8, 'Training batch (at most the number of training files: 14, or '
                     '39 with --train_tiles=2).')
flags.DEFINE_integer('train_tiles', 2, 'Training images as native-resolution tiles of the '
                     'held-out crops\' side (256 px), the central ones of each image\'s grid, at '
                     'most this many per side (2: up to 4 per image, 39 files); 0 = each image '
                     'whole, resized to --resolution (the protocol before 2026-12-06, 14 files). '
                     'Images smaller than a tile stay whole.')
flags.DEFINE_integer('resolution', 256, 'Stored image side (config.data.resolution).')
flags.DEFINE_integer('hr_size', 64, 'Training HR crop side (config.data.degradation.hr_size); '
                     'the LR input is hr_size / 4.')
flags.DEFINE_integer('eval_hr_size', 0, 'HR side evaluated (evaluate --hr_size); 0 = the whole '
                     'held-out image.')
flags.DEFINE_integer('eval_tile', None, 'LR tile side of the evaluation (evaluate --tile); '
                     'default: each model\'s training LR side; 0 = whole images.')
flags.DEFINE_integer('gan_steps', 2000, 'Steps of up_tiny_gan after up_tiny_psnr\'s.')
flags.DEFINE_integer('gan_ramp', 500, 'Steps over which up_tiny_gan\'s GAN weight ramps '
                     'from 0 to --gan_scale times the config\'s.')
flags.DEFINE_float('gan_scale', 1.0, 'up_tiny_gan\'s GAN weight after the ramp, as a multiple '
                   'of the config\'s loss.gan_weight.')
flags.DEFINE_list('models', ['up_tiny_psnr', 'up_tiny_gan', 'srcnn'], f'Models to train and compare, of {list(MODELS)}.')
flags.DEFINE_multi_string('override', [], 'Extra --config.* flag for every training run.')
flags.DEFINE_string('lpips_path', None, 'LPIPS-VGG npz for the evaluation (optional).')
flags.DEFINE_enum('held_out', 'test', ['test', 'validation'], 'Held-out crops: the 13 '
                  'of the README table, or the 13 validation crops (VALIDATION) to choose '
                  'settings on. Use a separate --root for each (a ROOT/data built for '
                  'the other stops the run).')
flags.DEFINE_bool('overwrite_data', False, 'Rewrite the images and rebuild the dataset.')
flags.DEFINE_bool('skip_train', False, 'Only evaluate the existing runs.')
flags.DEFINE_bool('evaluate', True, 'Score the runs on the held-out crops when training ends; '
                  '--noevaluate only trains (checkpoints to score later with evaluate --step).')


def _in_test(rel: str) -> bool:
  # gigagan_jax/data/image_folder.py's rule (crc32 of the relative path);
  # the build below checks the resulting split sizes.
  return zlib.crc32(rel.encode()) / 2**32 < TEST_FRACTION


def file_name(name: str, held_out: bool) -> str:
  """`name_K.png` with the smallest K whose hash puts it in the wanted split."""
  k = 0
  while _in_test(f'{name}_{k}.png') != held_out:
    k += 1
  return f'{name}_{k}.png'


def sample_image(name: str) -> np.ndarray:
  """uint8 [H, W, 3] of skimage.data.<name>() or 'motorcycle' / 'grace' / 'china' /
  'flower' (see HELD_OUT, VALIDATION); gray -> 3 channels, alpha dropped on white."""
  from skimage import data  # pylint: disable=g-import-not-at-top
  if name == 'grace':
    from matplotlib import cbook  # pylint: disable=g-import-not-at-top
    img = Image.open(cbook.get_sample_data('grace_hopper.jpg', asfileobj=False))
  elif name in ('china', 'flower'):
    from sklearn import datasets  # pylint: disable=g-import-not-at-top
    img = datasets.load_sample_image(f'{name}.jpg')
  elif name == 'motorcycle':
    img = data.stereo_motorcycle()[0]
  else:
    img = getattr(data, name)()
  img = np.asarray(img)
  if img.ndim == 2:
    img = np.repeat(img[..., None], 3, -1)
  if img.shape[-1] == 4:  # logo: composite on white, as image_folder does
    a = img[..., 3:].astype(np.float32) / 255
    img = np.round(img[..., :3] * a + 255 * (1 - a)).astype(np.uint8)
  return img.astype(np.uint8)


def training_tiles(img: np.ndarray, per_side: int) -> dict:
  """{suffix: [S, S, 3]} native-resolution tiles of side S = HELD_OUT_SIZE.

  At most per_side x per_side non-overlapping tiles, the central ones of the
  image's grid; {'': img} (image_folder then resizes the whole image) when
  per_side is 0 or the image is smaller than a tile.
  """
  s = HELD_OUT_SIZE
  rows, cols = (min(per_side, n // s) for n in img.shape[:2])
  if not rows or not cols:
    return {'': img}
  top0, left0 = ((n - k * s) // 2 for n, k in zip(img.shape[:2], (rows, cols)))
  return {f'_{r}{c}': img[top0 + r * s:top0 + (r + 1) * s, left0 + c * s:left0 + (c + 1) * s]
          for r in range(rows) for c in range(cols)}


def write_images(src: str) -> dict:
  """Writes the PNGs and caption sidecars into an emptied src; returns {file: split}."""
  shutil.rmtree(src, ignore_errors=True)  # no stale files of another --train_tiles / --held_out
  os.makedirs(src)
  images = {name + suffix: (tile, caption, False)
            for name, caption in TRAIN.items()
            for suffix, tile in training_tiles(sample_image(name), FLAGS.train_tiles).items()}
  held_out = VALIDATION if FLAGS.held_out == 'validation' else HELD_OUT
  for name, (photo, top, left, caption) in held_out.items():
    crop = sample_image(photo)[top:top + HELD_OUT_SIZE, left:left + HELD_OUT_SIZE]
    assert crop.shape[:2] == (HELD_OUT_SIZE,) * 2, (name, crop.shape)
    images[name] = crop, caption, True
  split = {}
  for name, (img, caption, held) in images.items():
    f = file_name(name, held)
    Image.fromarray(img).save(os.path.join(src, f))
    with open(os.path.join(src, f[:-4] + '.txt'), 'w') as fh:
      fh.write(caption + '\n')
    split[f] = 'test' if held else 'train'
  return split


def prepare(root: str) -> str:
  """Stages 1-2: the image_folder data in ROOT/data; returns the data_dir."""
  from gigagan_jax.data import prepare as prep  # pylint: disable=g-import-not-at-top
  src, data_dir = os.path.join(root, 'src'), os.path.join(root, 'data')
  split = write_images(src)
  # The files the dataset was built from. Another --held_out writes as many
  # files as this one, so only their names tell a stale data dir apart; one
  # without this record predates it and is rebuilt (seconds).
  record = os.path.join(data_dir, 'sr_natural_files.json')
  built = None
  if os.path.exists(record):
    with open(record) as fh:
      built = json.load(fh)
  if built not in (None, split) and not FLAGS.overwrite_data:
    raise RuntimeError(f'{data_dir} was built from other images than --held_out='
                       f'{FLAGS.held_out} --train_tiles={FLAGS.train_tiles} give (see {record}); '
                       '--overwrite_data or a fresh --root rebuilds it')
  _, report = prep.build_image_folder(src, data_dir, FLAGS.resolution,
                                      test_fraction=TEST_FRACTION,
                                      overwrite=FLAGS.overwrite_data or built is None,
                                      progress=False)
  train = sum(s == 'train' for s in split.values())
  want = {'train': train, 'test': len(split) - train}
  if report.written and report.written != want:  # file_name's split rule against image_folder's
    raise RuntimeError(f'split sizes {report.written}, expected {want}; files: {split}')
  with open(record, 'w') as fh:
    json.dump(split, fh, indent=1, sort_keys=True)
  print(f'data: {want} images at {FLAGS.resolution} px in {data_dir}; held out: '
        f'{sorted(f for f, s in split.items() if s == "test")}', flush=True)
  return data_dir


def _run(cmd: list):
  print('$ ' + ' '.join(cmd), flush=True)
  subprocess.run(cmd, cwd=REPO, check=True)


def _saved_steps(workdir: str) -> list:
  """Steps of the complete checkpoints in workdir ([] when there is none yet)."""
  ckpt = os.path.join(workdir, 'checkpoints')
  return [int(d) for d in os.listdir(ckpt) if d.isdigit()] if os.path.isdir(ckpt) else []


def _latest_step(workdir: str) -> int:
  steps = _saved_steps(workdir)
  if not steps:
    raise RuntimeError(f'{workdir} holds no checkpoint to continue')
  return max(steps)


def train(root: str, data_dir: str, model: str) -> str:
  workdir = os.path.join(root, model)
  minutes = FLAGS.minutes
  steps = FLAGS.steps if FLAGS.steps is not None else (100_000 if minutes else 1500)
  config, overrides = MODELS[model]
  if minutes and model not in GAN_FROM and _saved_steps(workdir):
    # Resuming would give it another --minutes: not an equal-time comparison.
    print(f'{model}: {workdir} holds a --minutes run already; not trained again '
          '(a fresh --root retrains it)', flush=True)
    return workdir
  if model in GAN_FROM:
    source = os.path.join(root, GAN_FROM[model])
    if not os.path.exists(workdir):
      shutil.copytree(source, workdir)
      start = _latest_step(workdir)
      with open(os.path.join(workdir, 'continues.json'), 'w') as f:
        json.dump({'run': source, 'step': start}, f)
    with open(os.path.join(workdir, 'continues.json')) as f:
      start = json.load(f)['step']
    steps, minutes = start + FLAGS.gan_steps, 0
    overrides = overrides + [
        '--allow_config_change',
        f'--config.loss.gan_weight_schedule=(({start},0.0),({start + FLAGS.gan_ramp},'
        f'{FLAGS.gan_scale}))']
  _run([sys.executable, '-m', 'gigagan_jax.train', f'--config={config}',
        f'--workdir={workdir}',
        '--config.data.builder=image_folder', f'--config.data.data_dir={data_dir}',
        f'--config.data.resolution={FLAGS.resolution}',
        f'--config.data.degradation.hr_size={FLAGS.hr_size}',
        f'--config.data.batch_size={FLAGS.batch_size}', '--config.data.random_flip=True',
        f'--config.train.steps={steps}', f'--config.train.max_minutes={minutes}',
        f'--config.train.log_every={max(1, min(50, steps))}',
        f'--config.train.sample_every={max(1, steps // 4)}',
        f'--config.train.ckpt_every={max(1, steps // 4)}'] + overrides + list(FLAGS.override))
  return workdir


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # TFDS logs every file it writes at INFO
  if FLAGS.skip_train and not FLAGS.evaluate:
    raise app.UsageError('--skip_train with --noevaluate leaves nothing to do')
  unknown = set(FLAGS.models) - set(MODELS)
  if unknown:
    raise app.UsageError(f'--models: unknown {sorted(unknown)}; choose from {list(MODELS)}')
  root = os.path.abspath(FLAGS.root)
  for run, source in GAN_FROM.items():
    if (run in FLAGS.models and source not in FLAGS.models[:FLAGS.models.index(run)]
        and not _saved_steps(os.path.join(root, source))):
      raise app.UsageError(f'--models: {run} continues {source}, which must come before it '
                           'or have a run in --root')
  data_dir = prepare(root)
  workdirs = [os.path.join(root, m) if FLAGS.skip_train else train(root, data_dir, m)
              for m in FLAGS.models]
  if not FLAGS.evaluate:
    return
  cmd = [sys.executable, '-m', 'gigagan_jax.evaluate', '--task=sr',
         *[f'--workdir={w}' for w in workdirs], f'--out={os.path.join(root, "eval")}',
         # This root's held-out crops, also for runs trained on another root's
         # data (--skip_train over copied or linked runs).
         f'--data_dir={data_dir}', f'--hr_size={FLAGS.eval_hr_size}']
  if FLAGS.eval_tile is not None:
    cmd.append(f'--tile={FLAGS.eval_tile}')
  # Whole 256 px images one at a time; tiles 8 at a time.
  cmd.append('--batch_size=1' if FLAGS.eval_tile == 0 else '--batch_size=8')
  if FLAGS.lpips_path:
    cmd.append(f'--lpips_path={FLAGS.lpips_path}')
  _run(cmd)


if __name__ == '__main__':
  app.run(main)
