"""Vision-aided discriminator on frozen CLIP ViT features (GigaGAN's L_Vision).

After Kumari et al. 2022 ("Ensembling off-the-shelf models for GAN
training"), CLIP setting, with the two additions GigaGAN names (PAPER_NOTES
sections 3, 9.1-9.3): a fixed random projection (Projected GAN) and text
conditioning.

  images [-1, 1] -> CLIP preprocessing (clip_preprocess: area resize to 224,
  CLIP mean/std) -> frozen ViT, hidden states of the layers in
  loss.vision_aided_layers -> patch tokens as a [g, g] grid (class token
  dropped, as the official code does; g = 7 for ViT-B/32)
  -> FIXED random 1x1 projection D -> P per layer (drawn from a seed, never
  trained) -> trainable head per layer: 3x3 conv P -> C + leaky ReLU, then
  our D's prediction head (models.discriminator.PredictionHead: a
  text-modulated 1x1 conv, projection-style, plus an unconditional 1x1 skip)
  -> one logit map [B, g, g, 1] per layer.

The output is a dict {logit_name(layer): [B, g, g, 1]} like the MS-I/O D's,
so `losses.discriminator_loss` / `generator_loss` apply unchanged (a sum
over maps of the mean over positions: the official `multilevel` losses
also sum over levels).

Parameters come in two trees:
  frozen    {'clip_vision': the ViT's parameters up to the last tapped layer,
             'projection': {logit_name(l): {'kernel' [D, P], 'bias' [P]}}}
            -- passed like the other frozen params (replicated, no optimiser),
            and wrapped in stop_gradient inside;
  trainable the heads' parameters (D's optimiser).
The projection is part of `frozen` because it is fixed: it comes from
loss.vision_aided_seed, so a restarted run draws the same one.

Text conditioning takes any caption embedding t [B, Dt]: the CLIP text
embedding of the caption (`clip_loss.clip_embeddings`, frozen, already
computed for L_CLIP) or D's own t_D. The ModulatedConv of each head maps it
to its per-channel style.

What is not here: the official code's DiffAugment/ADA on the vision branch,
its one-sided label smoothing (real target 0.8) and its global level on the
pooled CLIP embedding; warm-up (lambda = 0 for the first 500 kimg) is a
schedule of loss.vision_aided_weight (losses.scheduled_weight).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from gigagan_jax import config_utils
from gigagan_jax.frozen.clip_model import CLIPConfig, CLIPVisionConfig, CLIPVisionTransformer, CLIPWeights
from gigagan_jax.frozen.clip_preprocess import clip_pixels
from gigagan_jax.models.discriminator import PredictionHead
from gigagan_jax.nn.equalized import EqualConv, lrelu

# Defaults of the config fields (loss.vision_aided_*, config_utils.FROZEN_LOSS_FIELDS).
DEFAULT_LAYERS = config_utils.VISION_AIDED_LAYERS
DEFAULT_PROJ_DIM = config_utils.VISION_AIDED_PROJ_DIM
DEFAULT_CHANNELS = config_utils.VISION_AIDED_CHANNELS
DEFAULT_HEAD_LAYERS = config_utils.VISION_AIDED_HEAD_LAYERS
DEFAULT_SEED = config_utils.VISION_AIDED_SEED


def logit_name(layer: int) -> str:
  """Key of the logit map of CLIP layer `layer` (distinct from the MS-I/O D's keys)."""
  return f'vision_l{layer}'


@dataclasses.dataclass(frozen=True)
class VisionAidedSpec:
  """Static description of the vision-aided D (hashable: a jit static argument).

  vision: the CLIP image tower's sizes; image_mean/std: its input normalisation;
  layers: tapped hidden states (1..num_hidden_layers, Hugging Face numbering);
  proj_dim P: width of the fixed projection; channels C: of the 3x3 head conv;
  head_layers: of the prediction head (1: projection-style, one modulated
  1x1 conv to the logit); dtype: compute dtype name.
  """
  vision: CLIPVisionConfig
  image_mean: tuple
  image_std: tuple
  layers: tuple
  proj_dim: int = DEFAULT_PROJ_DIM
  channels: int = DEFAULT_CHANNELS
  head_layers: int = DEFAULT_HEAD_LAYERS
  dtype: str = 'float32'

  @property
  def grid(self) -> int:
    """Side g of the patch grid, hence of every logit map."""
    return self.vision.image_size // self.vision.patch_size

  @property
  def names(self) -> tuple:
    return tuple(logit_name(l) for l in self.layers)


def make_spec(loss_cfg, clip_cfg: CLIPConfig, dtype: str = 'float32') -> VisionAidedSpec:
  """VisionAidedSpec from the config's `loss` block and the CLIP checkpoint's config.

  Raises ValueError naming config.loss.vision_aided_layers when a layer is
  outside the tower (1..num_hidden_layers) or the list is empty.
  """
  n = clip_cfg.vision.num_hidden_layers
  layers = tuple(int(l) for l in loss_cfg.get('vision_aided_layers', DEFAULT_LAYERS))
  if not layers or min(layers) < 1 or max(layers) > n or len(set(layers)) != len(layers):
    raise ValueError(f'config.loss.vision_aided_layers: distinct CLIP layers in 1..{n} '
                     f'(the checkpoint has {n}), got {layers}')
  return VisionAidedSpec(
      vision=clip_cfg.vision, image_mean=tuple(clip_cfg.image_mean),
      image_std=tuple(clip_cfg.image_std), layers=layers,
      proj_dim=int(loss_cfg.get('vision_aided_proj_dim', DEFAULT_PROJ_DIM)),
      channels=int(loss_cfg.get('vision_aided_channels', DEFAULT_CHANNELS)),
      head_layers=int(loss_cfg.get('vision_aided_head_layers', DEFAULT_HEAD_LAYERS)),
      dtype=dtype)


# ------------------------------------------------------------------ frozen part


def clip_patch_features(spec: VisionAidedSpec, vision_params, images) -> tuple:
  """Frozen CLIP patch features of the tapped layers.

  images: float [B, H, W, 3] in [-1, 1]. Returns one float [B, g, g, D] per
  spec.layers (hidden state of that layer, class token dropped, patches in
  row-major order as the ViT numbers them). Runs only up to max(layers).
  """
  dtype = jnp.dtype(spec.dtype)
  pixels = clip_pixels(images, spec.vision.image_size, spec.image_mean, spec.image_std)
  hidden = CLIPVisionTransformer(spec.vision, dtype).apply(
      {'params': vision_params}, pixels.astype(dtype), taps=spec.layers)
  b, g, d = images.shape[0], spec.grid, spec.vision.hidden_size
  return tuple(h[:, 1:].reshape(b, g, g, d) for h in hidden)


def trim_vision_params(vision_params: dict, spec: VisionAidedSpec) -> dict:
  """The subset of a full image tower's params that the tapped layers need.

  Drops layers_i for i >= max(layers) and post_layernorm (memory: layers 4, 8
  of 12 would keep two thirds; the default (4, 8, 12) keeps all but the LN).
  """
  top = max(spec.layers)
  keep = {'patch_embedding', 'class_embedding', 'position_embedding', 'pre_layrnorm'}
  keep |= {f'layers_{i}' for i in range(top)}
  missing = keep - set(vision_params)
  if missing:
    raise KeyError(f'CLIP vision params lack {sorted(missing)}')
  return {k: vision_params[k] for k in vision_params if k in keep}


def random_projection(seed: int, spec: VisionAidedSpec) -> dict:
  """The fixed random 1x1 projections, {logit_name(l): {'kernel' [D, P], 'bias' [P]}} float32.

  Drawn like PyTorch's default Conv2d init, which is what Projected GAN's
  never-trained projections are: kernel and bias uniform in +-1/sqrt(D). One
  key per layer (fold_in of the layer number), so adding a layer to the list
  does not redraw the others.
  """
  d, p = spec.vision.hidden_size, spec.proj_dim
  bound = 1.0 / np.sqrt(d)
  out = {}
  for layer in spec.layers:
    kk, kb = jax.random.split(jax.random.fold_in(jax.random.key(seed), layer))
    out[logit_name(layer)] = {
        'kernel': jax.random.uniform(kk, (d, p), jnp.float32, -bound, bound),
        'bias': jax.random.uniform(kb, (p,), jnp.float32, -bound, bound)}
  return out


def make_frozen(clip: CLIPWeights, spec: VisionAidedSpec, seed: int = DEFAULT_SEED) -> dict:
  """The frozen tree: {'clip_vision': trimmed ViT params, 'projection': random_projection}."""
  return {'clip_vision': trim_vision_params(clip.params['vision_model'], spec),
          'projection': random_projection(seed, spec)}


def projected_features(spec: VisionAidedSpec, frozen: dict, images) -> tuple:
  """images [B, H, W, 3] in [-1, 1] -> one [B, g, g, P] per tapped layer.

  No gradient reaches `frozen` (stop_gradient); the images' gradient flows.
  """
  frozen = jax.lax.stop_gradient(frozen)
  feats = clip_patch_features(spec, frozen['clip_vision'], images)
  dtype = jnp.dtype(spec.dtype)
  out = []
  for name, f in zip(spec.names, feats):
    proj = frozen['projection'][name]
    out.append(f.astype(dtype) @ proj['kernel'].astype(dtype) + proj['bias'].astype(dtype))
  return tuple(out)


# ------------------------------------------------------------------ trainable part


class VisionAidedHeads(nn.Module):
  """Per-layer heads: features [B, g, g, P] per layer, t [B, Dt] -> {name: [B, g, g, 1]} float32."""
  spec: VisionAidedSpec

  @nn.compact
  def __call__(self, features: Sequence[Any], t):
    spec, dtype = self.spec, jnp.dtype(self.spec.dtype)
    out = {}
    for layer, name, f in zip(spec.layers, spec.names, features):
      h = lrelu(EqualConv(spec.channels, 3, dtype=dtype, name=f'conv_l{layer}')(f))
      out[name] = PredictionHead(spec.head_layers, dtype, name=f'head_l{layer}')(h, t)
    return out


def init_heads(key, spec: VisionAidedSpec, text_dim: int) -> dict:
  """Trainable head params (plain arrays, logical-axis boxes removed) for text embeddings
  of width text_dim. `jax.eval_shape(VisionAidedHeads(spec).init, ...)` gives the
  boxed tree when partition specs are wanted."""
  g, p = spec.grid, spec.proj_dim
  feats = tuple(jnp.zeros((1, g, g, p), jnp.float32) for _ in spec.layers)
  variables = VisionAidedHeads(spec).init(key, feats, jnp.zeros((1, text_dim), jnp.float32))
  return nn.meta.unbox(variables['params'])


def vision_aided_logits(spec: VisionAidedSpec, frozen: dict, trainable: dict, images, text,
                        mismatched_text=None):
  """Scores images with the vision-aided D.

  Args:
    spec: static description (make_spec); frozen: make_frozen's tree;
    trainable: init_heads' tree; images: float [B, H, W, 3] in [-1, 1];
    text: caption embeddings [B, Dt]; mismatched_text: optional second
      embeddings [B, Dt] for the matching-aware term (CLIP runs once).
  Returns:
    {logit_name(l): float32 [B, g, g, 1]}, or a pair of such dicts with
    mismatched_text.
  """
  feats = projected_features(spec, frozen, images)
  heads = VisionAidedHeads(spec)
  logits = heads.apply({'params': trainable}, feats, text)
  if mismatched_text is None:
    return logits
  return logits, heads.apply({'params': trainable}, feats, mismatched_text)


def make_vision_aided(key, clip: CLIPWeights, loss_cfg, text_dim: int, dtype: str = 'float32'):
  """(spec, frozen, trainable) from loaded CLIP weights and the config's `loss` block."""
  spec = make_spec(loss_cfg, clip.cfg, dtype)
  frozen = make_frozen(clip, spec, int(loss_cfg.get('vision_aided_seed', DEFAULT_SEED)))
  return spec, frozen, init_heads(key, spec, text_dim)
