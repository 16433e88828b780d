"""Caption tokenizers: captions -> fixed-length int32 token arrays for the data pipeline.

Every tokenizer returns `{'tokens': int32 [B, L], 'eot': int32 [B]}` with
L = `config.text.max_len`. A row is `start, text..., end, pad...`; `eot` is the
index of the end token (CLIP's <|endoftext|>, BERT's [SEP]). Truncation drops
text, never the start/end tokens, so `eot <= L - 1` always holds and the
features at `eot` always summarise the (possibly cut) caption.

Kinds (`config.text.tokenizer`):
  'byte'   dependency-free: UTF-8 bytes of the lower-cased caption.
  'clip'   CLIP byte-level BPE from vocab.json + merges.txt (`tokenizers` library).
  'minilm' the WordPiece tokenizer.json shipped with the MiniLM weights.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np


def token_mask(eot, max_len: int):
  """Positions up to and including the end token: bool [B, max_len].

  Works on numpy and jax arrays alike (`eot` int [B]).
  """
  positions = np.arange(max_len)
  return positions[None, :] <= eot[:, None]


class ByteTokenizer:
  """UTF-8 bytes of the lower-cased caption; ids 0..2 are pad/start/end.

  No vocabulary file, so the tiny configs and tests run anywhere.
  """
  PAD, START, END = 0, 1, 2
  _OFFSET = 3  # byte b -> id b + 3

  def __init__(self, max_len: int):
    if max_len < 2:
      raise ValueError(f'config.text.max_len must be >= 2 (start + end token), got {max_len}')
    self.max_len = max_len
    self.vocab_size = 256 + self._OFFSET

  def encode(self, caption: str) -> list[int]:
    """Ids of one caption with start/end tokens, truncated to max_len, unpadded."""
    body = caption.lower().encode('utf-8')[:self.max_len - 2]
    return [self.START] + [b + self._OFFSET for b in body] + [self.END]

  def decode(self, ids) -> str:
    """Inverse of `encode` for the bytes between start and end (invalid UTF-8 replaced)."""
    out = bytearray()
    for i in np.asarray(ids).tolist():
      if i == self.END:
        break
      if i >= self._OFFSET:
        out.append(i - self._OFFSET)
    return out.decode('utf-8', errors='replace')

  def __call__(self, captions: Sequence[str]) -> dict[str, np.ndarray]:
    return _pack([self.encode(c) for c in captions], self.max_len, self.PAD)


def _pack(rows: list[list[int]], max_len: int, pad_id: int) -> dict[str, np.ndarray]:
  tokens = np.full((len(rows), max_len), pad_id, np.int32)
  eot = np.zeros((len(rows),), np.int32)
  for i, row in enumerate(rows):
    tokens[i, :len(row)] = row
    eot[i] = len(row) - 1
  return {'tokens': tokens, 'eot': eot}


class HFTokenizer:
  """Wraps a `tokenizers.Tokenizer` whose post-processor adds start/end tokens.

  Truncation and padding are set here to `max_len`; `tokenizers` reserves room
  for the special tokens when truncating, which keeps the end token.
  """

  def __init__(self, tokenizer, max_len: int, pad_id: int, pad_token: str):
    if max_len < 2:
      raise ValueError(f'config.text.max_len must be >= 2 (start + end token), got {max_len}')
    tokenizer.enable_truncation(max_length=max_len)
    tokenizer.enable_padding(length=max_len, pad_id=pad_id, pad_token=pad_token)
    self._tok = tokenizer
    self.max_len = max_len
    self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

  def __call__(self, captions: Sequence[str]) -> dict[str, np.ndarray]:
    encodings = self._tok.encode_batch(list(captions))
    tokens = np.asarray([e.ids for e in encodings], np.int32).reshape(len(encodings), self.max_len)
    valid = np.asarray([e.attention_mask for e in encodings], np.int32).reshape(tokens.shape)
    return {'tokens': tokens, 'eot': valid.sum(axis=1).astype(np.int32) - 1}

  def decode(self, ids) -> str:
    return self._tok.decode(np.asarray(ids).tolist(), skip_special_tokens=True)


# CLIP's pre-tokenisation: special tokens, English contractions, runs of
# letters, single digits, runs of other non-space symbols.
_CLIP_SPLIT = (r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|"""
               r"""[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""")
CLIP_START, CLIP_END = '<|startoftext|>', '<|endoftext|>'


def clip_files(text_cfg) -> tuple[str, str]:
  """(vocab.json, merges.txt) from text.vocab_path/merges_path or text.backbone_path."""
  vocab, merges = text_cfg.get('vocab_path', ''), text_cfg.get('merges_path', '')
  if not (vocab and merges):
    root = text_cfg.get('backbone_path', '')
    if not root:
      raise ValueError('config.text.vocab_path/merges_path: tokenizer=clip needs CLIP vocab.json '
                       'and merges.txt, or a config.text.backbone_path directory holding them')
    vocab = vocab or os.path.join(root, 'vocab.json')
    merges = merges or os.path.join(root, 'merges.txt')
  for field, path in (('vocab_path', vocab), ('merges_path', merges)):
    if not os.path.isfile(path):
      raise FileNotFoundError(f'config.text.{field}: CLIP tokenizer file not found: {path}')
  return vocab, merges


def build_clip_tokenizer(vocab_path: str, merges_path: str):
  """A `tokenizers.Tokenizer` reproducing CLIP's BPE (lower-cased, </w> word ends)."""
  from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
  from tokenizers.models import BPE

  model = BPE.from_file(vocab_path, merges_path, unk_token=CLIP_END,
                        continuing_subword_prefix='', end_of_word_suffix='</w>', fuse_unk=False)
  tok = Tokenizer(model)
  # CLIP collapses whitespace and lower-cases before splitting.
  tok.normalizer = normalizers.Sequence([
      normalizers.NFC(), normalizers.Replace(Regex(r'\s+'), ' '), normalizers.Lowercase()])
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior='removed', invert=True),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  start_id, end_id = tok.token_to_id(CLIP_START), tok.token_to_id(CLIP_END)
  if start_id is None or end_id is None:
    raise ValueError(f'{vocab_path}: CLIP vocab lacks {CLIP_START} / {CLIP_END}')
  tok.post_processor = processors.TemplateProcessing(
      single=f'{CLIP_START} $A {CLIP_END}',
      special_tokens=[(CLIP_START, start_id), (CLIP_END, end_id)])
  return tok


def minilm_tokenizer_file(text_cfg) -> str:
  root = text_cfg.get('backbone_path', '') if text_cfg.get('backbone', '') == 'minilm' else ''
  if not root:
    from gigagan_jax.text.minilm import find_minilm_dir
    root = find_minilm_dir()
  path = os.path.join(root, 'tokenizer.json')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'config.text.tokenizer=minilm: no tokenizer.json in {root}')
  return path


def make_tokenizer(text_cfg):
  """Tokenizer named by `text_cfg.tokenizer` with length `text_cfg.max_len`.

  Returns an object with `.vocab_size`, `.max_len` and
  `__call__(captions) -> {'tokens': int32 [B, L], 'eot': int32 [B]}`.
  """
  kind, max_len = text_cfg.tokenizer, int(text_cfg.max_len)
  if kind == 'byte':
    return ByteTokenizer(max_len)
  if kind == 'clip':
    tok = build_clip_tokenizer(*clip_files(text_cfg))
    # Pad with <|endoftext|> as Hugging Face does; the causal CLIP tower never
    # lets padding reach positions <= eot, so the pad id does not matter there.
    return HFTokenizer(tok, max_len, tok.token_to_id(CLIP_END), CLIP_END)
  if kind == 'minilm':
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(minilm_tokenizer_file(text_cfg))
    pad_id = tok.token_to_id('[PAD]')
    return HFTokenizer(tok, max_len, 0 if pad_id is None else pad_id, '[PAD]')
  raise ValueError(f"config.text.tokenizer must be 'byte', 'clip' or 'minilm', got {kind!r}")
