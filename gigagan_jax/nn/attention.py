"""Attention layers of GigaGAN's generator and discriminator.

Self-attention uses the paper's stabilisers (PAPER_NOTES 1.5): logits are the
negative squared L2 distance between queries and keys (Lipschitz, Kim et al.
2021), the query and key projections are one tied matrix, all projections
have equalized learning rate, and the residual branch has a small gain.
Cross-attention lets image features (queries) read the text tokens t_local.
Neither layer has positional encodings: position comes from the convs around
them, so self-attention is permutation-equivariant over pixels.
"""
import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from gigagan_jax.nn.equalized import EqualDense


def _heads(x, heads):
  """[B, T, H*D] -> [B, H, T, D]."""
  b, t, hd = x.shape
  return x.reshape(b, t, heads, hd // heads).transpose(0, 2, 1, 3)


def _merge(x):
  """[B, H, T, D] -> [B, T, H*D]."""
  b, h, t, d = x.shape
  return x.transpose(0, 2, 1, 3).reshape(b, t, h * d)


def l2_attention(q, k, v, key_mask=None):
  """Softmax over -|q - k|^2 / sqrt(D). q [B,H,Tq,D], k/v [B,H,Tk,D] -> [B,H,Tq,D]."""
  q32, k32 = q.astype(jnp.float32), k.astype(jnp.float32)
  d2 = (jnp.sum(q32 * q32, -1)[..., :, None] - 2 * jnp.einsum('bhqd,bhkd->bhqk', q32, k32)
        + jnp.sum(k32 * k32, -1)[..., None, :])
  logits = -d2 / math.sqrt(q.shape[-1])
  if key_mask is not None:
    logits = jnp.where(key_mask[:, None, None, :], logits, -1e30)
  return jnp.einsum('bhqk,bhkd->bhqd', jax.nn.softmax(logits, -1).astype(v.dtype), v)


def dot_attention(q, k, v, key_mask=None):
  """Scaled dot-product attention; shapes as in `l2_attention`."""
  logits = jnp.einsum('bhqd,bhkd->bhqk', q.astype(jnp.float32), k.astype(jnp.float32))
  logits = logits / math.sqrt(q.shape[-1])
  if key_mask is not None:
    logits = jnp.where(key_mask[:, None, None, :], logits, -1e30)
  return jnp.einsum('bhqk,bhkd->bhqd', jax.nn.softmax(logits, -1).astype(v.dtype), v)


class FeedForward(nn.Module):
  """Pre-LN MLP residual branch. [B, T, C] -> [B, T, C] (the branch only)."""
  ratio: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    dense = lambda f, names, name: EqualDense(f, names=names, name=name, dtype=self.dtype,
                                              param_dtype=self.param_dtype)
    h = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, use_scale=False,
                     use_bias=False, name='norm')(x)
    h = jax.nn.gelu(dense(c * self.ratio, ('embed', 'mlp'), 'fc1')(h))
    return dense(c, ('mlp', 'embed'), 'fc2')(h)


class SelfAttention(nn.Module):
  """L2 self-attention over pixels with tied query/key. [B,H,W,C] -> [B,H,W,C].

  If `w` [B, Dw] is given it joins the keys/values as one extra token, so the
  style vector can steer attention (paper Eq. 5 feeds w to SelfAttn).
  """
  heads: int
  residual_gain: float = 0.1
  mlp_ratio: int = 0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, w=None):
    b, hgt, wid, c = x.shape
    dense = lambda f, names, name: EqualDense(f, names=names, name=name, use_bias=False,
                                              dtype=self.dtype, param_dtype=self.param_dtype)
    tokens = x.reshape(b, hgt * wid, c)
    h = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, use_scale=False,
                     use_bias=False, name='norm')(tokens)
    kv_in = h
    if w is not None:
      w_tok = dense(c, ('embed', 'mlp'), 'w_token')(w)[:, None, :]
      kv_in = jnp.concatenate([h, w_tok.astype(h.dtype)], axis=1)
    qk = dense(c, ('embed', 'heads'), 'qk')  # one matrix for queries and keys (tied)
    q, k = _heads(qk(h), self.heads), _heads(qk(kv_in), self.heads)
    v = _heads(dense(c, ('embed', 'heads'), 'v')(kv_in), self.heads)
    out = dense(c, ('heads', 'embed'), 'out')(_merge(l2_attention(q, k, v)))
    tokens = tokens + self.residual_gain * out
    if self.mlp_ratio:
      tokens = tokens + self.residual_gain * FeedForward(
          self.mlp_ratio, self.dtype, self.param_dtype, name='mlp')(tokens)
    return tokens.reshape(b, hgt, wid, c)


class CrossAttention(nn.Module):
  """Image features attend to text tokens. x [B,H,W,C], text [B,L,Ct], mask [B,L].

  Masked tokens (EOT, padding) are never read. Returns [B, H, W, C].
  """
  heads: int
  residual_gain: float = 0.1
  mlp_ratio: int = 0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, text, mask):
    b, hgt, wid, c = x.shape
    dense = lambda f, names, name: EqualDense(f, names=names, name=name, use_bias=False,
                                              dtype=self.dtype, param_dtype=self.param_dtype)
    tokens = x.reshape(b, hgt * wid, c)
    h = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, use_scale=False,
                     use_bias=False, name='norm')(tokens)
    q = _heads(dense(c, ('embed', 'heads'), 'q')(h), self.heads)
    k = _heads(dense(c, ('embed', 'heads'), 'k')(text), self.heads)
    v = _heads(dense(c, ('embed', 'heads'), 'v')(text), self.heads)
    # A caption with no local tokens (empty prompt) reads nothing: zero update.
    any_token = jnp.any(mask, axis=-1)[:, None, None]
    out = dense(c, ('heads', 'embed'), 'out')(_merge(dot_attention(q, k, v, mask)))
    tokens = tokens + self.residual_gain * jnp.where(any_token, out, 0)
    if self.mlp_ratio:
      tokens = tokens + self.residual_gain * FeedForward(
          self.mlp_ratio, self.dtype, self.param_dtype, name='mlp')(tokens)
    return tokens.reshape(b, hgt, wid, c)
