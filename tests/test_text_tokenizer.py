"""Caption tokenizers: byte round trip, end-token placement, truncation, and
CLIP / MiniLM ids equal to the Hugging Face reference tokenizers."""
import collections
import json
import os

import ml_collections
import numpy as np
import pytest
import transformers

from gigagan_jax.text import tokenizer as tk

CAPTIONS = [
    'A red circle on a BLUE background.',
    "the dog's ball isn't here, it'll be 2 doors down",
    '  lots   of\twhitespace\nand newlines  ',
    'café crème — naïve façade 😀 日本',
    '',
    'a b c d e f g h i j k l m n o p q r s t u v w x y z a b c d e f g h i j k l m n o p',
]


def _text_cfg(**kw):
  c = ml_collections.ConfigDict(dict(tokenizer='byte', vocab_path='', merges_path='', max_len=16,
                                     backbone='none', backbone_path='', backbone_layer=-2))
  c.update(kw)
  return c


# ---------------------------------------------------------------- byte


def test_byte_round_trip_and_layout():
  tok = tk.make_tokenizer(_text_cfg(max_len=64))
  out = tok(CAPTIONS[:5])
  assert out['tokens'].dtype == np.int32 and out['tokens'].shape == (5, 64)
  assert out['eot'].dtype == np.int32
  for caption, row, eot in zip(CAPTIONS, out['tokens'], out['eot']):
    assert tok.decode(row) == caption.lower()
    assert row[0] == tok.START and row[eot] == tok.END
    assert eot == len(caption.lower().encode('utf-8')) + 1
    assert (row[eot + 1:] == tok.PAD).all()
    assert (row[1:eot] >= 3).all()  # no special id inside the text
  assert tok.vocab_size == 259 and out['tokens'].max() < tok.vocab_size


def test_byte_truncation_keeps_end_token():
  tok = tk.make_tokenizer(_text_cfg(max_len=8))
  out = tok(['abcdefghijklmnop', 'ab'])
  np.testing.assert_array_equal(out['eot'], [7, 3])
  assert out['tokens'][0, 7] == tok.END
  assert tok.decode(out['tokens'][0]) == 'abcdef'


def test_byte_too_short_max_len_is_an_error():
  with pytest.raises(ValueError, match='max_len'):
    tk.make_tokenizer(_text_cfg(max_len=1))


def test_token_mask():
  m = tk.token_mask(np.array([0, 2, 4]), 5)
  np.testing.assert_array_equal(m, [[1, 0, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])


# ---------------------------------------------------------------- clip


def _byte_alphabet():
  """GPT-2/CLIP byte -> printable unicode map (byte order)."""
  keep = list(range(ord('!'), ord('~') + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
  chars, extra = {}, 0
  for b in range(256):
    if b in keep:
      chars[b] = chr(b)
    else:
      chars[b] = chr(256 + extra)
      extra += 1
  return [chars[b] for b in range(256)]


def _write_tiny_clip_vocab(directory, corpus, num_merges=80):
  """A CLIP-layout vocab.json/merges.txt: bytes, bytes+'</w>', learned merges, specials."""
  alphabet = _byte_alphabet()
  vocab = alphabet + [c + '</w>' for c in alphabet]
  words = collections.Counter(w for line in corpus for w in line.lower().split())
  splits = {w: list(w[:-1]) + [w[-1] + '</w>'] for w in words}
  merges = []
  for _ in range(num_merges):
    pairs = collections.Counter()
    for w, n in words.items():
      for a, b in zip(splits[w], splits[w][1:]):
        pairs[a, b] += n
    if not pairs:
      break
    (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
    merges.append((a, b))
    vocab.append(a + b)
    for w, s in splits.items():
      i, out = 0, []
      while i < len(s):
        if i + 1 < len(s) and (s[i], s[i + 1]) == (a, b):
          out.append(a + b)
          i += 2
        else:
          out.append(s[i])
          i += 1
      splits[w] = out
  vocab += ['<|startoftext|>', '<|endoftext|>']
  with open(os.path.join(directory, 'vocab.json'), 'w') as f:
    json.dump({t: i for i, t in enumerate(vocab)}, f)
  with open(os.path.join(directory, 'merges.txt'), 'w') as f:
    f.write('#version: 0.2\n' + ''.join(f'{a} {b}\n' for a, b in merges))
  return len(vocab)


@pytest.fixture(scope='module')
def clip_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp('clip_vocab')
  corpus = ['a red circle on a blue background', 'the green square is to the left of the circle',
            'a photo of a dog', "the dog's ball", 'two triangles and three circles'] * 3
  _write_tiny_clip_vocab(str(d), corpus)
  return str(d)


def test_clip_ids_match_transformers(clip_dir):
  ref = transformers.CLIPTokenizer.from_pretrained(clip_dir)
  max_len = 24
  ours = tk.make_tokenizer(_text_cfg(tokenizer='clip', backbone_path=clip_dir, max_len=max_len))
  out = ours(CAPTIONS)
  merged_some = False
  for caption, row, eot in zip(CAPTIONS, out['tokens'], out['eot']):
    want = ref(caption, truncation=True, max_length=max_len)['input_ids']
    assert row[:eot + 1].tolist() == want, caption
    assert (row[eot + 1:] == ref.pad_token_id).all()
    merged_some |= any(i >= 512 for i in want[1:-1])  # ids past the 512 byte tokens are merges
  assert merged_some, 'the tiny vocab should exercise BPE merges'
  assert ours.vocab_size == len(ref)


def test_clip_truncation_keeps_end_token(clip_dir):
  ours = tk.make_tokenizer(_text_cfg(tokenizer='clip', max_len=6,
                                     vocab_path=os.path.join(clip_dir, 'vocab.json'),
                                     merges_path=os.path.join(clip_dir, 'merges.txt')))
  out = ours(['one two three four five six seven eight', 'a'])
  end = json.load(open(os.path.join(clip_dir, 'vocab.json')))['<|endoftext|>']
  np.testing.assert_array_equal(out['eot'], [5, 2])
  assert out['tokens'][0, 5] == end and out['tokens'][1, 2] == end


def test_clip_missing_files_name_the_field(tmp_path):
  with pytest.raises(FileNotFoundError, match='vocab_path'):
    tk.make_tokenizer(_text_cfg(tokenizer='clip', backbone_path=str(tmp_path)))
  with pytest.raises(ValueError, match='vocab_path'):
    tk.make_tokenizer(_text_cfg(tokenizer='clip'))


# ---------------------------------------------------------------- minilm


def test_minilm_ids_match_transformers():
  from gigagan_jax.text import minilm
  model_dir = minilm.find_minilm_dir()  # requirements-weights.txt
  ref = transformers.AutoTokenizer.from_pretrained(model_dir)
  ours = tk.make_tokenizer(_text_cfg(tokenizer='minilm', max_len=12))
  out = ours(CAPTIONS)
  want = ref(CAPTIONS, padding='max_length', truncation=True, max_length=12)
  np.testing.assert_array_equal(out['tokens'], want['input_ids'])
  np.testing.assert_array_equal(out['eot'], np.sum(want['attention_mask'], axis=1) - 1)
  assert (out['tokens'][np.arange(len(CAPTIONS)), out['eot']] == ref.sep_token_id).all()
  assert out['eot'][-1] == 11  # the long caption is cut and still ends in [SEP]
  assert ours.vocab_size == 30522
