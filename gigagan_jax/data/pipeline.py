"""The input pipeline: prepared TFDS data -> per-process numpy batches (grain).

  ensure_dataset(data_cfg)        -> a prepared TFDS builder (builds captioned_shapes
                                     on first use; clear errors otherwise)
  make_dataset(data_cfg, ...)     -> grain DatasetIterator of per-process batches

Stages of `make_dataset` (all in `grain.MapDataset`, so every element has an
index and the iterator state is just "where am I" -- small, exact, and saved
with the training checkpoint via grain.checkpoint.CheckpointSave):

  source (array_record, random access)
  -> this process's contiguous shard (ShardByJaxProcess, equal sizes)
  -> seeded shuffle, reshuffled every epoch -> repeat(num_epochs)
  -> per example (seeded by seed, process and position): center crop/resize if
     needed, random flip, caption dropout, optional SR degradation
  -> batch (drop remainder) -> tokenize the captions of the batch
  -> thread prefetch; optionally `num_workers` processes (mp_prefetch)

A batch is a dict of numpy arrays with b = data.batch_size / process_count rows:
  image    uint8 [b, R, R, 3]
  caption  str   [b]          (for logging; '' where dropped)
  tokens   int32 [b, L], eot int32 [b]   (from the `tokenize` callable, with any
                               other entries it returns, e.g. clip_tokens/clip_eot)
  negative_caption str [b], negative_tokens int32 [b, L], negative_eot int32 [b]
                               only with data.hard_negatives (captioned_shapes): the
                               caption with one attribute changed
  <label>  int32 [b]          (every integer scalar feature, e.g. captioned_shapes'
                               shape/color/count/size/position/background)
  lr       uint8 [b, s/scale, s/scale, 3]  only with `degradation`; `image` is
                               then the [b, s, s, 3] HR crop (s = hr_size)
"""
import glob
import os
import re
import sys

from absl import flags
import grain
import ml_collections
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from gigagan_jax.config_utils import ConfigError
from gigagan_jax.data import captioned_shapes
from gigagan_jax.data import degrade
from gigagan_jax.data import image_folder
from gigagan_jax.data.validate import check_data_config, SHIPPED_BUILDERS

_DEFAULTS = dict(read_threads=2, image_key='image', caption_key='caption',
                 caption_template='{}')


def _with_defaults(data_cfg) -> ml_collections.ConfigDict:
  """A copy of data_cfg with the fields added after configs were first written."""
  c = ml_collections.ConfigDict(data_cfg.to_dict())
  for k, v in _DEFAULTS.items():
    if k not in c:
      c[k] = v
  return c


def prepare_command(builder: str, data_dir: str, resolution: int) -> str:
  """The shell command that prepares `builder` for this config."""
  if builder == 'image_folder':
    return (f'python -m gigagan_jax.data.prepare --builder=image_folder --src=YOUR_IMAGE_DIR '
            f'--out={data_dir} --resolution={resolution}')
  if builder == 'captioned_shapes':
    return (f'python -m gigagan_jax.data.prepare --builder=captioned_shapes --out={data_dir} '
            f'--resolution={resolution}')
  return (f'tfds build {builder} --data_dir={data_dir} --file_format=array_record   '
          '(on a machine with TensorFlow; or `tfds convert_format` an existing tfrecord build)')


def _prepared_resolutions(data_dir: str, name: str) -> list:
  """Resolutions of the '<R>px' configs of `name` already prepared in data_dir."""
  out = []
  for info in glob.glob(os.path.join(data_dir, name, '*', '*', 'dataset_info.json')):
    m = re.match(r'(\d+)px', os.path.basename(os.path.dirname(os.path.dirname(info))))
    if m:
      out.append(int(m.group(1)))
  return sorted(set(out))


def open_builder(data_cfg) -> tfds.core.DatasetBuilder:
  """The TFDS builder named by data_cfg (builder, data_dir, resolution, num_examples);
  captioned_shapes is built on first use. ensure_dataset adds the checks of a full data config."""
  name, data_dir, r = data_cfg.builder, data_cfg.data_dir, data_cfg.resolution
  if name == 'captioned_shapes':
    if r not in captioned_shapes.RESOLUTIONS:
      raise ConfigError(f'config.data.resolution={r}: captioned_shapes is built at '
                        f'{captioned_shapes.RESOLUTIONS} px; pick one of those')
    b = captioned_shapes.builder(r, data_cfg.num_examples, data_dir)
    if not b.is_prepared():
      cfg = b.builder_config
      print(f'captioned_shapes: building {cfg.num_train} train + {cfg.num_test} test examples '
            f'at {r} px into {b.data_dir} (once; about {cfg.num_train // 20000 + 1} min) ...',
            file=sys.stderr, flush=True)
      b.download_and_prepare()
      print(f'captioned_shapes: done, {b.data_dir}', file=sys.stderr, flush=True)
    return b

  if name == 'image_folder':
    if r not in image_folder.RESOLUTIONS:
      raise ConfigError(
          f'config.data.resolution={r}: image_folder supports {image_folder.RESOLUTIONS}')
    b = image_folder.ImageFolder(config=f'{r}px', data_dir=data_dir, file_format='array_record')
    if not b.is_prepared():
      others = [x for x in _prepared_resolutions(data_dir, 'image_folder') if x != r]
      if others:
        raise ConfigError(
            f'config.data.resolution={r}: the image_folder data in config.data.data_dir={data_dir} '
            f'was prepared at {others} px, not {r} px. Either set --config.data.resolution='
            f'{others[0]} or prepare it at {r} px:\n  {prepare_command(name, data_dir, r)}')
      raise ConfigError(
          f'config.data.builder=image_folder: no prepared image folder in config.data.data_dir='
          f'{data_dir}. Prepare your images first:\n  {prepare_command(name, data_dir, r)}')
    return b

  # A directory holding a prepared dataset version, or a TFDS name ('name',
  # 'name/config', 'name:1.0.0') prepared in data_dir.
  if os.path.isfile(os.path.join(name, 'dataset_info.json')):
    return tfds.builder_from_directory(name)
  try:
    b = tfds.builder(name, data_dir=data_dir)
  except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:
    raise ConfigError(
        f'config.data.builder={name!r} is neither a builder we ship {SHIPPED_BUILDERS} nor a TFDS '
        f'dataset prepared in config.data.data_dir={data_dir} ({type(e).__name__}). Fix the name, '
        f'point config.data.data_dir at the prepared data, or prepare it:\n  '
        f'{prepare_command(name, data_dir, r)}') from None
  if not b.is_prepared():
    raise ConfigError(
        f'config.data.builder={name!r} is not prepared in config.data.data_dir={data_dir}. '
        f'Prepare it:\n  {prepare_command(name, data_dir, r)}')
  return b


def ensure_dataset(data_cfg: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """Returns a prepared, readable TFDS builder for `data_cfg`.

  Builds captioned_shapes into data_cfg.data_dir when absent (printing a
  message). Raises ConfigError, naming the field and the fix, when the data is
  missing, the builder unknown, the split absent, the files not array_record,
  or the prepared resolution differs from data_cfg.resolution.
  """
  data_cfg = _with_defaults(data_cfg)
  check_data_config(data_cfg)
  b = open_builder(data_cfg)
  info, r = b.info, data_cfg.resolution
  fmt = getattr(info, 'file_format', None)
  if fmt is not None and getattr(fmt, 'value', fmt) != 'array_record':
    raise ConfigError(
        f'config.data.builder={data_cfg.builder!r} was prepared as {getattr(fmt, "value", fmt)}; '
        f'grain needs random access (array_record). Convert it:\n  tfds convert_format '
        f'--dataset_version_dir={b.data_dir} --out_file_format=array_record --out_dir=NEW_DIR')
  split = data_cfg.split.split('[')[0]
  if split not in info.splits:
    raise ConfigError(f'config.data.split={data_cfg.split!r}: {data_cfg.builder} has splits '
                      f'{sorted(info.splits)}')
  feats = info.features
  ik, ck = data_cfg.image_key, data_cfg.caption_key
  if ik not in feats:
    raise ConfigError(f'config.data.image_key={ik!r} is not a feature of {data_cfg.builder}; '
                      f'features: {sorted(feats)}')
  if ck not in feats:
    raise ConfigError(f'config.data.caption_key={ck!r} is not a feature of {data_cfg.builder}; '
                      f'features: {sorted(feats)}')
  shape = tuple(feats[ik].shape)
  if len(shape) != 3:
    raise ConfigError(f'config.data.image_key={ik!r} has shape {shape}, not [H, W, C]')
  h, w = shape[:2]
  if data_cfg.builder in SHIPPED_BUILDERS and (h, w) != (r, r):
    raise ConfigError(
        f'config.data.resolution={r}: the prepared {data_cfg.builder} data is {h}x{w}. Set '
        f'--config.data.resolution={h} or prepare it again:\n  '
        f'{prepare_command(data_cfg.builder, data_cfg.data_dir, r)}')
  if h is not None and w is not None and min(h, w) < r:
    raise ConfigError(
        f'config.data.resolution={r}: {data_cfg.builder} images are {h}x{w}, smaller than the '
        f'resolution; lower config.data.resolution to {min(h, w)} or less (we do not upscale)')
  return b


# ------------------------------------------------------------------ transforms

_SWAP = {'left': 'right', 'right': 'left', 'Left': 'Right', 'Right': 'Left'}
_SWAP_RE = re.compile(r'\b(left|right|Left|Right)\b')


def center_crop_resize(img: np.ndarray, resolution: int) -> np.ndarray:
  """uint8 [H, W, C] (C = 1, 3 or 4) -> uint8 [resolution, resolution, 3]."""
  if img.ndim == 2:
    img = img[..., None]
  if img.shape[-1] == 1:
    img = np.repeat(img, 3, -1)
  img = img[..., :3]
  h, w = img.shape[:2]
  if (h, w) == (resolution, resolution):
    return img
  s = min(h, w)
  y, x = (h - s) // 2, (w - s) // 2
  pil = Image.fromarray(np.ascontiguousarray(img))
  return np.asarray(pil.resize((resolution, resolution), Image.LANCZOS, box=(x, y, x + s, y + s)))


class Preprocess(grain.transforms.RandomMap):
  """One record -> one example dict: image, caption (str) and int32 labels.

  `rng` comes from grain, seeded by the dataset seed and the element position,
  so flips and caption dropout are deterministic given seed and index.
  `hard_negatives`: the attributes whose counterfactuals give each example a
  'negative_caption' (hard_negative_attributes); () for none.
  """

  def __init__(self, resolution, random_flip, caption_dropout, image_key, caption_key,
               class_names=None, caption_template='{}', label_keys=(), degradation=None,
               word_dropout=0.0, random_rot90=False, hard_negatives=()):
    self.resolution = resolution
    self.hard_negatives = hard_negatives
    self.random_rot90 = random_rot90
    self.random_flip = random_flip
    self.caption_dropout = caption_dropout
    self.word_dropout = word_dropout
    self.image_key, self.caption_key = image_key, caption_key
    self.class_names = class_names
    self.caption_template = caption_template
    self.label_keys = tuple(label_keys)
    self.degradation = None
    if degradation is not None:
      # Resolved once here; batches stack uint8 like 'image'.
      self.degradation = degradation.copy_and_resolve_references()
      self.degradation.output_dtype = 'uint8'

  def random_map(self, record, rng: np.random.Generator):
    image = center_crop_resize(np.asarray(record[self.image_key]), self.resolution)
    caption = caption_text(record[self.caption_key], self.class_names, self.caption_template)
    out = {k: np.int32(record[k]) for k in self.label_keys}
    # Draw both numbers always, so one option does not shift the other's stream.
    flip, drop = rng.uniform() < 0.5, rng.uniform() < self.caption_dropout
    if self.random_flip and flip:
      image = image[:, ::-1]
      # Mirror the words as well as the pixels, so "on the left" stays true.
      caption = _SWAP_RE.sub(lambda m: _SWAP[m.group(0)], caption)
      if 'position' in out and out['position'] >= 0:
        row, col = divmod(int(out['position']), 3)
        out['position'] = np.int32(row * 3 + 2 - col)
    if drop:
      caption = ''
    if self.random_rot90:
      # Drawn only when on, so that runs without it keep their streams.
      image = np.rot90(image, k=int(rng.integers(4)))
    out['caption'] = caption
    if self.degradation is not None:
      out['lr'], image = degrade.make_pair(image, self.degradation, rng=rng)
    out['image'] = np.ascontiguousarray(image)
    if self.word_dropout > 0:  # drawn last: the other options' streams stay as without it
      out['caption'] = drop_words(caption, self.word_dropout, rng)
    if self.hard_negatives:  # drawn last, as word dropout
      out['negative_caption'] = captioned_shapes.counterfactual_caption(
          out['caption'], rng, self.hard_negatives)
    return out


def hard_negative_attributes(data_cfg: ml_collections.ConfigDict) -> tuple:
  """The attributes whose counterfactuals are drawn as hard negatives
  (data.hard_negative_attributes), or () with data.hard_negatives off."""
  if not data_cfg.get('hard_negatives', False):
    return ()
  return tuple(data_cfg.get('hard_negative_attributes', captioned_shapes.COUNTERFACTUAL_ATTRIBUTES))


def caption_text(raw, class_names=None, template: str = '{}') -> str:
  """A record's caption feature as text: a string, or a class label's name in `template`."""
  if class_names is not None:
    return template.format(class_names[int(raw)].replace('_', ' '))
  return raw.decode('utf-8') if isinstance(raw, bytes) else str(raw)


def read_captions(data_cfg: ml_collections.ConfigDict, count: int | None) -> list[str]:
  """The first `count` captions of data_cfg.split in stored order (all, if it
  has fewer, or if count is None), as the training pipeline reads them before
  augmentation."""
  data_cfg = _with_defaults(data_cfg)
  builder = ensure_dataset(data_cfg)
  source = builder.as_data_source(split=data_cfg.split)
  feature = builder.info.features[data_cfg.caption_key]
  names = feature.names if isinstance(feature, tfds.features.ClassLabel) else None
  count = len(source) if count is None else min(count, len(source))
  records = source.__getitems__(range(count))
  return [caption_text(r[data_cfg.caption_key], names, data_cfg.caption_template)
          for r in records]


def drop_words(caption: str, p: float, rng: np.random.Generator) -> str:
  """`caption` with each (space-separated) word left out with probability p."""
  words = caption.split()
  kept = rng.uniform(size=len(words)) >= p
  return ' '.join(w for w, k in zip(words, kept) if k)


# Per-example strings, collated into numpy str arrays rather than stacked.
_TEXT_KEYS = ('caption', 'negative_caption')


def collate(examples: list) -> dict:
  """Stacks example dicts; captions (and negative captions) become numpy str arrays [b]."""
  batch = {k: np.stack([e[k] for e in examples]) for k in examples[0] if k not in _TEXT_KEYS}
  for k in _TEXT_KEYS:
    if k in examples[0]:
      batch[k] = np.asarray([e[k] for e in examples], dtype=str)
  return batch


class SwapCaptions(grain.transforms.RandomMap):
  """Gives each example of a batch, with probability p, another example's caption.

  The caption comes from a uniformly chosen other position of the batch (it
  may still read the same when the batch repeats a caption). Seeded by grain
  like Preprocess. batch: collate's dict; only 'caption' changes.
  """

  def __init__(self, p: float):
    self.p = p

  def random_map(self, batch, rng: np.random.Generator):
    captions = batch['caption']
    n = len(captions)
    swap = rng.uniform(size=n) < self.p
    source = (np.arange(n) + rng.integers(1, max(n, 2), size=n)) % n
    return dict(batch, caption=np.where(swap, captions[source], captions))


class Tokenize(grain.transforms.Map):
  """Adds 'tokens' int32 [b, L] and 'eot' int32 [b] from tokenize(list of str),
  and any other entry it returns (the CLIP loss's 'clip_tokens' / 'clip_eot');
  with 'negative_caption' in the batch, its 'negative_tokens' / 'negative_eot'."""

  def __init__(self, tokenize):
    self.tokenize = tokenize

  def map(self, batch):
    t = self.tokenize([str(c) for c in batch['caption']])
    for key, value in t.items():
      batch[key] = np.asarray(value, np.int32)
    if 'negative_caption' in batch:
      t = self.tokenize([str(c) for c in batch['negative_caption']])
      for key in ('tokens', 'eot'):
        batch['negative_' + key] = np.asarray(t[key], np.int32)
    return batch


def shard_bounds(num_examples: int, shard: grain.sharding.ShardOptions) -> tuple:
  """[start, end) of `shard` when num_examples are split into equal contiguous
  parts; the remainder (< shard_count examples) is dropped so that every
  process runs the same number of steps."""
  per = num_examples // shard.shard_count
  return per * shard.shard_index, per * (shard.shard_index + 1)


def make_dataset(data_cfg: ml_collections.ConfigDict, *, tokenize, seed: int,
                 process_index: int | None = None, process_count: int | None = None,
                 shuffle: bool = True, num_epochs: int | None = None,
                 split: str | None = None, degradation: ml_collections.ConfigDict | None = None):
  """The training / evaluation input iterator of this process.

  Args:
    data_cfg: config.data (see configs/base.py).
    tokenize: callable(list of str) -> {'tokens': int [b, L], 'eot': int [b]};
      runs in the grain workers, so it must pickle (cloudpickle) when
      data_cfg.num_workers > 0.
    seed: shuffle and augmentation seed (the same on every process).
    process_index, process_count: this process's shard; default
      jax.process_index() / jax.process_count().
    shuffle: False reads each shard in stored order (evaluation).
    num_epochs: None repeats forever; otherwise stops after that many epochs
      (the last partial batch is dropped).
    split: overrides data_cfg.split (e.g. 'test' for evaluation).
    degradation: a degrade.degradation_config(); adds 'lr' and replaces 'image'
      by the HR crop (super-resolution pairs).

  Returns:
    a grain DatasetIterator (get_state / set_state; checkpoint it with
    grain.checkpoint.CheckpointSave / CheckpointRestore) of batch dicts as in
    the module docstring.
  """
  if process_index is None or process_count is None:
    shard = grain.sharding.ShardByJaxProcess(drop_remainder=True)
  else:
    shard = grain.sharding.ShardOptions(process_index, process_count, drop_remainder=True)
  data_cfg = _with_defaults(data_cfg)
  if split is not None:
    data_cfg.split = split
  check_data_config(data_cfg, shard.shard_count)
  builder = ensure_dataset(data_cfg)
  source = builder.as_data_source(split=data_cfg.split)
  start, end = shard_bounds(len(source), shard)
  per_process = data_cfg.batch_size // shard.shard_count
  if end - start < per_process:
    raise ConfigError(
        f'config.data.batch_size={data_cfg.batch_size}: process {shard.shard_index} has only '
        f'{end - start} examples of split {data_cfg.split!r}, fewer than one batch of '
        f'{per_process}; lower the batch size or use more data (config.data.num_examples)')

  feats = builder.info.features
  ck = data_cfg.caption_key
  class_names = feats[ck].names if isinstance(feats[ck], tfds.features.ClassLabel) else None
  # Integer scalars (ClassLabel included) pass through as labels.
  label_keys = [k for k, f in feats.items()
                if k not in (data_cfg.image_key, ck) and isinstance(f, tfds.features.Tensor)
                and tuple(f.shape) == () and np.issubdtype(np.dtype(f.np_dtype), np.integer)]

  ds = grain.MapDataset.source(source)[start:end]
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.repeat(num_epochs)  # reseeds the shuffle every epoch
  # Processes read different examples, but give them independent augmentation
  # streams anyway: position i on process p is seeded by (seed, p, *stream) and i.
  def stream_seed(*stream):
    return int(np.random.SeedSequence([seed, shard.shard_index, *stream]).generate_state(1)[0])

  ds = ds.random_map(Preprocess(
      data_cfg.resolution, data_cfg.random_flip, data_cfg.caption_dropout,
      data_cfg.image_key, ck, class_names, data_cfg.caption_template, label_keys,
      degradation, data_cfg.get('word_dropout', 0.0), data_cfg.get('random_rot90', False),
      hard_negative_attributes(data_cfg)),
      seed=stream_seed())
  ds = ds.batch(per_process, drop_remainder=True, batch_fn=collate)
  if data_cfg.get('caption_swap', 0.0) > 0:
    ds = ds.random_map(SwapCaptions(data_cfg.caption_swap), seed=stream_seed(1))
  ds = ds.map(Tokenize(tokenize))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=data_cfg.read_threads,
                                            prefetch_buffer_size=data_cfg.prefetch))
  if data_cfg.num_workers > 0:
    # grain's worker processes read absl flags; outside an absl app (tests,
    # notebooks) they are unparsed and reading them raises. Defaults are fine.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=data_cfg.num_workers, per_worker_buffer_size=data_cfg.prefetch))
  return iter(it)
