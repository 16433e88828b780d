"""Flax CLIP text tower and a converter from Hugging Face checkpoints.

The tower is the frozen text backbone of GigaGAN (paper: CLIP ViT-L/14, whose
penultimate-layer token features feed the learned encoder T) and the text side
of the CLIP score. Weights come from a Hugging Face `CLIPTextModel`,
`CLIPTextModelWithProjection` or `CLIPModel` directory (config.json plus
model.safetensors, or pytorch_model.bin when torch is installed).

Hidden-state numbering follows Hugging Face: `hidden_states[0]` is the
embedding output, `hidden_states[i]` the output of layer i (no final LayerNorm);
`last_hidden_state` is the last layer *after* the final LayerNorm.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
  vocab_size: int = 49408
  hidden_size: int = 768
  intermediate_size: int = 3072
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  max_position_embeddings: int = 77
  hidden_act: str = 'quick_gelu'
  layer_norm_eps: float = 1e-5
  projection_dim: int = 0  # 0: no text_projection in the checkpoint

  @classmethod
  def from_hf(cls, cfg: dict, projection_dim: int = 0) -> 'CLIPTextConfig':
    names = {f.name for f in dataclasses.fields(cls)} - {'projection_dim'}
    return cls(**{k: cfg[k] for k in names if k in cfg}, projection_dim=projection_dim)


def activation(name: str):
  """A Hugging Face CLIP `hidden_act` name (text or vision config) as a function."""
  if name == 'quick_gelu':  # OpenAI CLIP's sigmoid approximation of GELU
    return lambda x: x * jax.nn.sigmoid(1.702 * x)
  if name == 'gelu':
    return lambda x: jax.nn.gelu(x, approximate=False)
  if name in ('gelu_new', 'gelu_pytorch_tanh'):
    return lambda x: jax.nn.gelu(x, approximate=True)
  raise ValueError(f'CLIP hidden_act {name!r} is not supported')


class CLIPAttention(nn.Module):
  """Causal multi-head self-attention; q/k/v/out are biased dense layers."""
  cfg: CLIPTextConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    """x: [B, L, D] -> [B, L, D]."""
    d, h = self.cfg.hidden_size, self.cfg.num_attention_heads
    proj = lambda name: nn.DenseGeneral((h, d // h), dtype=self.dtype, name=name)(x)
    q, k, v = proj('q_proj'), proj('k_proj'), proj('v_proj')  # [B, L, H, Dh]
    length = x.shape[1]
    causal = jnp.tril(jnp.ones((length, length), bool))
    out = jax.nn.dot_product_attention(q, k, v, mask=causal[None, None])
    return nn.DenseGeneral(d, axis=(-2, -1), dtype=self.dtype, name='out_proj')(out)


class CLIPLayer(nn.Module):
  """Pre-LN transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""
  cfg: CLIPTextConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    ln = lambda name: nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=self.dtype, name=name)
    x = x + CLIPAttention(cfg, self.dtype, name='self_attn')(ln('layer_norm1')(x))
    y = nn.Dense(cfg.intermediate_size, dtype=self.dtype, name='fc1')(ln('layer_norm2')(x))
    y = nn.Dense(cfg.hidden_size, dtype=self.dtype, name='fc2')(activation(cfg.hidden_act)(y))
    return x + y


class CLIPTextTransformer(nn.Module):
  """CLIP text tower.

  __call__(tokens int32 [B, L], eot int32 [B] | None) returns a dict:
    'hidden_states': tuple of num_hidden_layers + 1 arrays [B, L, D];
    'last_hidden_state': [B, L, D] (final LayerNorm applied);
    'pooled': [B, D], last_hidden_state at `eot` (only if eot is given);
    'text_embeds': [B, projection_dim] (only with eot and a projection).
  """
  cfg: CLIPTextConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens, eot=None):
    cfg = self.cfg
    length = tokens.shape[1]
    if length > cfg.max_position_embeddings:
      raise ValueError(f'CLIP takes at most {cfg.max_position_embeddings} tokens, got {length} '
                       '(config.text.max_len)')
    token_emb = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=self.dtype, name='token_embedding')
    pos_emb = self.param('position_embedding', nn.initializers.normal(0.01),
                         (cfg.max_position_embeddings, cfg.hidden_size))
    x = token_emb(tokens) + pos_emb[None, :length].astype(self.dtype)
    hidden = [x]
    for i in range(cfg.num_hidden_layers):
      x = CLIPLayer(cfg, self.dtype, name=f'layers_{i}')(x)
      hidden.append(x)
    last = nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=self.dtype, name='final_layer_norm')(x)
    out = {'hidden_states': tuple(hidden), 'last_hidden_state': last}
    if eot is not None:
      pooled = jnp.take_along_axis(last, eot[:, None, None].astype(jnp.int32), axis=1)[:, 0]
      out['pooled'] = pooled
      if cfg.projection_dim:
        out['text_embeds'] = nn.Dense(cfg.projection_dim, use_bias=False, dtype=self.dtype,
                                      name='text_projection')(pooled)
    return out


# ------------------------------------------------------------------ converter


def _read_state_dict(directory: str) -> dict[str, np.ndarray]:
  """Tensors of a HF checkpoint directory as numpy arrays (safetensors preferred)."""
  single = os.path.join(directory, 'model.safetensors')
  index = os.path.join(directory, 'model.safetensors.index.json')
  binary = os.path.join(directory, 'pytorch_model.bin')
  if os.path.isfile(single) or os.path.isfile(index):
    from safetensors.numpy import load_file
    if os.path.isfile(single):
      return load_file(single)
    with open(index) as f:
      shards = sorted(set(json.load(f)['weight_map'].values()))
    state = {}
    for shard in shards:
      state.update(load_file(os.path.join(directory, shard)))
    return state
  if os.path.isfile(binary):
    try:
      import torch  # only to unpickle; the model itself never needs torch
    except ImportError as e:
      raise ImportError(
          f'{binary} is a PyTorch pickle and torch is not installed. Convert it once to '
          'safetensors (model.safetensors) on a machine with torch, e.g. '
          '`CLIPTextModel.from_pretrained(d).save_pretrained(d, safe_serialization=True)`, '
          'or install torch') from e
    state = torch.load(binary, map_location='cpu', weights_only=True)
    return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}
  raise FileNotFoundError(f'{directory}: no model.safetensors, model.safetensors.index.json or '
                          'pytorch_model.bin (expected a Hugging Face CLIP checkpoint directory)')


def read_clip_config(directory: str) -> CLIPTextConfig:
  path = os.path.join(directory, 'config.json')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{directory}: no config.json '
                            '(expected a Hugging Face CLIP checkpoint directory)')
  with open(path) as f:
    cfg = json.load(f)
  if 'text_config' in cfg:  # a full CLIPModel: the text tower and its projection
    return CLIPTextConfig.from_hf(cfg['text_config'], cfg.get('projection_dim', 512))
  has_projection = 'CLIPTextModelWithProjection' in cfg.get('architectures', [])
  return CLIPTextConfig.from_hf(cfg, cfg.get('projection_dim', 512) if has_projection else 0)


def _dense(state, prefix, heads=None, out_heads=None):
  """torch Linear [out, in] -> Flax kernel [in, out] (optionally split into heads)."""
  w, b = state[prefix + '.weight'], state[prefix + '.bias']
  kernel = w.T
  if heads is not None:  # q/k/v: [D, H, Dh]
    kernel = kernel.reshape(kernel.shape[0], heads, -1)
    b = b.reshape(heads, -1)
  if out_heads is not None:  # out_proj: [H, Dh, D]
    kernel = kernel.reshape(out_heads, -1, kernel.shape[-1])
  return {'kernel': kernel, 'bias': b}


def _layer_norm(state, prefix):
  return {'scale': state[prefix + '.weight'], 'bias': state[prefix + '.bias']}


def convert_clip_text(state: dict[str, np.ndarray], cfg: CLIPTextConfig) -> dict:
  """HF state dict (CLIPTextModel / CLIPModel keys) -> Flax params of CLIPTextTransformer."""
  # CLIPModel and older CLIPTextModel files prefix the tower with 'text_model.';
  # transformers 5 saves CLIPTextModel without it.
  for p in ('text_model.', ''):
    if p + 'embeddings.token_embedding.weight' in state:
      break
  else:
    raise KeyError('not a CLIP text checkpoint: no [text_model.]embeddings.token_embedding.weight')
  h = cfg.num_attention_heads
  params = {
      'token_embedding': {'embedding': state[p + 'embeddings.token_embedding.weight']},
      'position_embedding': state[p + 'embeddings.position_embedding.weight'],
      'final_layer_norm': _layer_norm(state, p + 'final_layer_norm'),
  }
  for i in range(cfg.num_hidden_layers):
    q = f'{p}encoder.layers.{i}.'
    params[f'layers_{i}'] = {
        'layer_norm1': _layer_norm(state, q + 'layer_norm1'),
        'layer_norm2': _layer_norm(state, q + 'layer_norm2'),
        'self_attn': {
            'q_proj': _dense(state, q + 'self_attn.q_proj', heads=h),
            'k_proj': _dense(state, q + 'self_attn.k_proj', heads=h),
            'v_proj': _dense(state, q + 'self_attn.v_proj', heads=h),
            'out_proj': _dense(state, q + 'self_attn.out_proj', out_heads=h),
        },
        'fc1': _dense(state, q + 'mlp.fc1'),
        'fc2': _dense(state, q + 'mlp.fc2'),
    }
  if cfg.projection_dim:
    if 'text_projection.weight' not in state:
      raise KeyError('config names a text projection but text_projection.weight is missing')
    params['text_projection'] = {'kernel': state['text_projection.weight'].T}
  return jax.tree.map(lambda x: np.asarray(x, np.float32), params)


def load_clip_text(directory: str, dtype=jnp.float32) -> tuple[CLIPTextTransformer, dict]:
  """(module, params) of the CLIP text tower stored in a HF checkpoint directory.

  `params` is a plain float32 numpy pytree (`module.apply({'params': params}, tokens)`).
  """
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'CLIP checkpoint directory not found: {directory!r}')
  cfg = read_clip_config(directory)
  params = convert_clip_text(_read_state_dict(directory), cfg)
  return CLIPTextTransformer(cfg, dtype=dtype), params
