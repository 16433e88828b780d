r"""Prepares a dataset for training: writes TFDS array_record files into --out.

  # Your own captioned images (see gigagan_jax/data/image_folder.py for the layout):
  python -m gigagan_jax.data.prepare --builder=image_folder --src=/path/to/images \
      --out=runs/data --resolution=64 [--test_fraction=0.01] [--overwrite]

  # The embedded procedural dataset (training also builds it on first use):
  python -m gigagan_jax.data.prepare --builder=captioned_shapes --out=runs/data \
      --resolution=32 [--num_examples=4096]

Then train with --config.data.builder=<builder> --config.data.data_dir=<out>
--config.data.resolution=<resolution>. For image_folder, a report of skipped
files (unreadable images, missing captions) is printed at the end and written
to build_report.json next to the prepared files.

Flags:
  --builder        captioned_shapes | image_folder
  --src            image_folder: the folder of images + captions
  --out            data_dir to write into (config.data.data_dir)
  --resolution     image side in pixels (config.data.resolution)
  --num_examples   captioned_shapes: training examples, 0 = default (config.data.num_examples)
  --test_fraction  image_folder: share held out as the 'test' split (default 0: none)
  --overwrite      rebuild even when the data is already prepared
"""
import json
import os
import shutil
import sys

from absl import app
from absl import flags
import tensorflow_datasets as tfds
import tqdm

from gigagan_jax.data import captioned_shapes
from gigagan_jax.data import image_folder

FLAGS = flags.FLAGS


def define_flags():
  """Flags of the CLI, defined only when run as a program so importing this
  module never collides with another CLI's flags (e.g. sample's --out)."""
  flags.DEFINE_enum('builder', None, ['captioned_shapes', 'image_folder'], 'Dataset to prepare.')
  flags.DEFINE_string('src', None, 'image_folder: folder of images with .txt sidecars or '
                      'captions.jsonl / captions.csv.')
  flags.DEFINE_string('out', 'runs/data', 'Output data_dir (config.data.data_dir).')
  flags.DEFINE_integer('resolution', 64, 'Image side in pixels (config.data.resolution).')
  flags.DEFINE_integer('num_examples', 0, 'captioned_shapes: training examples; 0 = default.')
  flags.DEFINE_float('test_fraction', 0.0, "image_folder: share of images in the 'test' split.")
  flags.DEFINE_bool('overwrite', False, 'Rebuild even when already prepared.')


class _Progress:
  """A tqdm bar that the builders advance once per example."""

  def __init__(self, total, desc):
    self.bar = tqdm.tqdm(total=total, desc=desc, unit='img', file=sys.stderr, dynamic_ncols=True)

  def __call__(self, n=1):
    self.bar.update(n)

  def close(self):
    self.bar.close()


def _reset(builder, overwrite: bool) -> bool:
  """True when there is something to build (deleting an old build if asked)."""
  if builder.is_prepared() and overwrite:
    shutil.rmtree(builder.data_dir)
  return not builder.is_prepared()


def build_captioned_shapes(out: str, resolution: int, num_examples: int = 0,
                           overwrite: bool = False, progress: bool = True):
  """Builds captioned_shapes into `out`; returns the prepared builder."""
  b = captioned_shapes.builder(resolution, num_examples, out)
  cfg = b.builder_config
  if not _reset(b, overwrite):
    print(f'captioned_shapes already prepared at {b.data_dir} (--overwrite rebuilds it)')
    return b
  if progress:
    b.progress = _Progress(cfg.num_train + cfg.num_test, f'captioned_shapes {resolution}px')
  try:
    b.download_and_prepare()
  finally:
    if b.progress is not None:
      b.progress.close()
  print(f'captioned_shapes: wrote {cfg.num_train} train + {cfg.num_test} test examples '
        f'to {b.data_dir}')
  return b


def build_image_folder(src: str, out: str, resolution: int, test_fraction: float = 0.0,
                       overwrite: bool = False, progress: bool = True):
  """Builds image_folder from `src` into `out`.

  Returns:
    (builder, report): the prepared builder and the image_folder.BuildReport
    (also printed, and written to <builder.data_dir>/build_report.json).
  """
  image_folder.builder_config(resolution)  # validates the resolution
  b = image_folder.ImageFolder(config=f'{resolution}px', data_dir=out, file_format='array_record',
                               src=os.path.abspath(src), test_fraction=test_fraction)
  report_path = os.path.join(b.data_dir, image_folder.REPORT_NAME)
  if not _reset(b, overwrite):
    print(f'image_folder already prepared at {b.data_dir} (--overwrite rebuilds it)')
    report = image_folder.BuildReport()
    if os.path.exists(report_path):
      with open(report_path) as f:
        d = json.load(f)
      d.pop('skipped', None)
      report = image_folder.BuildReport(**d)
    return b, report
  if progress:
    # Count images up front so the bar has a total (cheap: a directory walk).
    total = image_folder.BuildReport()
    image_folder.scan_folder(b.src, total)
    total = total.images_found
    b.progress = _Progress(total, f'image_folder {resolution}px')
  try:
    b.download_and_prepare()
  finally:
    if b.progress is not None:
      b.progress.close()
  report = b.report
  report.src = src
  report.corrupt.sort(key=lambda c: c['file'])
  with open(report_path, 'w') as f:
    json.dump(report.to_dict(), f, indent=1)
  print(report.format())
  print(f'report written to {report_path}')
  return b, report


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if FLAGS.builder is None:
    raise app.UsageError('--builder is required (captioned_shapes or image_folder)')
  tfds.disable_progress_bar()  # ours counts images; TFDS's would only count splits
  if FLAGS.builder == 'captioned_shapes':
    build_captioned_shapes(FLAGS.out, FLAGS.resolution, FLAGS.num_examples, FLAGS.overwrite)
    extra = f' --config.data.num_examples={FLAGS.num_examples}' if FLAGS.num_examples else ''
  else:
    if not FLAGS.src:
      raise app.UsageError('--builder=image_folder needs --src=FOLDER (your images + captions)')
    build_image_folder(FLAGS.src, FLAGS.out, FLAGS.resolution, FLAGS.test_fraction, FLAGS.overwrite)
    extra = ''
  print(f'\nTrain on it with:\n  --config.data.builder={FLAGS.builder} '
        f'--config.data.data_dir={FLAGS.out} --config.data.resolution={FLAGS.resolution}{extra}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
