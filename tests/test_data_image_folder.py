"""image_folder: planted bad files are skipped and reported exactly; prepare CLI; config errors."""
import io
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from configs import base
from gigagan_jax.config_utils import ConfigError
from gigagan_jax.data import image_folder
from gigagan_jax.data import pipeline
from gigagan_jax.data import prepare

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _img(w, h, seed, mode='RGB'):
  rng = np.random.default_rng(seed)
  arr = rng.integers(0, 256, (h, w, 4 if mode == 'RGBA' else 3), dtype=np.uint8)
  return Image.fromarray(arr, mode)


def _plant(src):
  """A folder with 6 good images, 3 corrupt files and 2 images without caption.

  Returns (good {relpath: caption}, corrupt relpaths, missing-caption relpaths).
  """
  os.makedirs(os.path.join(src, 'sub', 'deeper'))
  good = {}
  def save(rel, im, caption=None, **kw):
    im.save(os.path.join(src, rel), **kw)
    if caption is not None:
      with open(os.path.join(src, os.path.splitext(rel)[0] + '.txt'), 'w') as f:
        f.write(caption)
      good[rel] = ' '.join(caption.split())
  # Odd margins (21 and 51 px): the crop's offset rounds down, as PIL's does.
  save('a.jpg', _img(81, 60, 0), 'a wide photo\nof noise', quality=90)
  save('b.png', _img(40, 91, 1), 'a tall png')
  save('sub/c.webp', _img(64, 64, 2), 'a webp in a subfolder')
  save('sub/deeper/d.png', _img(50, 50, 3, 'RGBA'), 'transparent')
  # Captioned by the jsonl index, not by a sidecar.
  _img(100, 100, 4).save(os.path.join(src, 'sub', 'e.jpg'))
  good['sub/e.jpg'] = 'from the index'
  # Captioned by both: the sidecar wins.
  save('sub/both.png', _img(36, 36, 8), 'the sidecar wins')
  with open(os.path.join(src, 'captions.jsonl'), 'w') as f:
    f.write(json.dumps({'file': 'sub/e.jpg', 'caption': 'from the index'}) + '\n')
    f.write(json.dumps({'file': 'sub/both.png', 'caption': 'the index loses'}) + '\n')
    f.write(json.dumps({'file': 'gone.jpg', 'caption': 'no such image'}) + '\n')
  # Corrupt: truncated JPEG, empty PNG, text pretending to be a JPEG.
  buf = io.BytesIO()
  _img(64, 64, 5).save(buf, format='JPEG')
  corrupt = {'trunc.jpg': buf.getvalue()[:300], 'empty.png': b'',
             'sub/text.jpg': b'hello, not an image'}
  for rel, data in corrupt.items():
    with open(os.path.join(src, rel), 'wb') as f:
      f.write(data)
    with open(os.path.join(src, os.path.splitext(rel)[0] + '.txt'), 'w') as f:
      f.write('a caption for a broken file')
  # A fine image without any caption, and one whose sidecar is blank.
  _img(32, 32, 6).save(os.path.join(src, 'nocap.png'))
  _img(32, 32, 7).save(os.path.join(src, 'sub', 'blank.png'))
  with open(os.path.join(src, 'sub', 'blank.txt'), 'w') as f:
    f.write('  \n')
  return good, sorted(corrupt), ['nocap.png', 'sub/blank.png']


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  src = str(tmp_path_factory.mktemp('src'))
  good, corrupt, missing = _plant(src)
  out = str(tmp_path_factory.mktemp('data'))
  b, report = prepare.build_image_folder(src, out, 32, progress=False)
  return b, report, good, corrupt, missing, out, src


def test_skips_and_reports_exactly_the_bad_files(built):
  b, report, good, corrupt, missing, _, _ = built
  assert report.images_found == len(good) + len(corrupt) + len(missing)
  assert sorted(c['file'] for c in report.corrupt) == corrupt
  assert sorted(report.missing_caption) == missing
  assert report.caption_without_image == ['gone.jpg']
  assert report.written == {'train': len(good)}
  assert report.skipped == len(corrupt) + len(missing)
  text = report.format()
  for rel in corrupt + missing:
    assert rel in text
  with open(os.path.join(b.data_dir, image_folder.REPORT_NAME)) as f:
    saved = json.load(f)
  assert sorted(c['file'] for c in saved['corrupt']) == corrupt
  assert saved['missing_caption'] == missing and saved['skipped'] == 5


def test_written_examples_are_the_good_images(built):
  b, _, good, _, _, _, src = built
  ds = b.as_data_source('train')
  got = {}
  for i in range(len(ds)):
    r = ds[i]
    assert r['image'].shape == (32, 32, 3) and r['image'].dtype == np.uint8
    got[r['file'].decode()] = (r['caption'].decode(), r['image'])
  assert {k: v[0] for k, v in got.items()} == good
  # Center crop + resize: what Pillow itself gives for the file, opened,
  # cropped to its centred square and resized with the Lanczos filter the
  # module docstring names. b.png is 40 x 91 (rows 25-64 kept), a.jpg 81 x 60
  # (columns 10-69 kept).
  for rel, box in (('b.png', (0, 25, 40, 65)), ('a.jpg', (10, 0, 70, 60))):
    with Image.open(os.path.join(src, rel)) as im:
      want = np.asarray(im.convert('RGB').crop(box).resize((32, 32), Image.LANCZOS))
    np.testing.assert_array_equal(got[rel][1], want, err_msg=rel)
  # The sidecar caption, not the index entry that also names the image.
  assert got['sub/both.png'][0] == 'the sidecar wins'
  # Transparency is composited on white, not black.
  assert got['sub/deeper/d.png'][1].mean() > 100


@pytest.mark.parametrize('index', ['captions.jsonl', 'captions.csv'])
def test_sidecar_wins_over_index_entry(tmp_path, index):
  """An image named by both a sidecar .txt and the index gets the sidecar's
  caption; a blank sidecar is no caption, so the index's is used."""
  for name in ('both', 'blank', 'index_only'):
    _img(8, 8, 0).save(tmp_path / f'{name}.png')
  (tmp_path / 'both.txt').write_text('from the  sidecar\n')
  (tmp_path / 'blank.txt').write_text(' \n')
  rows = [('both.png', 'from the index'), ('blank.png', 'blank sidecar, index caption'),
          ('index_only.png', 'only in the index')]
  if index.endswith('.jsonl'):
    (tmp_path / index).write_text(''.join(json.dumps({'file': f, 'caption': c}) + '\n'
                                          for f, c in rows))
  else:
    (tmp_path / index).write_text('file,caption\n' + ''.join(f'{f},"{c}"\n' for f, c in rows))
  assert dict(image_folder.scan_folder(str(tmp_path))) == {
      'both.png': 'from the sidecar', 'blank.png': 'blank sidecar, index caption',
      'index_only.png': 'only in the index'}


def _names(n, prefix=''):
  return [f'{prefix}dir{i % 7}/img_{i:05d}.jpg' for i in range(n)]


def test_test_fraction_share_is_the_fraction_on_many_names():
  """The hash split holds out about `fraction` of any large set of names (within
  5 binomial standard deviations), none at fraction 0."""
  names = _names(20000)
  for fraction in (0.01, 0.1, 0.5):
    share = np.mean([image_folder._in_test(n, fraction) for n in names])
    assert abs(share - fraction) < 5 * np.sqrt(fraction * (1 - fraction) / len(names)), \
        (fraction, share)
  assert not any(image_folder._in_test(n, 0.0) for n in names)
  # Nested: a name held out at 0.1 is held out at every larger fraction.
  assert all(image_folder._in_test(n, 0.5) for n in names if image_folder._in_test(n, 0.1))


def _split_files(builder):
  return {split: sorted(r['file'].decode() for r in builder.as_data_source(split))
          for split in builder.info.splits}


def test_test_fraction_split_is_stable_disjoint_and_complete(tmp_path):
  """Two builds, of the same files in two folders (the second written in the
  reverse order, with more images besides), hold out the same files; each
  build's train and test splits are disjoint and together all its images."""
  names = [f'{d}/{i}.png' for d in ('a', 'b/c') for i in range(20)]
  # Sorted among the others (before, between, after): a split by position would shift.
  extra = [f'{d}/{i}_new.png' for d in ('0', 'a', 'b') for i in range(7)]
  builds = {}
  for key, files in (('first', names), ('second', list(reversed(names + extra)))):
    src = tmp_path / key
    for n, rel in enumerate(files):
      os.makedirs(src / os.path.dirname(rel), exist_ok=True)
      _img(8, 8, n).save(src / rel)
      (src / rel).with_suffix('.txt').write_text(f'image {rel}')
    b, report = prepare.build_image_folder(str(src), str(tmp_path / f'out_{key}'), 16,
                                           test_fraction=0.25, progress=False)
    splits = _split_files(b)
    assert set(splits) == {'train', 'test'}
    assert not set(splits['train']) & set(splits['test'])
    assert sorted(splits['train'] + splits['test']) == sorted(files)
    assert report.written == {k: len(v) for k, v in splits.items()}
    builds[key] = splits
  first, second = builds['first'], builds['second']
  assert 0 < len(first['test']) < len(names)  # a real split, not all or nothing
  assert [f for f in second['test'] if f in names] == first['test']
  assert [f for f in second['train'] if f in names] == first['train']


def test_pipeline_reads_image_folder_and_resolution_mismatch_errors(built):
  _, _, good, _, _, out, _ = built
  c = base.get_base_config().data
  c.builder, c.data_dir, c.resolution, c.batch_size = 'image_folder', out, 32, 2
  it = pipeline.make_dataset(c, tokenize=_tok, seed=0, process_index=0, process_count=1,
                             num_epochs=1)
  captions = [str(x) for batch in it for x in batch['caption']]
  assert len(captions) == len(good) // 2 * 2 and set(captions) <= set(good.values())
  c.resolution = 64
  with pytest.raises(ConfigError, match=r'config\.data\.resolution=64.*prepared at \[32\] px'):
    pipeline.ensure_dataset(c)


def _tok(captions):
  return {'tokens': np.zeros((len(captions), 4), np.int32),
          'eot': np.zeros((len(captions),), np.int32)}


def test_missing_user_dataset_names_field_and_command(tmp_path):
  c = base.get_base_config().data
  c.builder, c.data_dir, c.resolution = 'image_folder', str(tmp_path), 64
  with pytest.raises(ConfigError) as e:
    pipeline.ensure_dataset(c)
  msg = str(e.value)
  assert 'config.data.data_dir' in msg and 'config.data.builder=image_folder' in msg
  assert 'python -m gigagan_jax.data.prepare --builder=image_folder' in msg


def test_unknown_builder_and_bad_fields(tmp_path):
  c = base.get_base_config().data
  c.data_dir = str(tmp_path)
  c.builder = 'no_such_dataset_xyz'
  with pytest.raises(ConfigError, match=r"config\.data\.builder='no_such_dataset_xyz'"):
    pipeline.ensure_dataset(c)
  c.builder, c.resolution = 'captioned_shapes', 48
  with pytest.raises(ConfigError, match=r'config\.data\.resolution'):
    pipeline.ensure_dataset(c)
  c.resolution, c.caption_dropout = 32, 1.5
  with pytest.raises(ConfigError, match=r'config\.data\.caption_dropout'):
    pipeline.ensure_dataset(c)


def test_prepare_cli(tmp_path):
  src = tmp_path / 'src'
  src.mkdir()
  for i in range(3):
    _img(40, 40, i).save(src / f'{i}.png')
    (src / f'{i}.txt').write_text(f'image {i}')
  (src / 'bad.jpg').write_bytes(b'xx')
  out = tmp_path / 'out'
  r = subprocess.run([sys.executable, '-m', 'gigagan_jax.data.prepare', '--builder=image_folder',
                      f'--src={src}', f'--out={out}', '--resolution=16'],
                     cwd=REPO, capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'bad.jpg' in r.stdout and 'without caption' in r.stdout
  assert '--config.data.builder=image_folder' in r.stdout
  assert os.path.exists(out / 'image_folder' / '16px' / '1.0.0' / image_folder.REPORT_NAME)
