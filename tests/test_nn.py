"""Numerical behaviour of the building blocks in gigagan_jax.nn."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from gigagan_jax.nn import (CrossAttention, ModulatedConv, SelfAttention, blur, downsample2d,
                            minibatch_std, upsample2d)
from gigagan_jax.nn import conv as conv_lib
from gigagan_jax.nn.conv import auto_backend
from gigagan_jax.nn.modulated_conv import choose_impl


def _init_apply(module, *args):
  variables = nn.meta.unbox(module.init(jax.random.key(0), *args))
  return variables, module.apply(variables, *args)


def _reference_modulated_conv(x, kernel, style, demodulate=True):
  """Independent per-sample loop: modulate, demodulate, conv. kernel [k,k,Cin,Cout]."""
  outs = []
  for b in range(x.shape[0]):
    k = kernel * style[b][None, None, :, None]
    if demodulate:
      k = k / np.sqrt(np.sum(k**2, axis=(0, 1, 2), keepdims=True) + 1e-8)
    outs.append(jax.lax.conv_general_dilated(x[b:b + 1], k, (1, 1), 'SAME',
                                             dimension_numbers=('NHWC', 'HWIO', 'NHWC'))[0])
  return np.stack(outs)


@pytest.mark.parametrize('impl', ['grouped', 'fused'])
@pytest.mark.parametrize('bank', [1, 4])
def test_demodulated_conv_keeps_unit_variance(impl, bank):
  x = jax.random.normal(jax.random.key(1), (8, 24, 24, 128))
  w = jax.random.normal(jax.random.key(2), (8, 32))
  _, y = _init_apply(ModulatedConv(96, 3, bank, impl=impl), x, w)
  interior = np.asarray(y)[:, 1:-1, 1:-1]  # 'SAME' zero padding lowers the border variance
  assert abs(interior.var() - 1.0) < 0.05, interior.var()
  assert abs(interior.mean()) < 0.05


def test_bank_of_one_equals_plain_modulated_conv():
  x = jax.random.normal(jax.random.key(3), (3, 8, 8, 16))
  w = jax.random.normal(jax.random.key(4), (3, 20))
  module = ModulatedConv(12, 3, 1)
  variables, y = _init_apply(module, x, w)
  p = variables['params']
  kernel = np.asarray(p['bank'][0]) / np.sqrt(3 * 3 * 16)
  style = np.asarray(w @ (p['style']['kernel'] / np.sqrt(20)) + p['style']['bias'])
  expected = _reference_modulated_conv(np.asarray(x), kernel, style) + np.asarray(p['bias'])
  np.testing.assert_allclose(np.asarray(y), expected, atol=2e-5, rtol=2e-5)


def test_fused_formulation_equals_grouped():
  x = jax.random.normal(jax.random.key(5), (4, 8, 8, 16))
  w = jax.random.normal(jax.random.key(6), (4, 20))
  variables, _ = _init_apply(ModulatedConv(24, 3, 5, impl='grouped'), x, w)
  # Non-uniform mixing weights, so the test sees the quadratic-form demodulation.
  variables['params']['select']['kernel'] = variables['params']['select']['kernel'] * 30
  y_grouped = ModulatedConv(24, 3, 5, impl='grouped').apply(variables, x, w)
  y_fused = ModulatedConv(24, 3, 5, impl='fused').apply(variables, x, w)
  np.testing.assert_allclose(np.asarray(y_fused), np.asarray(y_grouped), atol=2e-4, rtol=1e-4)


def test_auto_form_is_the_one_with_the_smaller_buffer_per_sample():
  """On an accelerator 'grouped' keeps a k*k*Cin*Cout kernel per sample, 'fused' an
  H*W*N*Cout output; on CPU, whose grouped convs are slow, 'fused' throughout."""
  with auto_backend('gpu'):
    assert choose_impl((8, 64, 64, 32), (4, 3, 3, 32, 32)) == 'grouped'  # 288 < 16384 per Cout
    assert choose_impl((8, 4, 4, 512), (4, 3, 3, 512, 512)) == 'fused'   # 4608 > 64
    assert choose_impl((8, 64, 64, 32), (1, 3, 3, 32, 32)) == 'fused'    # a bank of one
  assert choose_impl((8, 64, 64, 32), (4, 3, 3, 32, 32)) == 'fused'      # here: CPU


@pytest.mark.parametrize('k', [1, 3])
def test_cpu_conv_gradients_equal_xlas(k):
  """conv2d's CPU form (weight gradient as one matrix product per kernel tap)
  against XLA's own conv gradient, alone and vmapped as the grouped form uses it."""
  rng = np.random.default_rng(k)
  x = jnp.asarray(rng.normal(size=(3, 7, 6, 5)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(k, k, 5, 4)), jnp.float32)
  dy = jnp.asarray(rng.normal(size=(3, 7, 6, 4)), jnp.float32)
  assert conv_lib.target_backend() == 'cpu'
  got = jax.vjp(conv_lib.conv2d, x, kernel)
  want = jax.vjp(conv_lib._lax_conv, x, kernel)  # pylint: disable=protected-access
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
  for g, w in zip(got[1](dy), want[1](dy)):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
  # Per-sample kernels (vmap), as grouped_modulated_conv runs it.
  kernels = jnp.stack([kernel, 2 * kernel, -kernel])
  per_sample = lambda conv: jax.vmap(lambda xi, ki: conv(xi[None], ki)[0])
  got = jax.vjp(per_sample(conv_lib.conv2d), x, kernels)[1](dy)
  want = jax.vjp(per_sample(conv_lib._lax_conv), x, kernels)[1](dy)  # pylint: disable=protected-access
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_kernel_selection_depends_on_style():
  x = jnp.ones((2, 6, 6, 8))
  w = jax.random.normal(jax.random.key(7), (2, 16))
  variables, _ = _init_apply(ModulatedConv(8, 3, 4), x, w)
  variables['params']['select']['kernel'] = variables['params']['select']['kernel'] * 30
  same_x = ModulatedConv(8, 3, 4).apply(variables, x, w)
  assert not np.allclose(same_x[0], same_x[1], atol=1e-3)  # same input, other w, other kernel


def test_self_attention_is_permutation_equivariant():
  x = jax.random.normal(jax.random.key(8), (2, 4, 4, 32))
  w = jax.random.normal(jax.random.key(9), (2, 16))
  module = SelfAttention(heads=4, residual_gain=1.0, mlp_ratio=2)
  variables, y = _init_apply(module, x, w)
  perm = np.random.default_rng(0).permutation(16)
  xp = x.reshape(2, 16, 32)[:, perm].reshape(2, 4, 4, 32)
  yp = module.apply(variables, xp, w)
  np.testing.assert_allclose(np.asarray(yp), np.asarray(y.reshape(2, 16, 32)[:, perm]
                                                      .reshape(2, 4, 4, 32)), atol=1e-5)
  assert not np.allclose(np.asarray(y), np.asarray(x), atol=1e-3)  # the layer does something


def test_self_attention_logits_are_negative_l2_distance():
  from gigagan_jax.nn.attention import l2_attention
  q = jax.random.normal(jax.random.key(10), (1, 1, 3, 4))
  k = jax.random.normal(jax.random.key(11), (1, 1, 5, 4))
  v = jnp.eye(5)[None, None]
  attn = np.asarray(l2_attention(q, k, v))[0, 0]
  d2 = ((np.asarray(q)[0, 0][:, None] - np.asarray(k)[0, 0][None]) ** 2).sum(-1)
  expected = np.exp(-d2 / 4.0)  # divided by the head width D = 4
  np.testing.assert_allclose(attn, expected / expected.sum(-1, keepdims=True), atol=1e-5)


def _self_attention_at_init(with_w):
  """Init-time attention of one SelfAttention: (weights [B,H,T,T(+1)], sown entropy)."""
  from gigagan_jax.nn.attention import _heads, collect_attention_entropy, l2_attention_weights
  x = jax.random.normal(jax.random.key(14), (2, 16, 16, 256))  # 256 tokens, 256 channels
  w = jax.random.normal(jax.random.key(15), (2, 64)) if with_w else None
  module = SelfAttention(heads=4)                              # head width d = 64
  variables = nn.meta.unbox(module.init(jax.random.key(16), x, w))
  # The tied projection's outputs: call 0 on the pixels (queries), call 1 on
  # the keys (the pixels, then the w token when there is one).
  _, state = module.apply(variables, x, w, capture_intermediates=lambda m, _: m.name == 'qk',
                          mutable=['intermediates'])
  q, k = state['intermediates']['qk']['__call__']
  weights = l2_attention_weights(_heads(q, 4), _heads(k, 4))
  return weights, collect_attention_entropy(state['intermediates'])


@pytest.mark.parametrize('with_w', [False, True])
def test_self_attention_spreads_over_tokens_at_init(with_w):
  # Tied Q/K makes a token's L2 distance to itself 0 and to others ~2d; with a
  # 1/sqrt(d) logit scale that gap was 16 nats and each token read only itself
  # (mean self-weight 0.9992, entropy ~0.2% of log T).
  weights, sown = _self_attention_at_init(with_w)
  t = weights.shape[-2]
  self_weight = float(jnp.mean(jnp.diagonal(weights[..., :t], axis1=-2, axis2=-1)))
  assert self_weight < 0.5, self_weight
  entropy = float(-jnp.sum(weights * jnp.log(weights), -1).mean() / np.log(weights.shape[-1]))
  assert entropy > 0.8, entropy
  # The layer sows the same figure for the trainer to log.
  assert list(sown) == ['']  # the module itself is the root here
  assert float(sown['']) == pytest.approx(entropy, rel=1e-4)


def test_attention_entropy_reads_uniform_as_one_and_one_hot_as_zero():
  from gigagan_jax.nn.attention import attention_entropy
  assert float(attention_entropy(jnp.full((2, 3, 5, 8), 1 / 8))) == pytest.approx(1.0, rel=1e-6)
  assert float(attention_entropy(jnp.eye(8)[None, None])) == pytest.approx(0.0, abs=1e-7)
  half = jnp.array([[0.5, 0.5, 0.0, 0.0]])  # two of four keys: log 2 / log 4
  assert float(attention_entropy(half)) == pytest.approx(0.5, rel=1e-6)


def test_attention_entropy_is_sown_only_when_collected():
  from gigagan_jax.nn.attention import collect_attention_entropy

  class Two(nn.Module):
    @nn.compact
    def __call__(self, x):
      return SelfAttention(2, name='b')(SelfAttention(2, name='a')(x))

  x = jax.random.normal(jax.random.key(17), (1, 4, 4, 16))
  variables = Two().init(jax.random.key(18), x)
  assert set(variables) == {'params'}  # init does not collect it
  _, state = Two().apply(variables, x, mutable=['intermediates'])
  got = collect_attention_entropy(state['intermediates'])
  assert sorted(got) == ['a', 'b'] and all(0 < float(v) <= 1 for v in got.values())


def test_cross_attention_ignores_masked_tokens():
  x = jax.random.normal(jax.random.key(12), (2, 4, 4, 16))
  text = jax.random.normal(jax.random.key(13), (2, 6, 24))
  mask = jnp.array([[True] * 3 + [False] * 3] * 2)
  module = CrossAttention(heads=2, residual_gain=1.0)
  variables, y = _init_apply(module, x, text, mask)
  text2 = text.at[:, 3:].set(100.0)
  np.testing.assert_allclose(np.asarray(module.apply(variables, x, text2, mask)),
                             np.asarray(y), atol=1e-5)
  text3 = text.at[:, 0].set(5.0)
  assert not np.allclose(np.asarray(module.apply(variables, x, text3, mask)), np.asarray(y))
  # A caption with no readable token leaves the features untouched.
  np.testing.assert_allclose(np.asarray(module.apply(variables, x, text, mask & False)),
                             np.asarray(x), atol=1e-6)


def test_fir_resampling_shapes_and_dc_gain():
  x = jnp.full((1, 8, 8, 3), 2.0)
  up, down, blurred = upsample2d(x), downsample2d(x), blur(x)
  assert up.shape == (1, 16, 16, 3) and down.shape == (1, 4, 4, 3) and blurred.shape == x.shape
  # Constant images stay constant away from the zero-padded border.
  for y in (up, down, blurred):
    np.testing.assert_allclose(np.asarray(y)[:, 2:-2, 2:-2], 2.0, atol=1e-5)


def test_fir_upsampling_is_smooth():
  # A single bright pixel spreads into the separable [1,3,3,1] pattern.
  x = jnp.zeros((1, 4, 4, 1)).at[0, 1, 1, 0].set(1.0)
  up = np.asarray(upsample2d(x))[0, :, :, 0]
  assert up.sum() == pytest.approx(4.0, rel=1e-5)
  assert up.max() == pytest.approx(4 * (3 / 8) ** 2, rel=1e-5)


def test_minibatch_std():
  x = jnp.ones((4, 4, 4, 8))
  y = minibatch_std(x, group_size=2)
  assert y.shape == (4, 4, 4, 9)
  np.testing.assert_allclose(np.asarray(y[..., -1]), 1e-4, atol=1e-4)  # sqrt(0 + eps)
  x = jnp.concatenate([jnp.zeros((2, 4, 4, 8)), jnp.ones((2, 4, 4, 8)) * 2])
  # groups pair sample b with b + B/g: {0, 2} and {1, 3} both hold a 0 and a 2 -> std 1
  np.testing.assert_allclose(np.asarray(minibatch_std(x, 2)[..., -1]), 1.0, atol=1e-4)


def test_minibatch_std_groups_within_segments_only():
  # Three batches of 4 stacked on the batch axis (the discriminator's entry
  # levels): the result is each batch's own minibatch-std, side by side.
  x = jax.random.normal(jax.random.key(19), (12, 3, 3, 8)) * jnp.array([1.0, 5.0, 0.2]).repeat(4)[
      :, None, None, None]
  stacked = minibatch_std(x, 2, num_channels=2, segments=3)
  alone = jnp.concatenate([minibatch_std(x[i:i + 4], 2, num_channels=2) for i in (0, 4, 8)])
  np.testing.assert_allclose(np.asarray(stacked), np.asarray(alone), atol=1e-6)
  with pytest.raises(ValueError, match='per segment'):
    minibatch_std(x, 4, segments=2)  # 6 samples per segment: groups of 4 do not fit

