"""captioned_shapes: deterministic builds, captions that agree with labels and pixels."""
import os

import numpy as np
import pytest

from gigagan_jax.data import captioned_shapes as cs


def _build(data_dir, resolution=32, n=200):
  b = cs.builder(resolution, n, str(data_dir))
  b.download_and_prepare()
  return b


@pytest.fixture(scope='module')
def built_twice(tmp_path_factory):
  return (_build(tmp_path_factory.mktemp('a')), _build(tmp_path_factory.mktemp('b')))


def test_building_twice_gives_identical_data(built_twice):
  a, b = built_twice
  for split, n in (('train', 200), ('test', 20)):
    sa, sb = a.as_data_source(split), b.as_data_source(split)
    assert len(sa) == len(sb) == n
    for i in range(n):
      ra, rb = sa[i], sb[i]
      assert ra.keys() == rb.keys()
      for k in ra:
        np.testing.assert_array_equal(ra[k], rb[k], err_msg=f'{split}[{i}].{k}')
    # The array_record files themselves are byte-identical.
    fa = sorted(f for f in os.listdir(a.data_dir) if f'-{split}.array_record' in f)
    assert fa
    for f in fa:
      with open(os.path.join(a.data_dir, f), 'rb') as x:
        with open(os.path.join(b.data_dir, f), 'rb') as y:
          assert x.read() == y.read()


def test_train_and_test_splits_differ(built_twice):
  a, _ = built_twice
  train = {r['image'].tobytes() for r in a.as_data_source('train')}
  test = {r['image'].tobytes() for r in a.as_data_source('test')}
  assert len(train) == 200 and not train & test


def test_built_captions_agree_with_labels(built_twice):
  src = built_twice[0].as_data_source('train')
  for i in range(len(src)):
    r = src[i]
    caption = r['caption'].decode()
    parsed = cs.parse_caption(caption)
    labels = {k: int(r[k]) for k in cs.LABEL_KEYS}
    assert r['image'].shape == (32, 32, 3) and r['image'].dtype == np.uint8
    # Shape, colour and count are always named; the rest when named must match.
    for k in ('shape', 'color', 'count'):
      assert parsed[k] == labels[k], (caption, labels)
    for k in ('size', 'position', 'background'):
      assert parsed[k] in (-1, labels[k]), (caption, labels)
    assert labels['background'] != labels['color']
    assert (labels['position'] >= 0) == (labels['count'] == 1)


def test_many_sampled_captions_agree_and_vary():
  """3000 scenes (no rendering): every template parses back exactly."""
  captions, named = set(), {k: 0 for k in cs.LABEL_KEYS}
  for i in range(3000):
    scene = cs.sample_scene(np.random.default_rng([0, i]))
    parsed, labels = cs.parse_caption(scene.caption), scene.labels()
    for k in cs.LABEL_KEYS:
      if parsed[k] != -1:
        named[k] += 1
        assert parsed[k] == labels[k], (scene.caption, labels)
    captions.add(scene.caption)
  assert named['shape'] == named['color'] == named['count'] == 3000
  # The optional attributes are named often, but not always.
  for k in ('size', 'position', 'background'):
    assert 300 < named[k] < 3000, (k, named[k])
  assert len(captions) > 1000


def test_pixels_agree_with_labels():
  """The corner shows the background colour and the objects' colour covers a
  share of the image that grows with count and size."""
  area = {}
  for i in range(300):
    ex = cs.generate_example('train', i, 64)
    img = ex['image'].astype(np.int32)
    bg = cs.COLOR_RGB[ex['background']]
    assert np.abs(img[0, 0] - bg).max() <= cs.COLOR_JITTER + 1
    obj = np.abs(img - cs.COLOR_RGB[ex['color']]).max(-1) <= cs.COLOR_JITTER + 2
    frac = obj.mean()
    assert frac > 0.005, ex['caption']
    area.setdefault((int(ex['count']), int(ex['size'])), []).append(frac)
  mean = {k: np.mean(v) for k, v in area.items()}
  assert mean[(1, 0)] < mean[(1, 1)] and mean[(1, 0)] < mean[(3, 0)]


def test_parse_caption_of_user_prompts():
  assert cs.parse_caption('a red circle') == dict(
      shape=0, color=0, count=1, size=-1, position=-1, background=-1)
  p = cs.parse_caption('Two big BLUE squares on a yellow background')
  assert (p['shape'], p['color'], p['count'], p['size'], p['background']) == (
      cs.SHAPES.index('square'), cs.COLORS.index('blue'), 2, 1, cs.COLORS.index('yellow'))
  pos = lambda text: cs.parse_caption(text)['position']
  assert pos('a tiny star in the top right corner') == cs.POSITIONS.index('top right')
  assert pos('an orange cross on the left') == cs.POSITIONS.index('middle left')
  assert cs.parse_caption('a dog')['shape'] == -1


def test_builder_config_names_and_errors():
  assert cs.builder_config(64).name == '64px'
  assert cs.builder_config(64).num_train == cs.DEFAULT_NUM_TRAIN[64]
  c = cs.builder_config(32, 4096)
  assert (c.name, c.num_train, c.num_test) == ('32px_4096', 4096, 409)
  with pytest.raises(ValueError, match='resolution'):
    cs.builder_config(48)


def test_default_hard_negative_attributes_are_every_counterfactual_attribute():
  from configs import base
  assert base.get_base_config().data.hard_negative_attributes == cs.COUNTERFACTUAL_ATTRIBUTES


def test_counterfactual_caption_changes_exactly_one_named_attribute():
  """Each hard negative parses to the labels of its caption with one of
  COUNTERFACTUAL_ATTRIBUTES changed (to a colour the scene does not use, for the
  colours), keeps its articles grammatical, and every attribute gets changed."""
  rng = np.random.default_rng(0)
  changed = set()
  for i in range(400):
    caption = cs.sample_scene(np.random.default_rng([5, i])).caption
    negative = cs.counterfactual_caption(caption, rng)
    before, after = cs.parse_caption(caption), cs.parse_caption(negative)
    diff = [k for k in cs.LABEL_KEYS if before[k] != after[k]]
    assert len(diff) == 1 and diff[0] in cs.COUNTERFACTUAL_ATTRIBUTES, (caption, negative)
    assert after[diff[0]] != -1
    if diff[0] in ('color', 'background'):
      assert after[diff[0]] not in (before['color'], before['background'])
    words = negative.split()
    for article, word in zip(words, words[1:]):
      if article in ('a', 'an'):
        assert article == ('an' if word[0] in 'aeiou' else 'a'), negative
    changed.add(diff[0])
  assert changed == set(cs.COUNTERFACTUAL_ATTRIBUTES)
  assert cs.counterfactual_caption('', rng) == ''
  assert cs.counterfactual_caption('a photo', rng) == 'a photo'


def test_count_counterfactuals_cross_between_one_and_many():
  """The count's hard negatives are both other counts of COUNTS, the singular
  among them: the noun's number, its determiner and 'there is/are' follow."""
  counts = lambda caption: cs.counterfactuals(caption)['count']
  assert counts('there is an orange star in the center') == [
      'there are two orange stars in the center', 'there are three orange stars in the center']
  assert counts('three tiny blue crosses on an orange background') == [
      'a tiny blue cross on an orange background', 'two tiny blue crosses on an orange background']
  assert counts('two orange squares') == ['an orange square', 'three orange squares']
  assert 'count' not in cs.counterfactuals('red circle')  # no determiner to change


def test_counterfactual_caption_changes_only_the_attributes_asked_for():
  """With `attributes` (config data.hard_negative_attributes) the changed
  attribute is one of them, each of them turns up, and a caption that names
  none of them comes back unchanged."""
  rng = np.random.default_rng(1)
  asked = ('count', 'position')
  changed = set()
  for i in range(200):
    caption = cs.sample_scene(np.random.default_rng([6, i])).caption
    negative = cs.counterfactual_caption(caption, rng, asked)
    before, after = cs.parse_caption(caption), cs.parse_caption(negative)
    diff = [k for k in cs.LABEL_KEYS if before[k] != after[k]]
    assert diff in ([a] for a in asked), (caption, negative)
    changed.add(diff[0])
  assert changed == set(asked)
  assert cs.counterfactual_caption('red circle', rng, asked) == 'red circle'


def test_position_counterfactuals_move_the_object_to_each_other_cell():
  """The position's hard negatives are the caption with its position phrase
  replaced by each of the eight other positions' phrases, in the same wording;
  the longest phrase is the one replaced ('at the top' is in 'at the top left')."""
  moved = cs.counterfactuals('a red circle at the top left on a white background')['position']
  assert len(moved) == len(cs.POSITIONS) - 1
  assert [cs.parse_caption(c)['position'] for c in moved] == list(range(1, 9))
  assert all(c.startswith('a red circle ') and c.endswith(' on a white background')
             for c in moved)
  assert 'a red circle at the top on a white background' in moved
  assert 'a tiny blue cross in the top left corner' in cs.counterfactuals(
      'a tiny blue cross in the middle')['position']
  assert 'position' not in cs.counterfactuals('two red stars')  # no position named
