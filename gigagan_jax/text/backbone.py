"""Frozen pretrained text backbone E_txt: tokens -> per-token features for T.

`make_backbone(config.text)` returns a `FrozenBackbone` (or None for
backbone='none'). Its `params` are passed to jitted steps as a separate
argument that no optimiser sees; `apply` stops gradients so the backbone stays
frozen even if a loss is differentiated through it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from gigagan_jax.text import clip, minilm
from gigagan_jax.text.tokenizer import token_mask


@dataclasses.dataclass(frozen=True)
class FrozenBackbone:
  """A pretrained text tower with fixed weights.

  Attributes:
    name: 'clip' or 'minilm'.
    module: the Flax module.
    params: float32 numpy pytree (host memory; place it on devices once, e.g.
      replicated, and pass it to jitted functions as its own argument).
    dim: feature width D of `apply`'s output.
    max_len: most tokens the tower takes (its position-embedding table).
  """
  name: str
  module: nn.Module
  params: Any
  dim: int
  max_len: int
  _features: Callable = dataclasses.field(repr=False)

  def apply(self, params, tokens, eot):
    """tokens int32 [B, L], eot int32 [B] -> float32 [B, L, dim] (no gradient)."""
    out = self._features(self.module, params, tokens, eot)
    return jax.lax.stop_gradient(out.astype(jnp.float32))


def clip_layer_features(module, params, tokens, eot, layer: int):
  """CLIP hidden state `layer` (HF numbering: 0 = embeddings, N or -1 = last).

  The last layer is returned after the final LayerNorm (HF `last_hidden_state`),
  every other layer raw, as Hugging Face's `hidden_states` gives them.
  """
  del eot  # causal attention: padding after the end token never reaches positions <= eot
  out = module.apply({'params': params}, tokens)
  n = len(out['hidden_states'])
  if layer % n == n - 1:
    return out['last_hidden_state']
  return out['hidden_states'][layer]


def minilm_features(module, params, tokens, eot):
  """Last hidden state of the BERT encoder with padding keys masked out."""
  return module.apply({'params': params}, tokens, token_mask(eot, tokens.shape[1]))


_TOKENIZER_FOR = {'clip': 'clip', 'minilm': 'minilm'}


def make_backbone(text_cfg, dtype=jnp.float32) -> FrozenBackbone | None:
  """The frozen backbone named by `text_cfg.backbone`, or None for 'none'.

  Args:
    text_cfg: config.text (backbone, backbone_path, backbone_layer, tokenizer, max_len).
    dtype: compute dtype of the tower (float32 keeps it bit-comparable to the reference).
  """
  kind = text_cfg.backbone
  if kind == 'none':
    return None
  if kind not in _TOKENIZER_FOR:
    raise ValueError(f"config.text.backbone must be 'none', 'clip' or 'minilm', got {kind!r}")
  if text_cfg.tokenizer != _TOKENIZER_FOR[kind]:
    raise ValueError(f'config.text.tokenizer={text_cfg.tokenizer!r} does not match '
                     f'config.text.backbone={kind!r}: the {kind} backbone only understands ids of '
                     f'the {_TOKENIZER_FOR[kind]!r} tokenizer (set '
                     f'--config.text.tokenizer={_TOKENIZER_FOR[kind]})')
  if kind == 'clip':
    if not text_cfg.backbone_path:
      raise ValueError('config.text.backbone_path: backbone=clip needs a Hugging Face CLIP '
                       'checkpoint directory')
    module, params = clip.load_clip_text(text_cfg.backbone_path, dtype=dtype)
    cfg = module.cfg
    layer = int(text_cfg.backbone_layer)
    n = cfg.num_hidden_layers + 1
    if not -n <= layer < n:
      raise ValueError(f'config.text.backbone_layer={layer} is outside the {n} hidden states '
                       f'of this CLIP (use -{n}..{n - 1}; -2 = penultimate layer)')
    features = lambda m, p, t, e: clip_layer_features(m, p, t, e, layer)
    dim, max_len = cfg.hidden_size, cfg.max_position_embeddings
  else:
    module, params = minilm.load_minilm(text_cfg.backbone_path or None, dtype=dtype)
    features = minilm_features
    dim, max_len = module.cfg.hidden_size, module.cfg.max_position_embeddings
  if text_cfg.max_len > max_len:
    raise ValueError(f'config.text.max_len={text_cfg.max_len} exceeds the {max_len} positions '
                     f'of the {kind} backbone')
  return FrozenBackbone(kind, module, params, dim, max_len, features)
