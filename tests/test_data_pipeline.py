"""grain pipeline: batches, exact resume, per-process shards, seeded augmentation."""
import hashlib
import sys

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import base
from gigagan_jax.config_utils import ConfigError
from gigagan_jax.data import captioned_shapes as cs
from gigagan_jax.data import degrade
from gigagan_jax.data import pipeline

N = 200  # training examples of the test dataset
L = 12


def tokenize(captions):
  """Stand-in tokenizer: utf-8 bytes + 1, 0-padded; eot = index of the last token."""
  tokens = np.zeros((len(captions), L), np.int32)
  eot = np.zeros((len(captions),), np.int32)
  for i, c in enumerate(captions):
    b = np.frombuffer(c.encode()[:L - 1], np.uint8).astype(np.int32) + 1
    tokens[i, :len(b)] = b
    tokens[i, len(b)] = 1000
    eot[i] = len(b)
  return {'tokens': tokens, 'eot': eot}


@pytest.fixture(scope='module')
def data_cfg(tmp_path_factory):
  c = base.get_base_config().data
  c.data_dir = str(tmp_path_factory.mktemp('data'))
  c.resolution, c.num_examples, c.batch_size = 32, N, 8
  pipeline.ensure_dataset(c)  # builds once for the module
  return c


def _cfg(data_cfg, **kw):
  c = data_cfg.copy_and_resolve_references()
  for k, v in kw.items():
    c[k] = v
  return c


def _ids(batch):
  """Identity of every example in a batch: a hash of its stored image."""
  return [hashlib.sha1(im.tobytes()).hexdigest() for im in batch['image']]


def _make(c, **kw):
  kw.setdefault('process_index', 0)
  kw.setdefault('process_count', 1)
  return pipeline.make_dataset(c, tokenize=tokenize, seed=kw.pop('seed', 0), **kw)


def test_batch_layout(data_cfg):
  b = next(_make(data_cfg))
  assert b['image'].shape == (8, 32, 32, 3) and b['image'].dtype == np.uint8
  assert b['tokens'].shape == (8, L) and b['tokens'].dtype == np.int32
  assert b['eot'].shape == (8,) and b['eot'].dtype == np.int32
  assert b['caption'].shape == (8,) and b['caption'].dtype.kind == 'U'
  for k in cs.LABEL_KEYS:
    assert b[k].shape == (8,) and b[k].dtype == np.int32
  for i, caption in enumerate(b['caption']):
    np.testing.assert_array_equal(b['tokens'][i], tokenize([str(caption)])['tokens'][0])
    assert cs.parse_caption(str(caption))['shape'] == b['shape'][i]
  assert 'tensorflow' not in sys.modules  # building and reading never need TF


def test_epoch_is_a_shuffled_permutation_reshuffled_next_epoch(data_cfg):
  it = _make(data_cfg, num_epochs=2)
  batches = list(it)
  assert len(batches) == 2 * N // 8
  e1 = sum((_ids(b) for b in batches[:N // 8]), [])
  e2 = sum((_ids(b) for b in batches[N // 8:]), [])
  assert len(set(e1)) == N and set(e1) == set(e2) and e1 != e2
  stored = sum((_ids(b) for b in _make(data_cfg, num_epochs=1, shuffle=False)), [])
  assert stored != e1 and sorted(stored) == sorted(e1)
  assert sum((_ids(b) for b in _make(data_cfg, num_epochs=1, seed=1)), []) != e1


def test_state_after_k_batches_restores_exactly(data_cfg):
  c = _cfg(data_cfg, caption_dropout=0.3, random_flip=True)
  it = _make(c)
  for _ in range(5):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(30)]  # crosses the epoch boundary (25 batches)
  fresh = _make(c)
  fresh.set_state(state)
  for want, got in zip(expected, (next(fresh) for _ in range(30))):
    assert want.keys() == got.keys()
    for k in want:
      np.testing.assert_array_equal(want[k], got[k])


def test_state_restores_through_orbax_checkpoint(data_cfg, tmp_path):
  it = _make(data_cfg)
  for _ in range(3):
    next(it)
  with ocp.CheckpointManager(tmp_path / 'ckpt') as mngr:
    mngr.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
    expected = [next(it) for _ in range(3)]
    fresh = _make(data_cfg)
    mngr.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
  for want in expected:
    np.testing.assert_array_equal(want['image'], next(fresh)['image'])


def test_state_restores_with_worker_processes(data_cfg):
  # One worker: the multiprocess path at half the start-up cost of two.
  c = _cfg(data_cfg, num_workers=1, caption_dropout=0.5)
  it = _make(c)
  try:
    first = [next(it) for _ in range(3)]
    state = it.get_state()
    expected = [next(it) for _ in range(4)]
  finally:
    it.close()
  # Workers do not change the data: the same stream as in-process reading.
  serial = _make(_cfg(data_cfg, caption_dropout=0.5))
  for want in first + expected:
    got = next(serial)
    np.testing.assert_array_equal(want['image'], got['image'])
    np.testing.assert_array_equal(want['caption'], got['caption'])
  fresh = _make(c)
  try:
    fresh.set_state(state)
    for want in expected:
      got = next(fresh)
      for k in want:
        np.testing.assert_array_equal(want[k], got[k])
  finally:
    fresh.close()


def test_two_processes_get_disjoint_shards_covering_the_epoch(data_cfg):
  c = _cfg(data_cfg, batch_size=4)  # 2 rows per process
  per_process = []
  for p in range(2):
    batches = list(_make(c, process_index=p, process_count=2, num_epochs=1))
    assert all(b['image'].shape[0] == 2 for b in batches)
    per_process.append(sum((_ids(b) for b in batches), []))
  a, b = per_process
  assert len(a) == len(b) == N // 2            # same number of steps everywhere
  assert len(set(a)) == len(a) and not set(a) & set(b)
  everything = sum((_ids(x) for x in _make(c, num_epochs=1, shuffle=False)), [])
  assert set(a) | set(b) == set(everything) and len(everything) == N


def test_uneven_global_batch_is_a_config_error(data_cfg):
  with pytest.raises(ConfigError, match=r'config\.data\.batch_size'):
    _make(_cfg(data_cfg, batch_size=9), process_index=0, process_count=2)


def test_data_in_object_storage_is_refused_with_the_copy_to_make(data_cfg):
  """README: the data is read from each host's disk; a gs:// data_dir is named, with
  the copy that fixes it, before anything is opened."""
  with pytest.raises(ConfigError, match=r"config\.data\.data_dir: 'gs://b/data' is in object "
                     r'storage.*gcloud storage cp -r gs://b/data'):
    pipeline.ensure_dataset(_cfg(data_cfg, data_dir='gs://b/data'))


def test_caption_dropout_is_seeded_and_keeps_labels(data_cfg):
  c = _cfg(data_cfg, caption_dropout=0.5)
  def dropped(seed):
    bs = list(_make(c, num_epochs=1, seed=seed))
    return np.concatenate([b['caption'] == '' for b in bs]), bs
  d0, bs = dropped(0)
  assert np.array_equal(d0, dropped(0)[0])
  assert not np.array_equal(d0, dropped(1)[0])
  assert 0.35 < d0.mean() < 0.65
  b = bs[0]
  empty = b['caption'] == ''
  assert np.all(b['tokens'][empty, 0] == 1000)  # the tokenizer saw ''
  assert np.all(b['count'] >= 1)                # labels survive the dropout
  assert not np.any(_make(_cfg(data_cfg), num_epochs=1).__next__()['caption'] == '')


def test_caption_swap_takes_captions_of_the_same_batch(data_cfg):
  plain = list(_make(data_cfg, num_epochs=1))
  swapped = list(_make(_cfg(data_cfg, caption_swap=0.5), num_epochs=1))
  moved = []
  for bp, bs in zip(plain, swapped):
    np.testing.assert_array_equal(bp['image'], bs['image'])  # pixels and labels stay
    np.testing.assert_array_equal(bp['count'], bs['count'])
    assert set(bs['caption']) <= set(bp['caption'])           # captions come from the batch
    moved.append(bp['caption'] != bs['caption'])
    np.testing.assert_array_equal(bs['tokens'], tokenize(list(bs['caption']))['tokens'])
  moved = np.concatenate(moved)
  assert 0.3 < moved.mean() < 0.6   # 0.5, less the draws of an equal caption
  again = np.concatenate([b['caption'] for b in _make(_cfg(data_cfg, caption_swap=0.5),
                                                      num_epochs=1)])
  np.testing.assert_array_equal(again, np.concatenate([b['caption'] for b in swapped]))


def test_random_flip_mirrors_pixels_and_words(data_cfg):
  plain = list(_make(data_cfg, num_epochs=1))
  flipped = list(_make(_cfg(data_cfg, random_flip=True), num_epochs=1))
  n_flipped = 0
  for bp, bf in zip(plain, flipped):
    for i in range(len(bp['image'])):
      if np.array_equal(bp['image'][i], bf['image'][i]):
        continue
      np.testing.assert_array_equal(bp['image'][i][:, ::-1], bf['image'][i])
      n_flipped += 1
      # Captions and labels still describe the mirrored picture.
      parsed = cs.parse_caption(str(bf['caption'][i]))
      assert parsed['position'] in (-1, int(bf['position'][i]))
      if bp['position'][i] >= 0:
        row, col = divmod(int(bp['position'][i]), 3)
        assert bf['position'][i] == row * 3 + 2 - col
  assert 60 < n_flipped < 140


def test_sr_pairs(data_cfg):
  d = degrade.degradation_config()
  d.hr_size, d.scale = 32, 4
  b = next(_make(_cfg(data_cfg, batch_size=4), degradation=d))
  assert b['image'].shape == (4, 32, 32, 3) and b['lr'].shape == (4, 8, 8, 3)
  assert b['lr'].dtype == np.uint8


def test_default_sharding_uses_jax_process(data_cfg):
  assert pipeline.shard_bounds(10, pipeline.grain.sharding.ShardOptions(1, 3)) == (3, 6)
  # No process_index/count: ShardByJaxProcess (one process here) reads everything.
  default = pipeline.make_dataset(data_cfg, tokenize=tokenize, seed=0, num_epochs=1)
  assert sum(len(b['image']) for b in default) == N


def test_eval_split(data_cfg):
  batches = list(pipeline.make_dataset(_cfg(data_cfg, batch_size=4), tokenize=tokenize, seed=0,
                                       split='test', shuffle=False, num_epochs=1))
  assert len(batches) == 5  # 20 test examples, drop remainder


class LabelledToy(pipeline.tfds.core.GeneratorBasedBuilder):
  """A stand-in for a TFDS catalog dataset: variable-size images, ClassLabel, no caption."""
  VERSION = pipeline.tfds.core.Version('1.0.0')

  def _info(self):
    tfds = pipeline.tfds
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'picture': tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8,
                                        encoding=tfds.features.Encoding.BYTES),
        'label': tfds.features.ClassLabel(names=['tabby_cat', 'corgi']),
        'file_name': tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    for i in range(12):
      h, w = 40 + 4 * i, 70 - 2 * i
      yield i, {'picture': np.full((h, w, 3), i, np.uint8), 'label': i % 2, 'file_name': f'{i}'}


def test_prepared_tfds_dataset_with_class_label_captions(tmp_path):
  b = LabelledToy(data_dir=str(tmp_path), file_format='array_record')
  b.download_and_prepare()
  c = base.get_base_config().data
  c.builder, c.data_dir, c.resolution, c.batch_size = 'labelled_toy', str(tmp_path), 32, 4
  c.image_key, c.caption_key, c.caption_template = 'picture', 'label', 'a photo of a {}'
  batches = list(_make(c, num_epochs=1, shuffle=False))
  assert len(batches) == 3
  for batch in batches:
    assert batch['image'].shape == (4, 32, 32, 3)
    for img, cap in zip(batch['image'], batch['caption']):
      # Constant images survive the crop/resize; the class name becomes the caption.
      assert cap == ('a photo of a tabby cat' if img[0, 0, 0] % 2 == 0 else 'a photo of a corgi')
  # The version directory works as a builder name too.
  c.builder = b.data_dir
  assert sum(len(x['image']) for x in _make(c, num_epochs=1)) == 12
  # Variable-size images below the resolution are upscaled (not an error).
  c.resolution = 64
  assert next(_make(c))['image'].shape == (4, 64, 64, 3)
  c.builder, c.resolution, c.caption_key = 'labelled_toy', 32, 'caption'
  with pytest.raises(ConfigError, match=r"config\.data\.caption_key='caption'.*label"):
    _make(c)


def test_word_dropout_keeps_words_in_order_and_leaves_the_rest_of_the_stream(data_cfg):
  """Each caption becomes an ordered subset of its words; images and labels are those
  of the run without it (its draws come last), and it is seeded."""
  plain = list(_make(_cfg(data_cfg, random_flip=True), num_epochs=1))
  cut = list(_make(_cfg(data_cfg, random_flip=True, word_dropout=0.3), num_epochs=1))
  kept, total = 0, 0
  for bp, bc in zip(plain, cut):
    np.testing.assert_array_equal(bp['image'], bc['image'])
    np.testing.assert_array_equal(bp['position'], bc['position'])
    for full, sub in zip(bp['caption'], bc['caption']):
      words, rest = str(full).split(), iter(str(full).split())
      assert all(w in rest for w in str(sub).split())  # a subsequence of the words
      kept, total = kept + len(str(sub).split()), total + len(words)
    np.testing.assert_array_equal(bc['tokens'], tokenize(list(bc['caption']))['tokens'])
  assert 0.6 < kept / total < 0.8   # 0.7 of the words stay
  again = np.concatenate([b['caption'] for b in _make(
      _cfg(data_cfg, random_flip=True, word_dropout=0.3), num_epochs=1)])
  np.testing.assert_array_equal(again, np.concatenate([b['caption'] for b in cut]))
  with pytest.raises(ConfigError, match=r'config\.data\.word_dropout'):
    _make(_cfg(data_cfg, word_dropout=1.0))


def test_hard_negatives_are_tokenized_counterfactuals_of_the_final_caption(data_cfg):
  """data.hard_negatives adds each caption's counterfactual (after flips and word
  dropout), tokenized; the rest of the batch is that of the run without it."""
  plain = list(_make(_cfg(data_cfg, random_flip=True, word_dropout=0.2), num_epochs=1))
  hard = list(_make(_cfg(data_cfg, random_flip=True, word_dropout=0.2, hard_negatives=True),
                    num_epochs=1))
  differ = 0
  for bp, bh in zip(plain, hard):
    for k in bp:
      np.testing.assert_array_equal(bp[k], bh[k])
    for caption, negative in zip(bh['caption'], bh['negative_caption']):
      before, after = cs.parse_caption(caption), cs.parse_caption(negative)
      differ += sum(before[k] != after[k] for k in before) == 1
    t = tokenize(list(bh['negative_caption']))
    np.testing.assert_array_equal(bh['negative_tokens'], t['tokens'])
    np.testing.assert_array_equal(bh['negative_eot'], t['eot'])
  total = sum(len(b['caption']) for b in hard)
  assert differ >= 0.9 * total  # all but captions that word dropout left without attributes


def test_random_rot90_turns_each_image_by_a_seeded_quarter_turn(data_cfg):
  """With random_rot90 each image is the run-without's image turned by k * 90
  degrees, every k turns up, and the same seed turns the same images."""
  plain = np.concatenate([b['image'] for b in _make(_cfg(data_cfg), num_epochs=1)])
  turned = np.concatenate([b['image'] for b in _make(_cfg(data_cfg, random_rot90=True),
                                                     num_epochs=1)])
  ks = []
  for p, t in zip(plain, turned):
    matches = [k for k in range(4) if np.array_equal(np.rot90(p, k), t)]
    assert matches, 'not a rotation of the unrotated image'
    ks.append(matches[0])
  assert set(ks) == {0, 1, 2, 3}
  again = np.concatenate([b['image'] for b in _make(_cfg(data_cfg, random_rot90=True),
                                                    num_epochs=1)])
  np.testing.assert_array_equal(again, turned)
