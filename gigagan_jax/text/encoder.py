"""The learned text encoder T of GigaGAN (paper section 1.1 in PAPER_NOTES.md).

T turns frozen backbone features (or, without a backbone, its own trained
token embedding) into
  t_local  [B, L, dim]: per-token embeddings of every token except the end
           token and padding (keys/values of cross-attention), and
  t_global [B, dim]:    the embedding at the end-token position (feeds the
           mapping network).
Attention is bidirectional over the valid tokens (positions <= eot): the
backbone (CLIP) is causal, so T is what lets early tokens see the whole caption.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from gigagan_jax.parallel import shard_batch
from gigagan_jax.text import whitening
from gigagan_jax.text.tokenizer import token_mask

_part = nn.with_logical_partitioning


def _layer_norm(name: str, dtype, param_dtype):
  return nn.LayerNorm(epsilon=1e-5, dtype=dtype, param_dtype=param_dtype, name=name,
                      scale_init=_part(nn.initializers.ones, ('norm',)),
                      bias_init=_part(nn.initializers.zeros, ('norm',)))


def _dense(features, names, name, dtype, param_dtype, axis=-1, use_bias=True):
  """DenseGeneral whose kernel/bias carry logical axis names, output split over the batch.

  `names` names every kernel axis (input axes first); the bias takes the
  output axes' names.
  """
  n_out = 1 if isinstance(features, int) else len(features)
  dense = nn.DenseGeneral(
      features, axis=axis, dtype=dtype, param_dtype=param_dtype, name=name, use_bias=use_bias,
      kernel_init=_part(nn.initializers.lecun_normal(), names),
      bias_init=_part(nn.initializers.zeros, names[-n_out:]))
  return lambda x: shard_batch(dense(x))


class SelfAttention(nn.Module):
  """Multi-head attention over the valid tokens; logits and softmax in float32."""
  num_heads: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, key_mask):
    """x: [B, L, D]; key_mask: bool [B, L] (True = may be attended to) -> [B, L, D]."""
    d = x.shape[-1]
    h = self.num_heads
    head_dim = d // h
    qkv = lambda name, bias=True: _dense((h, head_dim), ('embed', 'heads', 'kv'), name,
                                         self.dtype, self.param_dtype, use_bias=bias)(x)
    # No key bias: it adds the same q.b to every logit of a query, which the
    # softmax cancels, so it would be a parameter without gradient.
    q, k, v = qkv('query'), qkv('key', bias=False), qkv('value')  # [B, L, H, Dh]
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k, preferred_element_type=jnp.float32)
    logits = logits / jnp.sqrt(jnp.float32(head_dim))
    # Every row has at least one valid key (the start token), so a large
    # negative fill never yields an all-masked softmax.
    logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    out = jnp.einsum('bhqk,bkhd->bqhd', weights, v)
    return _dense(d, ('heads', 'kv', 'embed'), 'out', self.dtype, self.param_dtype,
                  axis=(-2, -1))(out)


class Block(nn.Module):
  """Pre-LN transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""
  num_heads: int
  mlp_ratio: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, key_mask):
    d = x.shape[-1]
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = x + SelfAttention(self.num_heads, name='attn', **kw)(
        _layer_norm('ln_attn', **kw)(x), key_mask)
    y = _dense(d * self.mlp_ratio, ('embed', 'mlp'), 'mlp_in', **kw)(_layer_norm('ln_mlp', **kw)(x))
    y = _dense(d, ('mlp', 'embed'), 'mlp_out', **kw)(nn.gelu(y))
    return x + y


class TextEncoder(nn.Module):
  """Learned text encoder T.

  Attributes:
    dim: output width.
    num_layers, num_heads, mlp_ratio: transformer size.
    vocab_size: size of T's own token embedding, used only when `features` is
      None (no frozen backbone).
    max_len: tokens per caption L (size of the position embedding).
    sentence_whitening: given `features`, add a dense layer of their whitened
      sentence embedding to t_global (text/whitening.py; its statistics are
      parameters that never train, set by `whitening.set_stats`).
    dtype: compute dtype (e.g. bfloat16); param_dtype: parameter dtype.
  """
  dim: int
  num_layers: int
  num_heads: int
  mlp_ratio: int = 4
  vocab_size: int = 0
  max_len: int = 77
  sentence_whitening: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens, eot, features=None):
    """Encodes captions.

    Args:
      tokens: int32 [B, L] token ids.
      eot: int32 [B], index of the end token in each row.
      features: float [B, L, Dfeat] frozen backbone features, or None to embed
        `tokens` with T's own embedding.
    Returns:
      t_local: [B, L, dim] in `dtype`, zero where `local_mask` is False;
      t_global: [B, dim], the output at `eot`;
      local_mask: bool [B, L], True for positions < eot (caption tokens,
        including the start token; excluding the end token and padding).
    """
    if self.dim % self.num_heads:
      raise ValueError(f'text encoder: num_heads={self.num_heads} must divide dim={self.dim}')
    length = tokens.shape[1]
    if length > self.max_len:
      raise ValueError(f'text encoder: {length} tokens but max_len={self.max_len}')
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if features is None:
      if self.vocab_size <= 0:
        raise ValueError('text encoder without backbone features needs vocab_size > 0')
      x = nn.Embed(self.vocab_size, self.dim, name='token_embed',
                   embedding_init=_part(nn.initializers.normal(0.02), ('vocab', 'embed')),
                   **kw)(tokens)
      pos = self.param('pos_embed', _part(nn.initializers.normal(0.02), (None, 'embed')),
                       (self.max_len, self.dim), self.param_dtype)
      x = x + pos[None, :length].astype(self.dtype)
    else:
      # Backbone features (e.g. CLIP's penultimate layer) are not normalised and
      # have a few very large channels; normalising first keeps the projection
      # well-conditioned whichever layer or backbone is chosen.
      x = _layer_norm('ln_features', **kw)(features.astype(self.dtype))
      x = _dense(self.dim, ('mlp', 'embed'), 'proj_features', **kw)(x)
    valid = token_mask(eot, length)
    for i in range(self.num_layers):
      x = Block(self.num_heads, self.mlp_ratio, name=f'block_{i}', **kw)(x, valid)
    x = _layer_norm('ln_out', **kw)(x)
    t_global = jnp.take_along_axis(x, eot.astype(jnp.int32)[:, None, None], axis=1)[:, 0]
    if self.sentence_whitening and features is not None:
      d = features.shape[-1]
      mean = self.param(whitening.MEAN, _part(nn.initializers.zeros, (None,)), (d,), jnp.float32)
      identity = lambda _, shape, dtype: jnp.eye(*shape, dtype=dtype)
      matrix = self.param(whitening.MATRIX, _part(identity, (None, None)), (d, d), jnp.float32)
      white = whitening.whiten(whitening.sentence_embedding(features, eot), mean, matrix)
      t_global = t_global + _dense(self.dim, ('mlp', 'embed'), 'proj_sentence', **kw)(
          white.astype(self.dtype))
    local_mask = jnp.arange(length)[None, :] < eot[:, None]
    t_local = jnp.where(local_mask[..., None], x, jnp.zeros((), x.dtype))
    return t_local, t_global, local_mask


def text_encoder_from(enc_cfg, vocab_size: int, max_len: int, dtype, param_dtype) -> TextEncoder:
  """TextEncoder of a `text_encoder_config` block, as G, D and the upsampler build it."""
  return TextEncoder(dim=enc_cfg.dim, num_layers=enc_cfg.num_layers, num_heads=enc_cfg.num_heads,
                     mlp_ratio=enc_cfg.get('mlp_ratio', 4), vocab_size=vocab_size,
                     max_len=max_len, sentence_whitening=enc_cfg.get('sentence_whitening', False),
                     dtype=dtype, param_dtype=param_dtype)


def make_text_encoder(enc_cfg, text_cfg, backbone=None, dtype=jnp.float32,
                      param_dtype=jnp.float32, vocab_size: int | None = None) -> TextEncoder:
  """TextEncoder from a `text_encoder_config` ConfigDict and config.text.

  Args:
    enc_cfg: dim, num_layers, num_heads, mlp_ratio.
    text_cfg: config.text (max_len; tokenizer when there is no backbone).
    backbone: the FrozenBackbone whose features T will receive, or None, in
      which case T embeds token ids itself.
    dtype, param_dtype: jnp dtypes or names ('bfloat16', ...).
    vocab_size: overrides the tokenizer's vocabulary size (no backbone only).
  """
  from gigagan_jax.parallel import to_dtype
  as_dtype = lambda d: to_dtype(d) if isinstance(d, str) else d
  if backbone is None and vocab_size is None:
    from gigagan_jax.text.tokenizer import make_tokenizer
    vocab_size = make_tokenizer(text_cfg).vocab_size
  return text_encoder_from(enc_cfg, 0 if backbone is not None else vocab_size, text_cfg.max_len,
                           as_dtype(dtype), as_dtype(param_dtype))
