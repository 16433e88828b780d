"""A whitened sentence embedding of the frozen backbone's features, for T's t_global.

config `text_encoder.sentence_whitening`: T adds a dense layer of

  white(c) = (s(c) - mean) @ matrix,   s(c) = mean-pooled, L2-normalised features  [B, D]

to its end-token output t_global. `mean` [D] and `matrix` [D, D] are PCA
whitening statistics of the training captions' s(c) (`fit`), fixed before the
first step (`set_stats`) and stored with the parameters, so a checkpoint
carries them to resume, evaluation and sampling.

Why (ABLATION.md, "A whitened sentence embedding"): captions that share most
of their words (captioned_shapes: "a small red circle in the top left on a
white background") have sentence embeddings close together, and the
directions that tell them apart carry little of their variance. A plain GAN
conditioned on the raw embedding did not learn position (accuracy 0.16); on
the whitened one it did (0.65). In the tiny GigaGAN, with
`generator.input_from_w`, it did too (0.72 after 50 minutes) but the mean
accuracy ended lower (0.669 against 0.742); with the projection D's
contrastive loss as well (t2i_tiny's settings), 0.800 with position at 0.89.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gigagan_jax.text.minilm import mean_pool_normalize
from gigagan_jax.text.tokenizer import token_mask

# Parameter names in T (text/encoder.py); `set_stats` finds them by name.
MEAN, MATRIX = 'sentence_mean', 'sentence_whitening'


def sentence_embedding(features, eot):
  """features float [B, L, D], eot int [B] -> float32 [B, D]: mean over the
  caption's tokens (start to end token), L2-normalised."""
  return mean_pool_normalize(features, token_mask(eot, features.shape[1]))


def whiten(embedding, mean, matrix):
  """[B, D] -> [B, D] with the fixed (`stop_gradient`) statistics of `fit`."""
  return (embedding - jax.lax.stop_gradient(mean)) @ jax.lax.stop_gradient(matrix)


def fit(embeddings: np.ndarray, rel_floor: float = 1e-4) -> dict:
  """PCA whitening of [N, D] embeddings -> {MEAN: [D], MATRIX: [D, D]} float32.

  The whitened embeddings have the identity as covariance over the principal
  directions whose variance is above `rel_floor` times the largest; the other
  directions (noise, or none at all when N <= D) map to zero. The matrix stays
  D x D whatever the kept count, so the parameter shapes do not depend on data.
  """
  x = np.asarray(embeddings, np.float64)
  if x.ndim != 2 or len(x) < 2:
    raise ValueError(f'whitening: need [N >= 2, D] sentence embeddings, got shape {x.shape}')
  mean = x.mean(0)
  variance, directions = np.linalg.eigh(np.cov(x - mean, rowvar=False))
  keep = variance > rel_floor * variance.max()
  scale = np.where(keep, 1.0 / np.sqrt(np.where(keep, variance, 1.0)), 0.0)
  return {MEAN: mean.astype(np.float32), MATRIX: (directions * scale).astype(np.float32)}


def fit_captions(backbone, tokenize, captions: Sequence[str], block: int = 256,
                 cache=None) -> dict:
  """`fit` on the sentence embeddings of `captions` under the frozen `backbone`.

  cache: a text.feature_cache.FeatureCache of this backbone, or None. With it
  the features come from the cache, and stay there: a run whose training
  captions are the fitted ones (t2i_tiny's 4,096) then finds every one of them
  cached from its first step, instead of computing each miss again.
  """
  if cache is None:
    # The weights are an argument, not constants folded into the compiled program.
    apply = jax.jit(lambda p, t, e: sentence_embedding(backbone.apply(p, t, e), e))
    params = jax.device_put(backbone.params)
    embed = lambda tokens, eot: apply(params, jnp.asarray(tokens), jnp.asarray(eot))
  else:
    embed = lambda tokens, eot: sentence_embedding(cache(tokens, eot), eot)
  parts = []
  for i in range(0, len(captions), block):
    text = tokenize(list(captions[i:i + block]))
    parts.append(np.asarray(embed(np.asarray(text['tokens']), np.asarray(text['eot']))))
  return fit(np.concatenate(parts))


def _leaf_name(path) -> str:
  """Name of a parameter from its tree path: '.../text_encoder/sentence_mean' -> 'sentence_mean'."""
  return str(getattr(path[-1], 'key', path[-1]))


def has_stats(params) -> bool:
  """Whether a parameter tree holds whitening statistics (a T with sentence_whitening)."""
  return any(_leaf_name(p) == MATRIX for p, _ in jax.tree_util.tree_flatten_with_path(params)[0])


def set_stats(params, stats: dict):
  """`params` with every T's whitening statistics replaced by `stats`; each new
  leaf keeps the sharding of the one it replaces."""
  def put(path, leaf):
    name = _leaf_name(path)
    if name not in stats:
      return leaf
    value = np.asarray(stats[name], np.float32)
    if value.shape != leaf.shape:
      raise ValueError(f'whitening: {jax.tree_util.keystr(path)} has shape {leaf.shape}, '
                       f'the statistics {value.shape} (another backbone?)')
    if not isinstance(leaf, jax.Array):
      return value
    # Each process supplies its own shards: valid on a multi-host mesh too.
    return jax.make_array_from_callback(value.shape, leaf.sharding, lambda i: value[i])
  return jax.tree_util.tree_map_with_path(put, params)
