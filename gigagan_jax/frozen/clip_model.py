"""CLIP image and text towers in Flax, with a converter from Hugging Face `CLIPModel`.

Used for the CLIP score (OpenAI CLIP ViT-B/32 in the GigaGAN protocol), the
CLIP contrastive loss (clip_loss.py) and the vision-aided D (vision_aided.py;
it taps the image tower's hidden states, `CLIPVisionTransformer(taps=...)`). The
text tower is the project's `gigagan_jax.text.clip.CLIPTextTransformer` (the
same one GigaGAN's frozen text backbone uses); this module adds the ViT image
tower and the image projection and wraps both in one pytree:

  clip = load_clip('/path/to/clip-vit-base-patch32')   # config.json + model.safetensors
  img = image_embeds(clip, images)                     # images float [B, H, W, 3] in [0, 1]
  txt = text_embeds(clip, tokens, eot)                 # CLIP BPE tokens int32 [B, L], eot [B]

Both return the *unnormalised* projected embeddings [B, projection_dim]
(Hugging Face `get_image_features` / `get_text_features`); the CLIP score
normalises them.

Image preprocessing follows CLIPImageProcessor on float inputs: bicubic
resize of the short side to `image_size` (antialiased when shrinking; close
to, not bit-identical with, PIL's bicubic), centre crop, then per-channel
mean/std normalisation (values from preprocessor_config.json when present,
else OpenAI's).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import linen as nn
from flax import struct

from gigagan_jax.text.clip import (CLIPTextConfig, CLIPTextTransformer, activation,
                                   convert_clip_text)

OPENAI_IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)

# Hugging Face's CLIPTextConfig / CLIPVisionConfig defaults: older config.json
# files only list the fields that differ from these.
_HF_TEXT_DEFAULTS = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048,
                         num_hidden_layers=12, num_attention_heads=8,
                         max_position_embeddings=77, hidden_act='quick_gelu', layer_norm_eps=1e-5)


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
  """ViT hyper-parameters; defaults are Hugging Face's (ViT-B/32)."""
  hidden_size: int = 768
  intermediate_size: int = 3072
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  num_channels: int = 3
  image_size: int = 224
  patch_size: int = 32
  hidden_act: str = 'quick_gelu'
  layer_norm_eps: float = 1e-5

  @classmethod
  def from_hf(cls, cfg: dict) -> 'CLIPVisionConfig':
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: cfg[k] for k in names if k in cfg})


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
  """Both towers, the shared embedding size and the image normalisation."""
  vision: CLIPVisionConfig
  text: CLIPTextConfig  # with projection_dim set: the text tower owns text_projection
  projection_dim: int
  image_mean: tuple = OPENAI_IMAGE_MEAN
  image_std: tuple = OPENAI_IMAGE_STD
  name: str = ''  # where the weights came from, for reports


def vit_b32_config() -> CLIPConfig:
  """OpenAI CLIP ViT-B/32's sizes (openai/clip-vit-base-patch32): the CLIP of the
  CLIP score, the vision-aided D (paper Table A2) and our CLIP loss. For sizing
  without weights (memory planning)."""
  return CLIPConfig(vision=CLIPVisionConfig(),
                    text=CLIPTextConfig.from_hf(_HF_TEXT_DEFAULTS, projection_dim=512),
                    projection_dim=512, name='ViT-B/32 (shapes only)')


class VisionLayer(nn.Module):
  """Pre-LN transformer block with bidirectional attention. [B, L, D] -> [B, L, D]."""
  cfg: CLIPVisionConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    d, h = cfg.hidden_size, cfg.num_attention_heads
    ln = lambda name: nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=self.dtype, name=name)
    y = ln('layer_norm1')(x)
    qkv = [nn.DenseGeneral((h, d // h), dtype=self.dtype, name=n)(y)  # [B, L, H, Dh]
           for n in ('q_proj', 'k_proj', 'v_proj')]
    y = jax.nn.dot_product_attention(*qkv)  # 1/sqrt(Dh) scaling, as CLIP
    x = x + nn.DenseGeneral(d, axis=(-2, -1), dtype=self.dtype, name='out_proj')(y)
    y = nn.Dense(cfg.intermediate_size, dtype=self.dtype, name='fc1')(ln('layer_norm2')(x))
    return x + nn.Dense(d, dtype=self.dtype, name='fc2')(activation(cfg.hidden_act)(y))


class CLIPVisionTransformer(nn.Module):
  """ViT image tower: normalised pixels [B, S, S, C] (S = image_size) -> pooled [B, D].

  Pooled = post_layernorm of the class token after the last layer.

  With `taps` (static tuple of ints, Hugging Face `hidden_states` numbering:
  0 = the embeddings after pre_layrnorm, i = the output of layer i, no final
  LayerNorm) it returns those hidden states instead, a tuple of [B, 1 + N, D]
  (class token first, then N = (S / patch)^2 patches row-major). Only layers
  up to max(taps) run, so a tower initialised that way has no parameters for
  the layers above (nor post_layernorm): the vision-aided D keeps that subset.
  """
  cfg: CLIPVisionConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pixels, taps: tuple[int, ...] | None = None):
    cfg = self.cfg
    p, d = cfg.patch_size, cfg.hidden_size
    if pixels.shape[1:] != (cfg.image_size, cfg.image_size, cfg.num_channels):
      raise ValueError(f'CLIP vision tower takes [B, {cfg.image_size}, {cfg.image_size}, '
                       f'{cfg.num_channels}] pixels, got {pixels.shape}')
    x = nn.Conv(d, (p, p), strides=(p, p), padding='VALID', use_bias=False, dtype=self.dtype,
                name='patch_embedding')(pixels.astype(self.dtype))
    x = x.reshape(x.shape[0], -1, d)  # row-major patches, as torch's flatten(2)
    cls = self.param('class_embedding', nn.initializers.normal(d ** -0.5), (d,))
    pos = self.param('position_embedding', nn.initializers.normal(0.02),
                     ((cfg.image_size // p) ** 2 + 1, d))
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (x.shape[0], 1, d)), x], axis=1)
    x = x + pos[None].astype(self.dtype)
    ln = lambda name: nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=self.dtype, name=name)
    x = ln('pre_layrnorm')(x)  # (sic: the Hugging Face name)
    if taps is not None:
      if not taps or min(taps) < 0 or max(taps) > cfg.num_hidden_layers:
        raise ValueError(f'CLIP vision taps must be in 0..{cfg.num_hidden_layers}, got {taps}')
      hidden = [x]
      for i in range(max(taps)):
        hidden.append(VisionLayer(cfg, self.dtype, name=f'layers_{i}')(hidden[-1]))
      return tuple(hidden[t] for t in taps)
    for i in range(cfg.num_hidden_layers):
      x = VisionLayer(cfg, self.dtype, name=f'layers_{i}')(x)
    return ln('post_layernorm')(x[:, 0])


def resize_for_clip(images, size: int):
  """Short side to `size` (bicubic, antialiased), then centre crop.

  [B, H, W, C] -> [B, size, size, C].
  """
  h, w = images.shape[1:3]
  if (h, w) == (size, size):
    return images
  scale = size / min(h, w)
  nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
  images = jax.image.resize(images, (images.shape[0], nh, nw, images.shape[-1]), 'bicubic',
                            antialias=True)
  top, left = (nh - size) // 2, (nw - size) // 2
  return images[:, top:top + size, left:left + size]


class CLIP(nn.Module):
  """Both CLIP towers and their projections into the shared embedding space."""
  cfg: CLIPConfig
  dtype: Any = jnp.float32

  def setup(self):
    self.vision_model = CLIPVisionTransformer(self.cfg.vision, self.dtype)
    self.visual_projection = nn.Dense(self.cfg.projection_dim, use_bias=False, dtype=self.dtype)
    self.text_model = CLIPTextTransformer(self.cfg.text, self.dtype)

  def encode_image(self, images):
    """images float [B, H, W, 3] in [0, 1] -> [B, projection_dim]."""
    cfg = self.cfg
    x = resize_for_clip(images.astype(jnp.float32), cfg.vision.image_size)
    x = (x - jnp.asarray(cfg.image_mean, jnp.float32)) / jnp.asarray(cfg.image_std, jnp.float32)
    return self.encode_pixels(x)

  def encode_pixels(self, pixels):
    """Already preprocessed pixels [B, S, S, 3] (S = image_size) -> [B, projection_dim]."""
    return self.visual_projection(self.vision_model(pixels))

  def encode_text(self, tokens, eot):
    """tokens int32 [B, L] (CLIP BPE), eot int32 [B] (index of <|endoftext|>).

    Returns [B, projection_dim].
    """
    return self.text_model(tokens, eot)['text_embeds']

  def __call__(self, images, tokens, eot):  # used by init: touches every parameter
    return self.encode_image(images), self.encode_text(tokens, eot)


@struct.dataclass
class CLIPWeights:
  """CLIP parameters plus their (static) config: pass it straight into jitted code."""
  params: Any
  cfg: CLIPConfig = struct.field(pytree_node=False)

  @property
  def module(self) -> CLIP:
    return CLIP(self.cfg)


@jax.jit
def image_embeds(clip: CLIPWeights, images):
  """images float [B, H, W, 3] in [0, 1] -> float32 [B, D] (unnormalised, projected)."""
  # f32 matmuls at full precision: TPU/GPU defaults would round to bf16/TF32.
  with jax.default_matmul_precision('highest'):
    return clip.module.apply({'params': clip.params}, images, method=CLIP.encode_image)


@jax.jit
def text_embeds(clip: CLIPWeights, tokens, eot):
  """tokens int32 [B, L], eot int32 [B] -> float32 [B, D], pooled at eot then projected."""
  with jax.default_matmul_precision('highest'):
    return clip.module.apply({'params': clip.params}, tokens, eot, method=CLIP.encode_text)


# ------------------------------------------------------------------ converter


def _dense(state, prefix, heads=None, out_heads=None):
  """torch Linear [out, in] -> Flax kernel [in, out].

  q/k/v kernels are split to [D, H, Dh], out_proj to [H, Dh, D].
  """
  kernel, bias = state[prefix + '.weight'].T, state[prefix + '.bias']
  if heads is not None:
    kernel, bias = kernel.reshape(kernel.shape[0], heads, -1), bias.reshape(heads, -1)
  if out_heads is not None:
    kernel = kernel.reshape(out_heads, -1, kernel.shape[-1])
  return {'kernel': kernel, 'bias': bias}


def _layer_norm(state, prefix):
  return {'scale': state[prefix + '.weight'], 'bias': state[prefix + '.bias']}


def convert_clip_vision(state: dict[str, np.ndarray], cfg: CLIPVisionConfig) -> dict:
  """HF CLIPModel state dict -> Flax params of CLIPVisionTransformer (float32 numpy)."""
  p, h = 'vision_model.', cfg.num_attention_heads
  patch = state[p + 'embeddings.patch_embedding.weight']  # [D, C, p, p]
  params = {
      'patch_embedding': {'kernel': patch.transpose(2, 3, 1, 0)},
      'class_embedding': state[p + 'embeddings.class_embedding'],
      'position_embedding': state[p + 'embeddings.position_embedding.weight'],
      'pre_layrnorm': _layer_norm(state, p + 'pre_layrnorm'),
      'post_layernorm': _layer_norm(state, p + 'post_layernorm'),
  }
  for i in range(cfg.num_hidden_layers):
    q = f'{p}encoder.layers.{i}.'
    params[f'layers_{i}'] = {
        'layer_norm1': _layer_norm(state, q + 'layer_norm1'),
        'layer_norm2': _layer_norm(state, q + 'layer_norm2'),
        'q_proj': _dense(state, q + 'self_attn.q_proj', heads=h),
        'k_proj': _dense(state, q + 'self_attn.k_proj', heads=h),
        'v_proj': _dense(state, q + 'self_attn.v_proj', heads=h),
        'out_proj': _dense(state, q + 'self_attn.out_proj', out_heads=h),
        'fc1': _dense(state, q + 'mlp.fc1'),
        'fc2': _dense(state, q + 'mlp.fc2'),
    }
  return params


def convert_clip(state: dict[str, np.ndarray], cfg: CLIPConfig) -> dict:
  """HF `CLIPModel` state dict (numpy) -> Flax params of `CLIP` (float32 numpy).

  Raises KeyError naming the first missing tensor and ValueError when a
  tensor's shape disagrees with the config.
  """
  try:
    params = {
        'vision_model': convert_clip_vision(state, cfg.vision),
        'visual_projection': {'kernel': state['visual_projection.weight'].T},
        'text_model': convert_clip_text(state, cfg.text),
    }
  except KeyError as e:
    raise KeyError(f'not a Hugging Face CLIPModel state dict: missing tensor {e}') from None
  params = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
  expected = jax.eval_shape(
      CLIP(cfg).init, jax.random.key(0),
      jax.ShapeDtypeStruct((1, cfg.vision.image_size, cfg.vision.image_size, 3), jnp.float32),
      jax.ShapeDtypeStruct((1, 2), jnp.int32), jax.ShapeDtypeStruct((1,), jnp.int32))['params']
  bad = []
  def check(path, want, got):
    if tuple(want.shape) != tuple(got.shape):
      bad.append(f'{jax.tree_util.keystr(path)}: {got.shape} != {want.shape}')
  try:
    jax.tree_util.tree_map_with_path(check, expected, params)
  except ValueError as e:  # tree structures differ: extra/missing layers
    raise ValueError(f'CLIP weights do not fit config.json: {e}') from None
  if bad:
    raise ValueError('CLIP weights do not fit config.json: ' + '; '.join(bad[:8]))
  return params


def read_config(directory: str) -> CLIPConfig:
  """CLIPConfig from a HF `CLIPModel` directory's config.json (+ preprocessor_config.json).

  `directory` may be an object-store URL (gs://...): read through etils.epath.
  """
  root = epath.Path(directory)
  path = root / 'config.json'
  if not path.is_file():
    raise FileNotFoundError(f'{directory}: no config.json (expected a Hugging Face CLIPModel '
                            'directory: config.json + model.safetensors)')
  raw = json.loads(path.read_text())
  for field in ('text_config', 'vision_config'):
    if field not in raw:
      raise KeyError(f'{path}: no {field!r}; CLIP score needs a full CLIPModel checkpoint '
                     '(both towers), not a single tower')
  projection_dim = raw.get('projection_dim', 512)
  text = CLIPTextConfig.from_hf({**_HF_TEXT_DEFAULTS, **raw['text_config']}, projection_dim)
  mean, std = OPENAI_IMAGE_MEAN, OPENAI_IMAGE_STD
  pre_path = root / 'preprocessor_config.json'
  if pre_path.is_file():
    pre = json.loads(pre_path.read_text())
    mean, std = tuple(pre.get('image_mean', mean)), tuple(pre.get('image_std', std))
  return CLIPConfig(vision=CLIPVisionConfig.from_hf(raw['vision_config']), text=text,
                    projection_dim=projection_dim, image_mean=mean, image_std=std,
                    name=os.path.basename(os.path.normpath(directory)))


def load_clip(directory: str) -> CLIPWeights:
  """CLIPWeights from a HF `CLIPModel` directory (config.json + model.safetensors).

  `directory` may be an object-store URL (gs://...).
  """
  if not epath.Path(directory).is_dir():
    raise FileNotFoundError(f'CLIP checkpoint directory not found: {directory!r}')
  cfg = read_config(directory)
  path = epath.Path(directory) / 'model.safetensors'
  if not path.is_file():
    raise FileNotFoundError(
        f'{directory}: no model.safetensors. Re-save the checkpoint once with '
        '`CLIPModel.from_pretrained(d).save_pretrained(d, safe_serialization=True)`')
  from safetensors.numpy import load as load_safetensors
  return CLIPWeights(params=convert_clip(load_safetensors(path.read_bytes()), cfg), cfg=cfg)
