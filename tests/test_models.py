"""Generator and discriminator: shapes, conditioning controls, dtypes, sizes."""
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import linen as nn

from gigagan_jax import parallel
from gigagan_jax.config_utils import load_config, load_module, validate
from gigagan_jax.models.build import abstract_variables, build_models
from gigagan_jax.models.discriminator import logit_name
from gigagan_jax.models.generator import mix_scales, per_scale
from gigagan_jax.nn.conv import auto_backend
from gigagan_jax.nn.modulated_conv import chosen_impls
from gigagan_jax.text.tokenizer import make_tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = ['a red circle at the top left', 'two blue squares on a yellow background',
           'a small green star', 'three purple triangles']


def _setup(dtype='float32', config_file='configs/t2i_tiny.py', edit=lambda config: None):
  """t2i_tiny's sizes with the paper's model (configs/ablations.py's
  PAPER_MODEL: GigaGAN's MS-I/O D, T without the whitened sentence embedding,
  G from its constant; t2i_tiny's own D is tests/test_projection_discriminator.py)."""
  config = load_config(config_file)
  config.update_from_flattened_dict(load_module('configs/ablations.py').PAPER_MODEL)
  edit(config)
  config = validate(config)
  config.generator.dtype = config.discriminator.dtype = dtype
  tokenizer = make_tokenizer(config.text)
  g, d = build_models(config, tokenizer.vocab_size)
  text = tokenizer(PROMPTS)
  z = jax.random.normal(jax.random.key(0), (len(PROMPTS), config.generator.z_dim))
  # jit: op-by-op (eager) init of these models takes ~10x longer than compiling it
  g_vars = nn.meta.unbox(jax.jit(g.init)(jax.random.key(1), z, text))
  d_vars = nn.meta.unbox(jax.jit(d.init)(jax.random.key(2), jax.jit(g.apply)(g_vars, z, text),
                                         text))
  return config, g, d, g_vars, d_vars, z, text


@pytest.fixture(scope='module')
def tiny():
  return _setup()


def test_generator_pyramid_shapes_and_dtype(tiny):
  config, g, _, g_vars, _, z, text = tiny
  pyramid = jax.jit(g.apply)(g_vars, z, text)
  r, levels = config.generator.resolution, config.generator.pyramid_levels
  assert [p.shape for p in pyramid] == [(4, r // 2**i, r // 2**i, 3) for i in range(levels)]
  assert all(p.dtype == jnp.float32 and np.isfinite(np.asarray(p)).all() for p in pyramid)
  # Different latents and captions give different images.
  assert float(jnp.std(pyramid[0], axis=0).mean()) > 1e-2


def test_discriminator_one_logit_map_per_level_and_exit(tiny):
  config, g, d, g_vars, d_vars, z, text = tiny
  logits = jax.eval_shape(lambda: d.apply(d_vars, g.apply(g_vars, z, text), text))
  r, levels = config.generator.resolution, config.generator.pyramid_levels
  stage_outputs = [r // 2**k for k in range(1, int(math.log2(r)) - 1)] + [1]
  expected = {}
  for i in range(levels):  # level i enters at stage i and exits at every later stage
    for out in stage_outputs[i:]:
      expected[logit_name(r // 2**i, out)] = (4, out, out, 1)
  assert {k: v.shape for k, v in logits.items()} == expected
  assert len(expected) == levels * (levels + 1) // 2


def test_single_scale_discriminator_ablation_predicts_once():
  """generator.pyramid_levels=1 + discriminator.exits='last': one image, one logit (no MS-I/O)."""
  config = validate(load_config('configs/t2i_tiny.py'))
  config.generator.pyramid_levels, config.discriminator.exits = 1, 'last'
  config.discriminator.kind = 'msio'
  tokenizer = make_tokenizer(config.text)
  g, d = build_models(config, tokenizer.vocab_size)
  text = tokenizer(PROMPTS)
  z = jnp.zeros((len(PROMPTS), config.generator.z_dim))
  g_vars = jax.eval_shape(g.init, jax.random.key(1), z, text)
  pyramid = jax.eval_shape(g.apply, g_vars, z, text)
  r = config.generator.resolution
  assert [p.shape for p in pyramid] == [(4, r, r, 3)]
  d_vars = jax.eval_shape(d.init, jax.random.key(2), pyramid, text)
  logits = jax.eval_shape(d.apply, d_vars, pyramid, text)
  assert {k: v.shape for k, v in logits.items()} == {logit_name(r, 1): (4, 1, 1, 1)}
  # Heads of the skipped exits are never built: fewer D parameters.
  assert not any(k.startswith('head') and k != 'head4' for k in d_vars['params'])


def test_discriminator_scores_mismatched_captions(tiny):
  _, g, d, g_vars, d_vars, z, text = tiny
  pyramid = jax.jit(g.apply)(g_vars, z, text)  # jit: eager apply is ~5x slower on CPU
  wrong = {k: np.roll(v, 1, axis=0) for k, v in text.items()}
  matched, mismatched = jax.jit(d.apply)(d_vars, pyramid, text, wrong)
  alone = jax.jit(d.apply)(d_vars, pyramid, wrong)
  for k in matched:
    np.testing.assert_allclose(np.asarray(mismatched[k]), np.asarray(alone[k]), atol=1e-5)
  assert any(not np.allclose(matched[k], mismatched[k]) for k in matched)


def test_global_text_exits_leave_patch_maps_unconditional():
  """discriminator.text_exits='global': only the 1x1 maps read the caption;
  the patch maps score every caption alike and have no mismatched term."""
  config, g, d, g_vars, d_vars, z, text = _setup(
      edit=lambda c: c.discriminator.update(text_exits='global'))
  pyramid = jax.jit(g.apply)(g_vars, z, text)
  wrong = {k: np.roll(v, 1, axis=0) for k, v in text.items()}
  matched, mismatched = jax.jit(d.apply)(d_vars, pyramid, text, wrong)
  alone = jax.jit(d.apply)(d_vars, pyramid, wrong)
  global_maps = {k for k, v in matched.items() if v.shape[1:3] == (1, 1)}
  assert set(mismatched) == global_maps and len(global_maps) == config.generator.pyramid_levels
  for k in matched:
    same = np.allclose(matched[k], alone[k], atol=1e-6)
    assert same == (k not in global_maps), k
  # Only the final stage's head has text-modulated layers.
  assert [k for k in d_vars['params'] if k.startswith('head') and 'mod0' in d_vars['params'][k]] \
      == ['head4']


def test_truncation_psi_zero_gives_the_mean_image_for_every_z(tiny):
  _, g, _, g_vars, _, _, _ = tiny
  text = make_tokenizer(load_config('configs/t2i_tiny.py').text)(['a red circle'] * 3)
  z = jax.random.normal(jax.random.key(5), (3, g.cfg.z_dim))
  w_mean = jax.jit(lambda v, t, k: g.apply(v, t, k, 64, method='mean_w'))(
      g_vars, text, jax.random.key(6))
  trunc = jax.jit(lambda v, z, t, w: g.apply(v, z, t, psi=0.0, w_mean=w))(
      g_vars, z, text, w_mean)[0]
  np.testing.assert_allclose(np.asarray(trunc[1]), np.asarray(trunc[0]), atol=1e-5)
  np.testing.assert_allclose(np.asarray(trunc[2]), np.asarray(trunc[0]), atol=1e-5)
  plain = jax.jit(g.apply)(g_vars, z, text)[0]
  assert not np.allclose(np.asarray(plain[1]), np.asarray(plain[0]), atol=1e-3)
  with pytest.raises(ValueError, match='w_mean'):
    g.apply(g_vars, z, text, psi=0.5)


def _styles_and_text(g, g_vars, z, text):
  t_local, t_global, mask = g.apply(g_vars, text, method='encode_text')
  w = g.apply(g_vars, z, t_global, method='map')
  return per_scale(w, g.num_scales), per_scale(t_local, g.num_scales), per_scale(mask, g.num_scales)


def test_style_mixing_and_per_scale_prompt_control(tiny):
  _, g, _, g_vars, _, z, text = tiny
  ws, tl, tm = _styles_and_text(g, g_vars, z, text)
  ws_b = jnp.roll(ws, 1, axis=0)
  synthesize = jax.jit(lambda v, *a: g.apply(v, *a, method='synthesize')[0])  # one compile
  synth = lambda *a: synthesize(g_vars, *a)
  base = synth(ws, tl, tm)
  np.testing.assert_allclose(synth(mix_scales(ws, ws_b, g.num_scales), tl, tm), base, atol=1e-5)
  np.testing.assert_allclose(synth(mix_scales(ws, ws_b, 0), tl, tm), synth(ws_b, tl, tm), atol=1e-5)
  mixed = synth(mix_scales(ws, ws_b, 2), tl, tm)  # coarse from A, fine from B
  assert not np.allclose(mixed, base, atol=1e-3) and not np.allclose(mixed, synth(ws_b, tl, tm), atol=1e-3)
  # Prompt mixing: fine scales read prompt B's tokens, coarse ones prompt A's.
  tl_b, tm_b = jnp.roll(tl, 1, axis=0), jnp.roll(tm, 1, axis=0)
  mixed_text = synth(ws, mix_scales(tl, tl_b, 2), mix_scales(tm, tm_b, 2))
  assert not np.allclose(mixed_text, base, atol=1e-3)
  np.testing.assert_allclose(synth(ws, mix_scales(tl, tl_b, g.num_scales),
                                   mix_scales(tm, tm_b, g.num_scales)), base, atol=1e-5)


def test_input_from_w_adds_a_dense_layer_of_w_to_the_constant():
  """generator.input_from_w: sample i starts from const + Dense(w_i[scale 0])
  reshaped to 4x4, which a G with that sum as its constant reproduces."""
  _, g, _, g_vars, _, z, text = _setup(edit=lambda c: c.generator.update(input_from_w=True))
  ws, tl, tm = _styles_and_text(g, g_vars, z, text)
  synthesize = jax.jit(lambda v, *a: g.apply(v, *a, method='synthesize')[0])
  images = synthesize(g_vars, ws, tl, tm)
  params = g_vars['params']
  zero_proj = jax.tree.map(jnp.zeros_like, params['input_proj'])
  for i in (0, 1):
    dense = g.apply(g_vars, ws[i:i + 1, 0], method=lambda m, w: m.input_proj(w))
    const = params['const'] + dense.reshape(params['const'].shape)
    ref_vars = {'params': dict(params, const=const, input_proj=zero_proj)}
    one = lambda x: x[i:i + 1]
    np.testing.assert_allclose(images[i:i + 1], synthesize(ref_vars, one(ws), one(tl), one(tm)),
                               rtol=1e-4, atol=1e-4)
  assert float(jnp.abs(dense).mean()) > 0.1  # the input does depend on w


@pytest.mark.parametrize('d_kind', ['msio', 'projection'])
def test_every_parameter_has_logical_axis_names(d_kind):
  config = load_config('configs/t2i_tiny.py')
  config.discriminator.kind = d_kind
  for variables in abstract_variables(config, vocab_size=300):
    leaves = jax.tree.leaves(variables, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    unnamed = [x for x in leaves if not isinstance(x, nn.LogicallyPartitioned)]
    assert not unnamed and leaves


# configs/t2i_paper.py's exact sizes (jax.eval_shape; the frozen text backbone
# is not counted). README.md states them rounded to 0.1M: "G 682.8M and D
# 383.0M" (the paper's are 652.5M and 381.4M; our widths are our own guess,
# PAPER_NOTES.md 7). A change of any parameter shape changes these; a change
# of initialisation does not.
PAPER_G_PARAMS, PAPER_D_PARAMS = 682_784_351, 383_007_242


def test_paper_model_sizes_are_the_readmes():
  config = validate(load_config('configs/t2i_paper.py'))
  g_vars, d_vars = abstract_variables(config, vocab_size=0, feature_dim=config.text.feature_dim)
  count = lambda v: sum(math.prod(x.shape) for x in jax.tree.leaves(nn.meta.unbox(v)))
  counts = (count(g_vars), count(d_vars))
  assert counts == (PAPER_G_PARAMS, PAPER_D_PARAMS), counts
  with open(os.path.join(REPO, 'README.md'), encoding='utf-8') as f:
    readme = ' '.join(f.read().split())
  millions = lambda n: f'{round(n / 1e5) / 10:.1f}M'
  assert f'G {millions(PAPER_G_PARAMS)} and D {millions(PAPER_D_PARAMS)} parameters' in readme
  assert (millions(PAPER_G_PARAMS), millions(PAPER_D_PARAMS)) == ('682.8M', '383.0M')


def test_bfloat16_compute_with_float32_params_tracks_float32():
  config, g, d, g_vars, d_vars, z, text = _setup('float32', 'configs/t2i_micro.py')
  config.generator.dtype = config.discriminator.dtype = 'bfloat16'
  g16, d16 = build_models(config, make_tokenizer(config.text).vocab_size)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(g_vars))
  p32, p16 = jax.jit(g.apply)(g_vars, z, text), jax.jit(g16.apply)(g_vars, z, text)
  for a, b in zip(p32, p16):
    assert b.dtype == jnp.float32 and np.isfinite(np.asarray(b)).all()
    assert float(jnp.linalg.norm(a - b) / jnp.linalg.norm(a)) < 0.05
  l32, l16 = jax.jit(d.apply)(d_vars, p32, text), jax.jit(d16.apply)(d_vars, p32, text)
  for k in l32:
    assert float(jnp.linalg.norm(l32[k] - l16[k]) / (jnp.linalg.norm(l32[k]) + 1e-6)) < 0.1
  # Gradients flow in bf16 too.
  grads = jax.jit(jax.grad(lambda p: jnp.mean(g16.apply(p, z, text)[0] ** 2)))(g_vars)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(grads))


def test_auto_conv_impl_mixes_both_forms_with_their_numerics():
  """conv_impl='auto' picks the form per layer (modulated_conv.choose_impl): t2i_micro's
  G with banks of 2 gets both, as on an accelerator, and draws what G all-'fused'
  and G all-'grouped' draw."""
  def auto_banks_of_two(config):
    config.generator.kernel_bank = (2, 2, 2, 2)
    config.generator.conv_impl = 'auto'
  config, g, _, g_vars, _, z, text = _setup('float32', 'configs/t2i_micro.py', auto_banks_of_two)
  with auto_backend('gpu'):
    assert set(chosen_impls(g.init, jax.random.key(1), z, text).values()) == {'fused', 'grouped'}
    programs, images = {}, {}
    for impl in ('auto', 'fused', 'grouped'):
      config.generator.conv_impl = impl
      g = build_models(config, make_tokenizer(config.text).vocab_size)[0]
      programs[impl] = str(jax.make_jaxpr(g.apply)(g_vars, z, text))
      images[impl] = jax.jit(g.apply)(g_vars, z, text)[0]
  assert len(set(programs.values())) == 3  # 'auto' is neither form throughout
  for impl in ('fused', 'grouped'):
    np.testing.assert_allclose(images['auto'], images[impl], atol=1e-4, rtol=1e-4)


def test_remat_policies_keep_the_gradients():
  """generator.remat and discriminator.remat recompute activations in the
  backward pass (nn/remat.py): same parameters, same gradients of G and D."""
  config, g, d, g_vars, d_vars, z, text = _setup('float32', 'configs/t2i_micro.py')

  def grads(policy):
    config.generator.remat = config.discriminator.remat = policy
    g, d = build_models(config, make_tokenizer(config.text).vocab_size)
    loss = lambda gv, dv: sum(jnp.mean(v) for v in d.apply(dv, g.apply(gv, z, text), text).values())
    return jax.jit(jax.grad(loss, argnums=(0, 1)))(g_vars, d_vars)

  ref = grads('none')
  for policy in ('full', 'convs'):
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(grads(policy))):
      assert float(jnp.linalg.norm(a - b)) <= 1e-4 * float(jnp.linalg.norm(a)) + 1e-7, policy


@pytest.mark.parametrize('axes', [(2, 2, 1), (1, 2, 2)])
def test_remat_and_auto_forms_sharded_equal_one_device(axes):
  """On a mesh of 4 devices, with parameters sharded by the logical rules,
  activations kept on the batch sharding and weight-stationary layers where
  mesh.conv_weights='auto' takes them, G with remat 'full', D with remat
  'convs' and conv_impl 'auto' (both forms, as on an accelerator) give one
  device's gradients of G and D. (On a (2, 2, 2) mesh XLA's SPMD partitioner
  aborts on the grouped form's conv: `convolution_handler.cc` CHECK
  `new_input_batch_size % new_output_batch_size == 0`, with gathered kernels
  too.)"""
  def edit(config):
    config.generator.kernel_bank = (2, 2, 2, 2)
    config.generator.conv_impl = 'auto'
    config.generator.remat, config.discriminator.remat = 'full', 'convs'

  with auto_backend('gpu'):
    config, g, d, g_vars, d_vars, z, text = _setup('float32', 'configs/t2i_micro.py', edit)
    loss = lambda gv, dv, z, text: sum(
        jnp.mean(v) for v in d.apply(dv, g.apply(gv, z, text), text).values())
    ref = jax.jit(jax.grad(loss, argnums=(0, 1)))(g_vars, d_vars, z, text)

    data, fsdp, tensor = axes
    mesh = parallel.make_mesh(ml_collections.ConfigDict({'data': data, 'fsdp': fsdp, 'tensor': tensor}),
                              jax.devices()[:math.prod(axes)])
    boxed = abstract_variables(config, make_tokenizer(config.text).vocab_size, batch=len(PROMPTS))
    params = [jax.device_put(v, parallel.logical_shardings(b, mesh))
              for v, b in zip((g_vars, d_vars), boxed)]
    batch = jax.tree.map(lambda x: jax.device_put(x, parallel.batch_sharding(mesh, x.ndim)),
                         [z, text])

    def on_mesh(*args):
      with parallel.activation_mesh(mesh):
        return loss(*args)

    grads = jax.jit(jax.grad(on_mesh, argnums=(0, 1)))(*params, *batch)
  for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(grads)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-3, atol=1e-5)


# What one forward pass of t2i_tiny (4 images at 32 px) may cost, in XLA's
# own FLOP count: the README's CPU training (minutes on 2 cores,
# configs/t2i_tiny.py) needs the tiny model to stay this small.
# Measured: G 0.64 GFLOP, D 0.63 GFLOP.
TINY_FORWARD_FLOPS = 1.0e9


def test_tiny_forward_passes_are_cheap(tiny):
  """Counted, not timed: the compiled forward passes' FLOPs are under budget."""
  _, g, d, g_vars, d_vars, z, text = tiny
  pyramid = jax.eval_shape(g.apply, g_vars, z, text)
  for name, fn, args in (('G', g.apply, (g_vars, z, text)), ('D', d.apply, (d_vars, pyramid, text))):
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    assert 0 < cost['flops'] < TINY_FORWARD_FLOPS, (name, cost['flops'])
