"""Frozen text-backbone features, computed once per distinct caption.

The backbone never trains, so a caption's features are the same at every
step. Data with a finite set of captions (captioned_shapes: 2,598 distinct in
4,096 examples) brings each of them back every epoch, and the per-step
backbone is waste: about 0.5 GFLOP per caption for MiniLM, a fifth of
t2i_tiny's R1-free step. With `config.text.feature_cache` the training loop
looks the batch's captions up here and feeds the features to the step as
`batch['features']`; the step then runs no backbone. Open-vocabulary data
(COCO, LAION) rarely repeats a caption: leave the cache off there, and the
step computes features as before. It is off by default; t2i_tiny turns it
on, and the training loop fits the sentence whitening through it
(whitening.fit_captions), which leaves the captions of all its 4,096
training examples cached before the first step.

Each caption is computed on its own (a `lax.map` over rows, one program for
one row), so its features are bitwise the same whichever batch first brings
it and whatever else is in that batch: a resumed run, whose cache starts
empty, feeds the step the same numbers as the run it continues.
"""
from __future__ import annotations

import jax
import numpy as np


class FeatureCache:
  """tokens int32 [b, L], eot int32 [b] -> float32 [b, L, D] features, memoised per caption.

  Misses are computed in blocks of `block` rows on the default device (a
  fixed shape, so one compilation); a short block is padded with copies of
  its last row. Host memory: L * D * 4 bytes per distinct caption (36 KiB for
  MiniLM at L=24: 91 MiB for captioned_shapes' 2,598 training captions, more
  with the mirrored 'left'/'right' ones of random flips).
  """

  def __init__(self, backbone, block: int = 16):
    self.block = block
    params = jax.device_put(backbone.params)

    def one(row):  # a single caption: [L], [] -> [L, D]
      tokens, eot = row
      return backbone.apply(params, tokens[None], eot[None])[0]

    self._features = jax.jit(lambda tokens, eot: jax.lax.map(one, (tokens, eot)))
    self._table: dict[bytes, np.ndarray] = {}
    self.hits = self.misses = 0

  def __len__(self) -> int:
    return len(self._table)

  @staticmethod
  def _key(tokens: np.ndarray, eot: np.ndarray) -> bytes:
    return tokens.tobytes() + eot.tobytes()

  def __call__(self, tokens: np.ndarray, eot: np.ndarray) -> np.ndarray:
    tokens = np.asarray(tokens, np.int32)
    eot = np.asarray(eot, np.int32)
    keys = [self._key(t, e) for t, e in zip(tokens, eot)]
    new = {}  # key -> row index, first occurrence, in batch order
    for i, k in enumerate(keys):
      if k not in self._table and k not in new:
        new[k] = i
    self.misses += len(new)
    self.hits += len(keys) - len(new)
    rows = np.fromiter(new.values(), np.int64, len(new))
    for start in range(0, len(rows), self.block):
      part = rows[start:start + self.block]
      padded = np.concatenate([part, np.repeat(part[-1:], self.block - len(part))])
      out = np.asarray(self._features(tokens[padded], eot[padded]))
      for j, i in enumerate(part):
        self._table[keys[i]] = out[j].copy()  # not a view that keeps the block
    return np.stack([self._table[k] for k in keys])
