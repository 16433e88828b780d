"""CLIP score: how well images match their captions, by CLIP's own judgement.

The GigaGAN protocol (PAPER_NOTES.md §8): cosine similarity of OpenAI CLIP
ViT-B/32 image and text embeddings, with "A photo depicts " prefixed to each
caption, averaged over the evaluation set. Some papers scale it by 100 or
clip it at 0 (Hessel et al.'s CLIPScore uses 2.5 * max(cos, 0)); we report
the plain mean cosine and record the choices in the result.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import jax.numpy as jnp
import numpy as np

from gigagan_jax.frozen.clip_model import CLIPWeights, image_embeds, text_embeds

DEFAULT_PREFIX = 'A photo depicts '

# captions -> {'tokens': int32 [B, L], 'eot': int32 [B]}
Tokenizer = Callable[[Sequence[str]], dict]


def cosine_similarity(a, b):
  """Row-wise cosine of [B, D] and [B, D] -> [B] float32."""
  a = a / jnp.linalg.norm(a, axis=-1, keepdims=True)
  b = b / jnp.linalg.norm(b, axis=-1, keepdims=True)
  return jnp.sum(a * b, axis=-1)


def clip_similarities(clip: CLIPWeights, images, captions: Sequence[str], tokenize: Tokenizer,
                      prefix: str = DEFAULT_PREFIX) -> np.ndarray:
  """Per-pair cosine similarities of one batch: float64 [B].

  images: float [B, H, W, 3] in [0, 1] (preprocessed like the real images;
  CLIP does its own resize to its input size). captions: B strings, the
  prompt of each image; `prefix` is prepended before tokenizing with
  `tokenize` (a CLIP BPE tokenizer, e.g. gigagan_jax.text.make_tokenizer with
  `text.tokenizer='clip'` and max_len 77).
  """
  if len(captions) != len(images):
    raise ValueError(f'{len(images)} images but {len(captions)} captions')
  toks = tokenize([prefix + c for c in captions])
  img = image_embeds(clip, images)
  txt = text_embeds(clip, jnp.asarray(toks['tokens'], jnp.int32),
                    jnp.asarray(toks['eot'], jnp.int32))
  return np.asarray(cosine_similarity(img, txt), np.float64)


def clip_score(clip: CLIPWeights, batches: Iterable[tuple[np.ndarray, Sequence[str]]],
               tokenize: Tokenizer, prefix: str = DEFAULT_PREFIX) -> dict:
  """Mean CLIP score over (images, captions) batches, with what was used.

  Returns {'clip_score': mean cosine, 'clip_score_std': its spread,
  'num_images': N, 'prefix': prefix, 'model': checkpoint name,
  'image_size': CLIP input size, 'definition': ...}.
  """
  sims = [clip_similarities(clip, images, captions, tokenize, prefix)
          for images, captions in batches]
  if not sims:
    raise ValueError('clip_score: no images were given')
  sims = np.concatenate(sims)
  return {
      'clip_score': float(sims.mean()),
      'clip_score_std': float(sims.std()),
      'num_images': int(sims.size),
      'prefix': prefix,
      'model': clip.cfg.name,
      'image_size': clip.cfg.vision.image_size,
      'definition': ('mean cosine similarity of CLIP image and text embeddings '
                     '(not x100, not clipped)'),
  }
