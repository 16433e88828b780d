"""`image_folder`: a TFDS builder for your own captioned images.

Source layout (SRC is the folder given to `prepare --src`):

  SRC/any/sub/dir/name.jpg         images: .jpg .jpeg .png .webp .bmp (any depth)
  SRC/any/sub/dir/name.txt         caption of name.jpg (a sidecar file), or
  SRC/captions.jsonl               {"file": "any/sub/dir/name.jpg", "caption": "..."} per line, or
  SRC/captions.csv                 header `file,caption`, one row per image

A sidecar .txt wins over an index entry. Paths in the index are relative to
SRC with '/' separators. Whitespace in captions (line breaks included) is
collapsed to single spaces.

Every image is decoded with Pillow (EXIF rotation applied, transparency
composited on white), center-cropped to a square and resized with a Lanczos
filter to the builder config's resolution.

Storage: decoded uint8 arrays [R, R, 3], not encoded bytes. Why:
  * the images are already at training resolution, so the stored form is the
    model input: the input pipeline does no decoding, and a GAN step at 64-256
    px is fast enough that a JPEG/PNG decode per image (about 1 ms at 256 px)
    would make the host CPU the bottleneck;
  * it is lossless: no second JPEG generation whose artifacts the
    discriminator could learn to tell from generated images;
  * it is the same layout as `captioned_shapes`, so one pipeline path serves
    both.
The cost is disk: R*R*3 bytes per image (192 KiB at 256 px, ~190 GB per
million). For 512 px and larger (upsampler HR data) an encoded variant would be
the better trade; that is a follow-up (see docs/data.md).

A file that cannot be decoded, and an image without a caption, never stops the
build: it is skipped, counted and named in a `BuildReport` printed at the end
of `prepare` and written as build_report.json next to the prepared data.

Features: image uint8 [R, R, 3], caption text, file text (path relative to SRC).
"""
import csv
import dataclasses
import json
import os
import zlib

import numpy as np
from PIL import Image, ImageOps
import tensorflow_datasets as tfds

from gigagan_jax.data import tfds_compat

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.webp', '.bmp')
INDEX_FILES = ('captions.jsonl', 'captions.csv')
_FILE_KEYS = ('file', 'file_name', 'filename', 'image', 'path')
_CAPTION_KEYS = ('caption', 'text')
RESOLUTIONS = (16, 32, 64, 128, 256, 512, 1024)
REPORT_NAME = 'build_report.json'


@dataclasses.dataclass
class BuildReport:
  """What a build kept and skipped; file names are relative to `src`."""
  src: str = ''
  images_found: int = 0
  written: dict = dataclasses.field(default_factory=dict)  # split -> count
  corrupt: list = dataclasses.field(default_factory=list)  # [{'file', 'error'}]
  missing_caption: list = dataclasses.field(default_factory=list)
  caption_without_image: list = dataclasses.field(default_factory=list)
  upscaled: int = 0  # images smaller than the resolution (kept, but blurry)

  @property
  def skipped(self) -> int:
    return len(self.corrupt) + len(self.missing_caption)

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d['skipped'] = self.skipped
    return d

  def format(self, max_names: int = 20) -> str:
    """A human-readable summary naming (up to max_names of) each skipped file."""
    lines = [f'image_folder build report for {self.src}',
             f'  images found: {self.images_found}',
             '  written: ' + ', '.join(f'{k}={v}' for k, v in sorted(self.written.items())),
             f'  skipped: {self.skipped} ({len(self.corrupt)} unreadable, '
             f'{len(self.missing_caption)} without caption)']
    def names(title, items):
      if items:
        lines.append(f'  {title} ({len(items)}):')
        lines.extend(f'    {x}' for x in items[:max_names])
        if len(items) > max_names:
          lines.append(f'    ... and {len(items) - max_names} more (see {REPORT_NAME})')
    names('unreadable images', [f"{c['file']}: {c['error']}" for c in self.corrupt])
    names('images without caption', self.missing_caption)
    names('captions naming no image (ignored)', self.caption_without_image)
    if self.upscaled:
      lines.append(f'  note: {self.upscaled} images were smaller than the resolution '
                   'and were upscaled')
    return '\n'.join(lines)


def _clean(text: str) -> str:
  return ' '.join(text.split())


def _read_index(src: str) -> dict:
  """Captions from SRC/captions.jsonl or SRC/captions.csv: {relpath: caption}."""
  out = {}
  for name in INDEX_FILES:
    path = os.path.join(src, name)
    if not os.path.exists(path):
      continue
    with open(path, newline='', encoding='utf-8') as f:
      rows = ([json.loads(line) for line in f if line.strip()] if name.endswith('.jsonl')
              else list(csv.DictReader(f)))
    for n, row in enumerate(rows):
      fk = next((k for k in _FILE_KEYS if k in row), None)
      ck = next((k for k in _CAPTION_KEYS if k in row), None)
      if fk is None or ck is None:
        raise ValueError(f'{path} entry {n + 1} needs a file key (one of {_FILE_KEYS}) and a '
                         f'caption key (one of {_CAPTION_KEYS}); got keys {sorted(row)}')
      out[row[fk].replace(os.sep, '/').lstrip('./')] = _clean(row[ck] or '')
  return out


def scan_folder(src: str, report: BuildReport | None = None) -> list:
  """Pairs every image under `src` with its caption.

  Returns:
    sorted list of (relpath, caption) for the images that have a non-empty
    caption. Images without one are appended to report.missing_caption.
  """
  if not os.path.isdir(src):
    raise FileNotFoundError(f'image folder not found: {src}')
  report = report if report is not None else BuildReport()
  index = _read_index(src)
  images = []
  for root, dirs, files in os.walk(src):
    dirs.sort()  # deterministic walk order
    for f in sorted(files):
      if f.lower().endswith(IMAGE_EXTENSIONS):
        images.append(os.path.relpath(os.path.join(root, f), src).replace(os.sep, '/'))
  images.sort()
  report.src, report.images_found = src, len(images)
  pairs = []
  for rel in images:
    caption = ''
    sidecar = os.path.join(src, os.path.splitext(rel)[0] + '.txt')
    if os.path.exists(sidecar):
      with open(sidecar, encoding='utf-8', errors='replace') as f:
        caption = _clean(f.read())
    if not caption:
      caption = index.get(rel, '')
    if caption:
      pairs.append((rel, caption))
    else:
      report.missing_caption.append(rel)
  report.caption_without_image = sorted(set(index) - set(images))
  return pairs


def load_image(path: str, resolution: int) -> tuple:
  """Decodes, center-crops and resizes one image.

  Returns:
    (uint8 [resolution, resolution, 3], upscaled: bool). Raises on any decode
    error (the builder catches and reports it).
  """
  with Image.open(path) as im:
    im.load()  # forces the full decode, so truncated files fail here
    im = ImageOps.exif_transpose(im)
    if im.mode in ('RGBA', 'LA', 'P'):
      im = im.convert('RGBA')
      bg = Image.new('RGBA', im.size, (255, 255, 255, 255))
      im = Image.alpha_composite(bg, im)
    im = im.convert('RGB')
    w, h = im.size
    if min(w, h) == 0:
      raise ValueError('image has zero size')
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    # Crop, then resize: resize(box=...) lets the filter read pixels outside
    # the square, so its output is not that of the centre crop (nor what
    # evaluate/preprocess.py's crop_resize gives real images).
    im = im.crop(box).resize((resolution, resolution), Image.LANCZOS)
    return np.asarray(im, dtype=np.uint8), s < resolution


@dataclasses.dataclass(kw_only=True)
class ImageFolderConfig(tfds.core.BuilderConfig):
  """resolution: output side in pixels."""
  resolution: int = 64


def builder_config(resolution: int) -> ImageFolderConfig:
  if resolution not in RESOLUTIONS:
    raise ValueError(f'image_folder resolution must be one of {RESOLUTIONS}, got {resolution}')
  return ImageFolderConfig(name=f'{resolution}px', resolution=resolution,
                           description=f'{resolution}x{resolution} px center crops')


def _in_test(rel: str, fraction: float) -> bool:
  return fraction > 0 and zlib.crc32(rel.encode()) / 2**32 < fraction


class ImageFolder(tfds_compat.LocalCodePath, tfds.core.GeneratorBasedBuilder):
  """The user's captioned images; see the module docstring."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First version.'}
  BUILDER_CONFIGS = [builder_config(r) for r in RESOLUTIONS]

  def __init__(self, *args, src: str = '', test_fraction: float = 0.0, **kwargs):
    """src: the image folder (only needed to build); test_fraction: share of
    images held out as the 'test' split, chosen by a hash of the file path so
    the split stays stable when images are added."""
    super().__init__(*args, **kwargs)
    if not 0.0 <= test_fraction < 1.0:
      raise ValueError(f'test_fraction must be in [0, 1), got {test_fraction}')
    self.src, self.test_fraction = src, test_fraction
    self.report = BuildReport()
    self.progress = None  # optional callable(n) advanced per image (prepare's tqdm)

  def _info(self) -> tfds.core.DatasetInfo:
    r = self.builder_config.resolution
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__.split('\n\n')[0],
        features=tfds.features.FeaturesDict({
            # BYTES: one raw buffer per image. The default stores every pixel as
            # an int64 in a proto, ~10x slower to write and larger to read.
            'image': tfds.features.Tensor(shape=(r, r, 3), dtype=np.uint8,
                                          encoding=tfds.features.Encoding.BYTES),
            'caption': tfds.features.Text(),
            'file': tfds.features.Text(),
        }),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    if not self.src:
      raise ValueError('image_folder needs a source folder to build: '
                       'python -m gigagan_jax.data.prepare --builder=image_folder --src=DIR ...')
    self.report = BuildReport()
    pairs = scan_folder(self.src, self.report)
    test = [p for p in pairs if _in_test(p[0], self.test_fraction)]
    train = [p for p in pairs if not _in_test(p[0], self.test_fraction)]
    if not train:
      raise ValueError(
          f'no usable (image, caption) pairs under {self.src}:\n{self.report.format()}')
    splits = {'train': self._generate_examples(train, 'train')}
    if test:
      splits['test'] = self._generate_examples(test, 'test')
    return splits

  def _generate_examples(self, pairs, split):
    self.report.written[split] = 0
    for rel, caption in pairs:
      try:
        image, upscaled = load_image(os.path.join(self.src, rel), self.builder_config.resolution)
      except Exception as e:  # pylint: disable=broad-except
        # Any decoder failure (truncated, not an image, unsupported mode) is
        # one bad file: name it and keep going.
        self.report.corrupt.append({'file': rel, 'error': f'{type(e).__name__}: {e}'})
      else:
        self.report.upscaled += int(upscaled)
        self.report.written[split] += 1
        yield rel, {'image': image, 'caption': caption, 'file': rel}
      if self.progress is not None:
        self.progress(1)
