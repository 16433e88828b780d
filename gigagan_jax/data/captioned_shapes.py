"""`captioned_shapes`: the embedded, procedurally generated text-to-image dataset.

Every image holds 1-3 objects that share one shape, one colour and one size
class, on a plain background of another colour. A single object sits in one
cell of a 3x3 grid, so its position is a label too; several objects take
distinct cells (so they never overlap) and have no position label. Captions
come from varied templates ("a small red circle at the top left", "two blue
squares on a yellow background") and always name shape, colour and count; size,
position and background are named by some templates only.

The attribute space is small on purpose: a tiny generator learns it in
minutes, and issue 6 scores generated images for attribute accuracy against
their prompts with `parse_caption` and the constants below.

Generation is offline and deterministic: example `i` of a split is drawn from
`np.random.default_rng([split_id, i])`, independent of resolution, so building
twice gives identical files and the 64 px and 256 px versions of example `i`
show the same scene.

Features of every example (R = the builder config's resolution):
  image       uint8 [R, R, 3]
  caption     text (utf-8)
  shape       int32 []  index into SHAPES
  color       int32 []  index into COLORS (the objects)
  count       int32 []  number of objects, 1..3
  size        int32 []  index into SIZES
  position    int32 []  index into POSITIONS; -1 when count > 1
  background  int32 []  index into COLORS, never equal to `color`
"""
import dataclasses
import re

import numpy as np
from PIL import Image, ImageDraw
import tensorflow_datasets as tfds

from gigagan_jax.data import tfds_compat

SHAPES = ('circle', 'square', 'triangle', 'star', 'cross')
SHAPE_PLURALS = ('circles', 'squares', 'triangles', 'stars', 'crosses')
# Eight colours far apart in RGB so that a small classifier (and a human) never
# confuses them, even after the +-JITTER per-image variation below.
COLORS = ('red', 'green', 'blue', 'yellow', 'purple', 'orange', 'white', 'black')
COLOR_RGB = np.array([
    (220, 40, 40), (40, 170, 60), (40, 80, 220), (240, 220, 40),
    (150, 60, 190), (245, 140, 30), (245, 245, 245), (25, 25, 25)], np.int32)
COLOR_JITTER = 12
SIZES = ('small', 'large')
# Object radius as a fraction of the image side, per size class. A grid cell
# is 1/3 of the side, so radius < 1/6 keeps every object inside its cell.
SIZE_RADIUS = ((0.09, 0.11), (0.135, 0.16))
POSITIONS = ('top left', 'top center', 'top right',
             'middle left', 'center', 'middle right',
             'bottom left', 'bottom center', 'bottom right')
COUNTS = (1, 2, 3)
LABEL_KEYS = ('shape', 'color', 'count', 'size', 'position', 'background')
# Objects are rotated by at most this many degrees: variety without turning a
# square into a diamond.
MAX_ROTATION_DEG = 12.0

RESOLUTIONS = (32, 64, 128, 256)
# Default split sizes per resolution; bigger images get fewer examples so the
# default build stays under ~1 GB and ~1 minute.
DEFAULT_NUM_TRAIN = {32: 20000, 64: 20000, 128: 10000, 256: 5000}
DEFAULT_NUM_TEST = 1000
_SPLIT_IDS = {'train': 0, 'test': 1}

# Several phrasings per attribute value so the text encoder sees variety. The
# parser below recognises every one of them.
_SIZE_WORDS = (('small', 'tiny'), ('large', 'big'))
_NUMBER_WORDS = {2: 'two', 3: 'three'}
_NUMBERS = {word: n for n, word in _NUMBER_WORDS.items()}
_DETERMINERS = ('a', 'an', *_NUMBER_WORDS.values())  # the words a count changes
_POSITION_PHRASES = {
    'top left': ('at the top left', 'in the top left corner'),
    'top center': ('at the top', 'at the top center'),
    'top right': ('at the top right', 'in the top right corner'),
    'middle left': ('on the left', 'at the middle left'),
    'center': ('in the center', 'in the middle'),
    'middle right': ('on the right', 'at the middle right'),
    'bottom left': ('at the bottom left', 'in the bottom left corner'),
    'bottom center': ('at the bottom', 'at the bottom center'),
    'bottom right': ('at the bottom right', 'in the bottom right corner'),
}
# {a}: article of the next word, {num}: number word, {sz}: size word,
# {col}: colour, {shp}: shape noun, {pos}: position phrase, {bg}: background.
_SINGLE_TEMPLATES = (
    '{a} {sz} {col} {shp} {pos}',
    '{a} {col} {shp} {pos} on {abg} {bg} background',
    '{a} {sz} {col} {shp} on {abg} {bg} background',
    '{a} {col} {shp}',
    'there is {a} {sz} {col} {shp} {pos}',
    '{a} {sz} {col} {shp} {pos} on {abg} {bg} background',
)
_MULTI_TEMPLATES = (
    '{num} {sz} {col} {shp}',
    '{num} {col} {shp} on {abg} {bg} background',
    '{num} {sz} {col} {shp} on {abg} {bg} background',
    '{num} {col} {shp}',
    'there are {num} {sz} {col} {shp}',
)


def _article(word: str) -> str:
  return 'an' if word[0] in 'aeiou' else 'a'


@dataclasses.dataclass(frozen=True)
class Scene:
  """One sampled example before rendering: labels plus object geometry.

  centers/radii/angles are in units of the image side (0..1) and degrees.
  """
  shape: int
  color: int
  count: int
  size: int
  position: int
  background: int
  centers: tuple
  radii: tuple
  angles: tuple
  rgb: tuple
  bg_rgb: tuple
  caption: str

  def labels(self) -> dict:
    return {k: getattr(self, k) for k in LABEL_KEYS}


def sample_scene(rng: np.random.Generator) -> Scene:
  """Draws labels, geometry and a caption from `rng`."""
  shape = int(rng.integers(len(SHAPES)))
  color = int(rng.integers(len(COLORS)))
  background = int(rng.choice([c for c in range(len(COLORS)) if c != color]))
  count = int(rng.choice(COUNTS))
  size = int(rng.integers(len(SIZES)))
  cells = rng.choice(9, size=count, replace=False)
  position = int(cells[0]) if count == 1 else -1
  centers, radii, angles = [], [], []
  for cell in cells:
    r = rng.uniform(*SIZE_RADIUS[size])
    slack = 1 / 6 - r  # how far the centre may move while staying in the cell
    cy = (cell // 3 + 0.5) / 3 + rng.uniform(-slack, slack)
    cx = (cell % 3 + 0.5) / 3 + rng.uniform(-slack, slack)
    centers.append((float(cx), float(cy)))
    radii.append(float(r))
    angles.append(float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)))
  jitter = lambda: tuple(int(v) for v in rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, 3))
  rgb = tuple(int(v) for v in np.clip(COLOR_RGB[color] + jitter(), 0, 255))
  bg_rgb = tuple(int(v) for v in np.clip(COLOR_RGB[background] + jitter(), 0, 255))
  caption = make_caption(rng, shape=shape, color=color, count=count, size=size,
                         position=position, background=background)
  return Scene(shape, color, count, size, position, background, tuple(centers),
               tuple(radii), tuple(angles), rgb, bg_rgb, caption)


def make_caption(rng: np.random.Generator, *, shape, color, count, size, position,
                 background) -> str:
  """A caption for the labels from a random template (see module docstring)."""
  templates = _SINGLE_TEMPLATES if count == 1 else _MULTI_TEMPLATES
  template = templates[int(rng.integers(len(templates)))]
  words = dict(
      sz=_SIZE_WORDS[size][int(rng.integers(2))],
      col=COLORS[color],
      shp=SHAPES[shape] if count == 1 else SHAPE_PLURALS[shape],
      num=_NUMBER_WORDS.get(count, ''),
      bg=COLORS[background],
      abg=_article(COLORS[background]))
  if position >= 0:
    phrases = _POSITION_PHRASES[POSITIONS[position]]
    words['pos'] = phrases[int(rng.integers(len(phrases)))]
  # The singular article agrees with whatever word follows it.
  first = template.split('{a} ', 1)[-1].split(' ', 1)[0].strip('{}')
  words['a'] = _article(words.get(first, 'x'))
  return template.format(**words)


_WORD = re.compile(r'[a-z]+')


def parse_caption(caption: str) -> dict:
  """Reads the attribute labels back from a caption (ours or a user's prompt).

  Args:
    caption: text such as "two big red stars on a white background".

  Returns:
    dict with the keys LABEL_KEYS; each value an int (an index into SHAPES,
    COLORS, SIZES, POSITIONS, or the object count 1..3), or -1 where the
    caption does not name that attribute (or names it ambiguously).
  """
  words = _WORD.findall(caption.lower())
  out = {k: -1 for k in LABEL_KEYS}
  for i, w in enumerate(words):
    if w in SHAPES:
      out['shape'], out['count'] = SHAPES.index(w), 1
    elif w in SHAPE_PLURALS:
      out['shape'] = SHAPE_PLURALS.index(w)
      out['count'] = next((_NUMBERS[v] for v in words[:i] if v in _NUMBERS), -1)
    elif w in COLORS:
      nxt = words[i + 1] if i + 1 < len(words) else ''
      out['background' if nxt == 'background' else 'color'] = COLORS.index(w)
    else:
      for s, choices in enumerate(_SIZE_WORDS):
        if w in choices:
          out['size'] = s
  ws = set(words)
  if ws & {'top', 'bottom', 'left', 'right', 'center', 'middle'}:
    row = 0 if 'top' in ws else 2 if 'bottom' in ws else 1
    col = 0 if 'left' in ws else 2 if 'right' in ws else 1
    out['position'] = row * 3 + col
  return out


# The attributes `counterfactual_caption` may change.
COUNTERFACTUAL_ATTRIBUTES = ('shape', 'color', 'count', 'size', 'position', 'background')


def counterfactual_caption(caption: str, rng: np.random.Generator,
                           attributes: tuple = COUNTERFACTUAL_ATTRIBUTES) -> str:
  """`caption` with one attribute it names changed to another value: a hard
  negative for the contrastive loss (config data.hard_negatives).

  One of `attributes` (of COUNTERFACTUAL_ATTRIBUTES; config
  data.hard_negative_attributes) that the caption names is drawn uniformly,
  then one of its replacements (see counterfactuals). A caption that names
  none of them (e.g. '') comes back unchanged.
  """
  options = counterfactuals(caption)
  names = [a for a in COUNTERFACTUAL_ATTRIBUTES if a in options and a in attributes]
  if not names:
    return caption
  choices = options[names[int(rng.integers(len(names)))]]
  return choices[int(rng.integers(len(choices)))]


def counterfactuals(caption: str) -> dict:
  """{attribute: [captions]}: every caption that differs from `caption` in that
  one attribute, for each of COUNTERFACTUAL_ATTRIBUTES the caption names.

  The shape noun becomes another shape's (same number), the object or
  background colour a colour that is neither of the two, the count each of
  the other two of COUNTS (see _recounted), the size word the other size's,
  the position phrase each other position's (see _repositioned). Articles
  follow the new word.
  """
  words = caption.split()
  labels = parse_caption(caption)
  used = {labels['color'], labels['background']}
  other_colors = [c for i, c in enumerate(COLORS) if i not in used]
  slots = {}  # attribute -> (index of its word, replacements)
  # The count changes the shape noun's number and its determiner, the last
  # article or number word before it ('on a ... background' follows the noun).
  det = noun = None
  for i, w in enumerate(words):
    if w in _DETERMINERS and noun is None:
      det = i
    elif w in SHAPES or w in SHAPE_PLURALS:
      nouns = SHAPES if w in SHAPES else SHAPE_PLURALS
      slots['shape'] = (i, [n for n in nouns if n != w])
      noun = i
    elif w in COLORS:
      background = i + 1 < len(words) and words[i + 1] == 'background'
      slots['background' if background else 'color'] = (i, other_colors)
    else:
      for s, choices in enumerate(_SIZE_WORDS):
        if w in choices:
          slots['size'] = (i, [_SIZE_WORDS[1 - s][choices.index(w)]])

  def replaced(i, word):
    out = list(words)
    out[i] = word
    if i > 0 and out[i - 1] in ('a', 'an'):
      out[i - 1] = _article(word)
    return ' '.join(out)

  out = {a: [replaced(i, r) for r in repl] for a, (i, repl) in slots.items()}
  if None not in (det, noun) and labels['count'] in COUNTS:
    out['count'] = [_recounted(words, det, noun, n) for n in COUNTS if n != labels['count']]
  moved = _repositioned(caption)
  if moved:
    out['position'] = moved
  return out


def _repositioned(caption: str) -> list:
  """`caption` with its position phrase replaced by each other position's
  phrase of the same wording (first or second of _POSITION_PHRASES), or [] if
  it has none. Longest phrases are tried first: 'at the top' is a prefix of
  'at the top left'."""
  padded = f' {caption} '
  found = max(((len(p), k, position, p) for position, phrases in _POSITION_PHRASES.items()
               for k, p in enumerate(phrases) if f' {p} ' in padded), default=None)
  if found is None:
    return []
  _, k, position, phrase = found
  return [padded.replace(f' {phrase} ', f' {phrases[k]} ', 1).strip()
          for other, phrases in _POSITION_PHRASES.items() if other != position]


def _recounted(words: list, det: int, noun: int, count: int) -> str:
  """The caption `words` about `count` objects: its shape noun (index `noun`)
  in that number, its determiner (index `det`: article or number word) and a
  'there is' / 'there are' before it agreeing. A singular caption's position
  phrase stays, so that the negative differs from its image in the count alone.
  """
  out = list(words)
  stem = SHAPES.index(out[noun]) if out[noun] in SHAPES else SHAPE_PLURALS.index(out[noun])
  out[noun] = SHAPES[stem] if count == 1 else SHAPE_PLURALS[stem]
  out[det] = _article(out[det + 1]) if count == 1 else _NUMBER_WORDS[count]
  if det > 0 and out[det - 1] in ('is', 'are'):
    out[det - 1] = 'is' if count == 1 else 'are'
  return ' '.join(out)


def _polygon(shape: str, cx, cy, r, angle_deg):
  """Vertices of `shape` centred at (cx, cy) with outer radius r (pixels)."""
  if shape == 'square':
    angles, radii = np.arange(4) * 90 + 45, np.full(4, r)
  elif shape == 'triangle':
    angles, radii = np.arange(3) * 120 - 90, np.full(3, r * 1.15)
    cy = cy + 0.15 * r  # the centroid sits low; centre the bounding box instead
  elif shape == 'star':
    angles, radii = np.arange(10) * 36 - 90, np.where(np.arange(10) % 2 == 0, r * 1.1, r * 0.45)
  elif shape == 'cross':
    # A plus sign: 12 corners at arm half-width w and arm length r.
    w = 0.36 * r
    pts = np.array([(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r),
                    (-w, -r), (-w, -w), (-r, -w), (-r, w), (-w, w), (-w, r)])
    t = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    pts = pts @ rot.T + (cx, cy)
    return [tuple(p) for p in pts]
  else:
    raise ValueError(f'no polygon for shape {shape!r}')
  t = np.deg2rad(angles + angle_deg)
  return list(zip(cx + radii * np.cos(t), cy + radii * np.sin(t)))


def render(scene: Scene, resolution: int) -> np.ndarray:
  """Draws `scene` antialiased; returns uint8 [resolution, resolution, 3]."""
  # Draw at ss x the size and box-filter down: cheap antialiasing that keeps
  # edges smooth at 32 px. Large images need less supersampling.
  ss = max(1, min(4, 512 // resolution))
  side = resolution * ss
  img = Image.new('RGB', (side, side), scene.bg_rgb)
  draw = ImageDraw.Draw(img)
  for (cx, cy), r, a in zip(scene.centers, scene.radii, scene.angles):
    cx, cy, r = cx * side, cy * side, r * side
    if SHAPES[scene.shape] == 'circle':
      draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=scene.rgb)
    else:
      draw.polygon(_polygon(SHAPES[scene.shape], cx, cy, r, a), fill=scene.rgb)
  if ss > 1:
    img = img.reduce(ss)
  return np.asarray(img, dtype=np.uint8)


def generate_example(split: str, index: int, resolution: int) -> dict:
  """Example `index` of `split` as a feature dict (see module docstring)."""
  rng = np.random.default_rng([_SPLIT_IDS[split], index])
  scene = sample_scene(rng)
  ex = {k: np.int32(v) for k, v in scene.labels().items()}
  ex['image'] = render(scene, resolution)
  ex['caption'] = scene.caption
  return ex


@dataclasses.dataclass(kw_only=True)
class CaptionedShapesConfig(tfds.core.BuilderConfig):
  """resolution: image side in pixels; num_train/num_test: split sizes."""
  resolution: int = 64
  num_train: int = 20000
  num_test: int = DEFAULT_NUM_TEST


def builder_config(resolution: int, num_examples: int = 0) -> CaptionedShapesConfig:
  """The config for `resolution` px with `num_examples` training examples.

  num_examples=0 selects the default size (DEFAULT_NUM_TRAIN); another value
  gets its own config name ('64px_4096') so differently sized builds live side
  by side in one data_dir. The test split is a tenth of the train split, at
  least 1 and at most DEFAULT_NUM_TEST examples.
  """
  if resolution not in RESOLUTIONS:
    raise ValueError(f'captioned_shapes resolution must be one of {RESOLUTIONS}, got {resolution}')
  if num_examples < 0:
    raise ValueError(f'num_examples must be >= 0 (0 = default), got {num_examples}')
  if num_examples == 0:
    return CaptionedShapesConfig(
        name=f'{resolution}px', resolution=resolution,
        num_train=DEFAULT_NUM_TRAIN[resolution], num_test=DEFAULT_NUM_TEST,
        description=f'{resolution}x{resolution} px, default size')
  return CaptionedShapesConfig(
      name=f'{resolution}px_{num_examples}', resolution=resolution,
      num_train=num_examples, num_test=max(1, min(DEFAULT_NUM_TEST, num_examples // 10)),
      description=f'{resolution}x{resolution} px, {num_examples} training examples')


class CaptionedShapes(tfds_compat.LocalCodePath, tfds.core.GeneratorBasedBuilder):
  """Procedural captioned shapes; see the module docstring."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First version.'}
  BUILDER_CONFIGS = [builder_config(r) for r in RESOLUTIONS]
  progress = None  # optional callable(n) advanced per example (prepare's tqdm)

  def _info(self) -> tfds.core.DatasetInfo:
    r = self.builder_config.resolution
    scalar = lambda: tfds.features.Tensor(shape=(), dtype=np.int32)
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            # BYTES: one raw buffer per image. The default stores every pixel as
            # an int64 in a proto, ~10x slower to write and larger to read.
            'image': tfds.features.Tensor(shape=(r, r, 3), dtype=np.uint8,
                                          encoding=tfds.features.Encoding.BYTES),
            'caption': tfds.features.Text(),
            **{k: scalar() for k in LABEL_KEYS},
        }),
        supervised_keys=None,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    cfg = self.builder_config
    return {'train': self._generate_examples('train', cfg.num_train),
            'test': self._generate_examples('test', cfg.num_test)}

  def _generate_examples(self, split: str, num: int):
    r = self.builder_config.resolution
    for i in range(num):
      yield i, generate_example(split, i, r)
      if self.progress is not None:
        self.progress(1)


def builder(resolution: int, num_examples: int, data_dir: str) -> CaptionedShapes:
  """The builder for `resolution` px with `num_examples` training examples (0 = default)."""
  cfg = builder_config(resolution, num_examples)
  # TFDS rejects a fresh object named like a predefined config: pass the name.
  return CaptionedShapes(config=cfg.name if num_examples == 0 else cfg, data_dir=data_dir,
                         file_format='array_record')
