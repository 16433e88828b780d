"""Learned text encoder T: eot pooling, masking, shapes, dtypes, partitioning."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import linen as nn

from gigagan_jax.parallel import LOGICAL_RULES
from gigagan_jax.text.encoder import TextEncoder, make_text_encoder
from gigagan_jax.text.tokenizer import make_tokenizer

B, L, DIM = 3, 10, 32


def _batch():
  tokens = np.random.RandomState(0).randint(3, 259, (B, L)).astype(np.int32)
  eot = np.array([9, 4, 1], np.int32)
  return jnp.asarray(tokens), jnp.asarray(eot)


def _init(model, tokens, eot, features=None):
  # jit: eager init dispatches op by op and is several times slower on CPU.
  variables = jax.jit(model.init)(jax.random.key(0), tokens, eot, features)
  return nn.meta.unbox(variables)


@functools.lru_cache(maxsize=None)
def _setup(with_features: bool):
  """(model, jitted apply, params, tokens, eot, features), built once per variant."""
  tokens, eot = _batch()
  feats = jax.random.normal(jax.random.key(1), (B, L, 24)) if with_features else None
  model = TextEncoder(dim=DIM, num_layers=2, num_heads=4, mlp_ratio=2, vocab_size=259, max_len=L)
  return model, jax.jit(model.apply), _init(model, tokens, eot, feats), tokens, eot, feats


@pytest.mark.parametrize('with_features', [False, True])
def test_shapes_and_masks(with_features):
  model, apply, params, tokens, eot, feats = _setup(with_features)
  assert ('token_embed' in params['params']) != with_features
  assert ('proj_features' in params['params']) == with_features
  t_local, t_global, mask = apply(params, tokens, eot, feats)
  assert t_local.shape == (B, L, DIM) and t_global.shape == (B, DIM) and mask.dtype == jnp.bool_
  np.testing.assert_array_equal(np.asarray(mask).sum(1), np.asarray(eot))  # positions < eot
  assert not np.asarray(mask)[np.arange(B), np.asarray(eot)].any()        # eot excluded
  assert (np.asarray(t_local)[~np.asarray(mask)] == 0).all()
  assert np.all(np.abs(np.asarray(t_local)[np.asarray(mask)]).sum(-1) > 0)
  # Both outputs are read from the final LayerNorm's output: t_global at eot,
  # t_local at the masked positions.
  capture = functools.partial(model.apply, capture_intermediates=lambda m, _: m.name == 'ln_out',
                              mutable=['intermediates'])
  _, state = jax.jit(capture)(params, tokens, eot, feats)
  final = np.asarray(state['intermediates']['ln_out']['__call__'][0])
  np.testing.assert_allclose(t_global, final[np.arange(B), np.asarray(eot)], atol=1e-6)
  m = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(t_local)[m], final[m], atol=1e-6)


@pytest.mark.parametrize('with_features', [False, True])
def test_global_is_eot_and_ignores_padding(with_features):
  model, apply, params, tokens, eot, feats = _setup(with_features)
  t_local, t_global, mask = apply(params, tokens, eot, feats)

  # Changing what lies after eot (tokens and features) changes nothing.
  after = jnp.arange(L)[None, :] > eot[:, None]
  tokens2 = jnp.where(after, 7, tokens)
  feats2 = None if feats is None else jnp.where(after[..., None], 5.0, feats)
  t_local2, t_global2, _ = apply(params, tokens2, eot, feats2)
  np.testing.assert_allclose(t_global2, t_global, atol=1e-6)
  np.testing.assert_allclose(t_local2, t_local, atol=1e-6)

  # Changing a token before eot in row 0 changes row 0 (globally and every local
  # token, attention being bidirectional) and leaves the other rows alone.
  tokens3 = tokens.at[0, 3].set(tokens[0, 3] + 1)
  # (a random change: a constant shift would vanish in T's input LayerNorm)
  change = jax.random.normal(jax.random.key(2), (24,))
  feats3 = None if feats is None else feats.at[0, 3].add(change)
  t_local3, t_global3, _ = apply(params, tokens3, eot, feats3)
  assert np.abs(t_global3[0] - t_global[0]).max() > 1e-3
  assert np.abs(t_local3[0, 0] - t_local[0, 0]).max() > 1e-3
  np.testing.assert_allclose(t_global3[1:], t_global[1:], atol=1e-6)

  # t_global is the final output at eot: moving eot moves the read-out.
  eot4 = eot.at[0].set(6)
  _, t_global4, mask4 = apply(params, tokens, eot4, feats)
  assert np.asarray(mask4)[0].sum() == 6
  assert np.abs(t_global4[0] - t_global[0]).max() > 1e-3


def test_bfloat16_compute_float32_params():
  model, f32_apply, params, tokens, eot, _ = _setup(False)
  bf16 = model.clone(dtype=jnp.bfloat16)
  boxed = jax.eval_shape(lambda: bf16.init(jax.random.key(0), tokens, eot))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nn.meta.unbox(boxed)))
  t_local, t_global, _ = jax.jit(bf16.apply)(params, tokens, eot)
  assert t_local.dtype == jnp.bfloat16 and t_global.dtype == jnp.bfloat16
  _, ref_global, _ = f32_apply(params, tokens, eot, None)
  assert np.isfinite(np.asarray(t_global, np.float32)).all()
  err = np.abs(np.asarray(t_global, np.float32) - np.asarray(ref_global)).max()
  assert err < 0.1, err  # same function, bf16 rounding only
  # Gradients flow to the float32 params through bf16 compute.
  # (a random read-out: the plain sum of a LayerNorm output has zero gradient)
  probe = jax.random.normal(jax.random.key(3), (DIM,))
  loss = lambda p: (bf16.apply(p, tokens, eot)[1].astype(jnp.float32) @ probe).sum()
  grads = jax.jit(jax.grad(loss))(params)
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
  assert np.abs(np.asarray(grads['params']['token_embed']['embedding'])).sum() > 0


def test_every_param_has_logical_names_from_the_rules():
  tokens, eot = _batch()
  model = TextEncoder(dim=DIM, num_layers=1, num_heads=4, vocab_size=259, max_len=L)
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, eot))
  feats = jnp.zeros((B, L, 24))
  boxed_f = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, eot, feats))
  known = {name for name, _ in LOGICAL_RULES} | {None}
  for tree in (boxed, boxed_f):
    leaves = jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
    for x in leaves:
      assert len(x.names) == x.value.ndim and set(x.names) <= known, x.names


def test_make_text_encoder_from_config():
  text = ml_collections.ConfigDict(dict(tokenizer='byte', max_len=L, backbone='none'))
  enc = ml_collections.ConfigDict(dict(dim=DIM, num_layers=1, num_heads=2, mlp_ratio=4))
  model = make_text_encoder(enc, text, None, dtype='bfloat16', param_dtype='float32')
  assert model.vocab_size == make_tokenizer(text).vocab_size == 259
  assert model.dtype == jnp.bfloat16 and model.max_len == L
  batch = make_tokenizer(text)(['a red circle', 'blue'])
  # Shapes only (eval_shape compiles nothing); behaviour is tested above.
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), batch['tokens'], batch['eot']))
  assert boxed['params']['block_0']['mlp_in']['kernel'].value.shape == (DIM, 4 * DIM)
  t_local, t_global, _ = jax.eval_shape(lambda p: model.apply(p, batch['tokens'], batch['eot']),
                                        nn.meta.unbox(boxed))
  assert t_local.shape == (2, L, DIM) and t_global.shape == (2, DIM)
  assert t_global.dtype == jnp.bfloat16

  class FakeBackbone:
    dim = 24
  with_backbone = make_text_encoder(enc, text, FakeBackbone(), dtype='float32')
  assert with_backbone.vocab_size == 0  # no token embedding when features come in
  with pytest.raises(ValueError, match='num_heads'):
    TextEncoder(dim=30, num_layers=1, num_heads=4, vocab_size=9, max_len=L).init(
        jax.random.key(0), batch['tokens'], batch['eot'])
