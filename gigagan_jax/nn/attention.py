"""Attention layers of GigaGAN's generator and discriminator.

Self-attention uses the paper's stabilisers (PAPER_NOTES 1.5): logits are the
negative squared L2 distance between queries and keys (Lipschitz, Kim et al.
2021), the query and key projections are one tied matrix, all projections
have equalized learning rate, and the residual branch has a small gain.
The L2 logits are divided by the head width d, not sqrt(d) (see
`l2_attention_weights` for why).
Cross-attention lets image features (queries) read the text tokens t_local.
Neither layer has positional encodings: position comes from the convs around
them, so self-attention is permutation-equivariant over pixels.
"""
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.scipy.special import entr

from gigagan_jax.nn.equalized import EqualDense


def _heads(x, heads):
  """[B, T, H*D] -> [B, H, T, D]."""
  b, t, hd = x.shape
  return x.reshape(b, t, heads, hd // heads).transpose(0, 2, 1, 3)


def _merge(x):
  """[B, H, T, D] -> [B, T, H*D]."""
  b, h, t, d = x.shape
  return x.transpose(0, 2, 1, 3).reshape(b, t, h * d)


def l2_attention_weights(q, k, key_mask=None):
  """Softmax over -|q - k|^2 / D. q [B,H,Tq,D], k [B,H,Tk,D] -> float32 [B,H,Tq,Tk].

  Why D and not sqrt(D): the query/key projection is tied, so a token's query
  equals its own key and its distance to itself is exactly 0, while two
  unrelated tokens with unit-variance components (LayerNorm in, equalized
  weights: what every layer sees at init) sit at E|q - k|^2 = 2D. Divided by
  sqrt(D) that gap is 2 sqrt(D) (16 nats for D = 64), so at init each token
  attended almost only to itself (mean self-weight 0.9992 for 256 tokens,
  4 heads of 64): the layer mixed no information between tokens, and its
  saturated softmax passed almost no gradient to the query/key weights. Divided by D the typical logit is -2 for any
  head width, the self bonus is e^2 ~ 7x, and the softmax starts close to
  uniform (self-weight ~0.03, entropy ~99% of log(Tk) in the case above).
  The logit is quadratic in the tied weight, so training sharpens it by
  growing that weight: a factor a on W scales every logit by a^2.
  """
  q32, k32 = q.astype(jnp.float32), k.astype(jnp.float32)
  d2 = (jnp.sum(q32 * q32, -1)[..., :, None] - 2 * jnp.einsum('bhqd,bhkd->bhqk', q32, k32)
        + jnp.sum(k32 * k32, -1)[..., None, :])
  logits = -d2 / q.shape[-1]
  if key_mask is not None:
    logits = jnp.where(key_mask[:, None, None, :], logits, -1e30)
  return jax.nn.softmax(logits, -1)


def l2_attention(q, k, v, key_mask=None):
  """L2 attention (weights from `l2_attention_weights`). q [B,H,Tq,D], k/v [B,H,Tk,D] -> [B,H,Tq,D]."""
  weights = l2_attention_weights(q, k, key_mask)
  return jnp.einsum('bhqk,bhkd->bhqd', weights.astype(v.dtype), v)


def attention_entropy(weights):
  """Mean entropy of attention rows as a fraction of its maximum log(Tk).

  weights: [..., Tq, Tk], rows summing to 1 (Tk > 1). Returns a float32
  scalar in [0, 1]: 1 = every query spreads evenly over all keys (mean
  pooling), 0 = every query reads a single key. For the tied-L2 self-attention
  a value near 0 at init means queries read only themselves (no mixing
  between tokens); a steady fall during training is attention becoming
  selective; a collapse towards 0 early in training is a warning sign.
  """
  ent = jnp.sum(entr(weights.astype(jnp.float32)), axis=-1)  # 0 log 0 = 0
  return jnp.mean(ent) / math.log(weights.shape[-1])


def collect_attention_entropy(intermediates) -> dict:
  """{'/'-joined module path: entropy} from the 'intermediates' collection.

  `intermediates`: the `['intermediates']` of
  `model.apply(variables, ..., mutable=['intermediates'])`. Every SelfAttention
  sows one `attn_entropy` scalar per call (see `attention_entropy`); a module
  called more than once reports the mean of its calls.
  """
  out = {}

  def visit(tree, prefix):
    for name, sub in tree.items():
      if name == 'attn_entropy':
        out['/'.join(prefix)] = jnp.mean(jnp.stack(sub))
      elif isinstance(sub, Mapping):
        visit(sub, prefix + (name,))

  visit(intermediates, ())
  return out


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
  When the caller makes 'intermediates' mutable, the layer sows
  `attn_entropy`: its attention entropy as a fraction of log(keys) (read it
  with `collect_attention_entropy`); otherwise nothing extra is computed.
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
    weights = l2_attention_weights(q, k)  # [B, heads, HW, HW (+1)]
    if self.is_mutable_collection('intermediates'):  # only when the caller collects it
      self.sow('intermediates', 'attn_entropy', attention_entropy(weights))
    attended = jnp.einsum('bhqk,bhkd->bhqd', weights.astype(v.dtype), v)
    out = dense(c, ('heads', 'embed'), 'out')(_merge(attended))
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
