"""CLIP contrastive loss on G (paper Eq. 9) through the frozen CLIP towers.

For a batch of captions c_1..c_B and images G(c_b):

  L_CLIP = mean_b [ -log( exp(s(b, b) / tau) / sum_n exp(s(b, n) / tau) ) ],
  s(b, n) = cos( E_img(G(c_b)), E_txt(c_n) )

image -> text only (the paper scores each generated image against all the
batch's captions, not each caption against all images); the cross-entropy
itself is `losses.contrastive_loss`. tau: the paper writes none; CLIP
was trained with cosine x exp(logit_scale), and OpenAI's checkpoints end at
logit_scale = ln 100 (the clamp), so tau = 0.01 scores the images exactly
as CLIP ranks them (config loss.clip_temperature). With tau = 1 the logits
would span only [-1, 1] and the loss would hardly move from log B.

The CLIP parameters are frozen: they enter through `jax.lax.stop_gradient`,
so a gradient taken w.r.t. anything that contains them is zero there; the
gradient w.r.t. the images (hence G) flows through both the preprocessing
(`clip_preprocess.clip_pixels`) and the image tower.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gigagan_jax import losses
from gigagan_jax.frozen.clip_model import CLIP, CLIPWeights
from gigagan_jax.frozen.clip_preprocess import clip_pixels

DEFAULT_TEMPERATURE = 0.01  # 1 / OpenAI CLIP's final exp(logit_scale)


def clip_embeddings(clip: CLIPWeights, images, tokens, eot, *, dtype: Any = jnp.float32):
  """Projected CLIP embeddings of generated images and their captions.

  Args:
    clip: frozen CLIP weights (both towers; `frozen.clip_model.load_clip`).
    images: float [B, H, W, 3] in [-1, 1] (G's output, any square size).
    tokens: int32 [B, L] CLIP BPE ids (L <= the text tower's 77), eot: int32 [B]
      the position of each caption's end-of-text token.
    dtype: the towers' compute dtype (bfloat16 on accelerators halves the cost).
  Returns:
    (image_embeds float32 [B, P], text_embeds float32 [B, P]), unnormalised,
    P = clip.cfg.projection_dim; no gradient reaches `clip.params`.
  """
  params = jax.lax.stop_gradient(clip.params)
  cfg = clip.cfg
  module = CLIP(cfg, dtype)
  pixels = clip_pixels(images, cfg.vision.image_size, cfg.image_mean, cfg.image_std)
  img = module.apply({'params': params}, pixels.astype(dtype), method=CLIP.encode_pixels)
  txt = module.apply({'params': params}, tokens, eot, method=CLIP.encode_text)
  return img.astype(jnp.float32), txt.astype(jnp.float32)


def clip_loss(clip: CLIPWeights, images, tokens, eot, *,
              temperature: float = DEFAULT_TEMPERATURE, dtype: Any = jnp.float32):
  """Paper Eq. 9 for G: float32 [] (see the module doc; arguments as `clip_embeddings`).

  Needs B >= 2: with one caption there is no negative and the loss is 0
  (`frozen.validate.validate_frozen` refuses data.batch_size = 1). Identical
  captions (equal tokens) are not negatives of each other.
  """
  img, txt = clip_embeddings(clip, images, tokens, eot, dtype=dtype)
  return losses.contrastive_loss(img, txt, temperature, tokens=tokens)
