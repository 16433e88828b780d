"""Bytes of the frozen networks a config uses, from shapes only (for the memory planner).

Frozen params are replicated on every device (train.step.jit_train_step),
so the per-device bytes are the whole tree's bytes. Shapes come from
`jax.eval_shape` of the modules' init: no weights, no FLOPs, no memory.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gigagan_jax.frozen import clip_model, lpips, vision_aided


def tree_bytes(tree) -> int:
  """Sum of size x itemsize over the leaves of a tree of arrays / ShapeDtypeStructs."""
  return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def clip_param_shapes(cfg: clip_model.CLIPConfig):
  """ShapeDtypeStructs (float32) of both CLIP towers + projections, as load_clip builds them."""
  s = cfg.vision.image_size
  return jax.eval_shape(
      clip_model.CLIP(cfg).init, jax.random.key(0),
      jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32), jax.ShapeDtypeStruct((1, 2), jnp.int32),
      jax.ShapeDtypeStruct((1,), jnp.int32))['params']


def vision_aided_frozen_shapes(spec: vision_aided.VisionAidedSpec, seed: int = 0):
  """ShapeDtypeStructs of vision_aided.make_frozen's tree: the tower up to the last tap
  plus the fixed projections."""
  s = spec.vision.image_size
  tower = jax.eval_shape(
      lambda k, x: clip_model.CLIPVisionTransformer(spec.vision).init(k, x, taps=spec.layers),
      jax.random.key(0), jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32))['params']
  return {'clip_vision': tower,
          'projection': jax.eval_shape(lambda: vision_aided.random_projection(seed, spec))}


def clip_config(loss_cfg) -> clip_model.CLIPConfig:
  """The checkpoint's config when loss.clip_dir holds one, else ViT-B/32's sizes."""
  clip_dir = loss_cfg.get('clip_dir', '')
  if clip_dir:
    try:
      return clip_model.read_config(clip_dir)
    except (FileNotFoundError, KeyError, ValueError):
      pass  # sizing must work without weights; validate_frozen reports the directory
  return clip_model.vit_b32_config()


def frozen_param_bytes(config, clip_cfg: clip_model.CLIPConfig | None = None) -> dict[str, int]:
  """Per-device bytes (float32, replicated) of the frozen params the config's losses use.

  Returns {name: bytes} with an entry per network that is on:
    'clip'          both CLIP towers, for the CLIP loss (loss.clip_weight > 0);
    'vision_aided'  its frozen tree (tower up to the last tapped layer +
                    projections) when loss.vision_aided_weight > 0 -- a
                    separate copy, as make_frozen builds it;
    'lpips'         LPIPS-VGG when loss.lpips_weight > 0 (SR configs).
  clip_cfg: the CLIP sizes; default: loss.clip_dir's config.json if readable,
  else OpenAI ViT-B/32 (clip_model.vit_b32_config).
  """
  loss = config.get('loss', {})
  out = {}
  uses_clip = loss.get('clip_weight', 0.0) > 0 or loss.get('vision_aided_weight', 0.0) > 0
  cfg = clip_cfg or (clip_config(loss) if uses_clip else None)
  if loss.get('clip_weight', 0.0) > 0:
    out['clip'] = tree_bytes(clip_param_shapes(cfg))
  if loss.get('vision_aided_weight', 0.0) > 0:
    spec = vision_aided.make_spec(loss, cfg)
    out['vision_aided'] = tree_bytes(vision_aided_frozen_shapes(spec))
  if loss.get('lpips_weight', 0.0) > 0:
    shapes = jax.tree.leaves(lpips.param_shapes(), is_leaf=lambda x: isinstance(x, tuple))
    out['lpips'] = 4 * sum(math.prod(s) for s in shapes)  # float32
  return out
