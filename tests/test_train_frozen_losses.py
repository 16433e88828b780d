"""The t2i train step with the losses on a frozen CLIP (CLIP loss, Eq. 9; vision-aided D).

One tiny random Hugging Face CLIP (conftest.save_tiny_hf_clip: 32 px images,
16 px patches, 2 layers) with a tiny BPE vocabulary beside it; configs/t2i_micro.py
with both losses on, on one device; one compiled step (R1 every step) shared by
the tests of this module.
"""
import dataclasses
import json
import string

import jax
import numpy as np
import pytest

import conftest
from gigagan_jax import config_utils, parallel
from gigagan_jax.config_utils import ConfigError, validate
from gigagan_jax.frozen import clip_loss, clip_model
from gigagan_jax.text.clip import CLIPTextConfig
from gigagan_jax.text.tokenizer import make_tokenizer
from gigagan_jax.train import frozen_losses, loop
from gigagan_jax.train import state as state_lib
from gigagan_jax.train import checkpoint
from gigagan_jax.train.checkpoint import config_to_dict, diff_configs, with_added_defaults
from gigagan_jax.train.sr_step import make_sr_train_step
from gigagan_jax.train.step import BATCH_NDIMS, batch_ndims, jit_train_step, make_train_step

pytestmark = pytest.mark.slow

CAPTIONS = ['a red circle', 'two blue squares', 'a green star', 'a yellow triangle',
            'one big red square', 'three small circles', 'a white star', 'a blue circle']


def write_tiny_clip_vocab(directory):
  """vocab.json + merges.txt of a CLIP BPE with ids < conftest.CLIP_VOCAB: letters and
  digits, alone and word-final, no merges; start / end at the tiny CLIP's 97 / 98."""
  vocab = {}
  for i, ch in enumerate(string.ascii_lowercase + string.digits):
    vocab[ch], vocab[ch + '</w>'] = 1 + i, 37 + i
  vocab['<|startoftext|>'], vocab['<|endoftext|>'] = 97, conftest.CLIP_EOS
  (directory / 'vocab.json').write_text(json.dumps(vocab))
  (directory / 'merges.txt').write_text('#version: 0.2\n')


def make_tiny_clip_dir(directory) -> str:
  """A tiny random CLIPModel (32 px images, 16 px patches, 2 layers each tower) with
  its vocabulary, in `directory` (a pathlib.Path); returns it as a str for loss.clip_dir."""
  conftest.save_tiny_hf_clip(directory, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                             num_attention_heads=4, image_size=32, patch_size=16)
  write_tiny_clip_vocab(directory)
  return str(directory)


def tiny_clip_config() -> clip_model.CLIPConfig:
  """make_tiny_clip_dir's sizes (conftest.save_tiny_hf_clip's text tower)."""
  return clip_model.CLIPConfig(
      vision=clip_model.CLIPVisionConfig(hidden_size=32, intermediate_size=40,
                                         num_hidden_layers=2, num_attention_heads=4,
                                         image_size=32, patch_size=16),
      text=CLIPTextConfig(vocab_size=conftest.CLIP_VOCAB, hidden_size=32, intermediate_size=37,
                          num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=16,
                          projection_dim=24),
      projection_dim=24)


def random_tiny_clip(config):
  """(clip_cfg, frozen) of a randomly initialised tiny CLIP, without torch: for
  step tests that need the losses on, not trained CLIP weights. loss.clip_dir
  must hold write_tiny_clip_vocab's files (the CLIP loss tokenizes with them)."""
  clip_cfg = tiny_clip_config()
  return clip_cfg, frozen_losses.random_frozen(config, clip_cfg)


# Both frozen-CLIP losses on at weight 1, for make_tiny_clip_dir's CLIP, with one
# tiny head on its first layer (several taps: tests/test_frozen.py; one keeps the
# compiled step small); loss.clip_dir is to be added.
FROZEN_OVERRIDES = {
    'loss.clip_weight': 1.0, 'loss.vision_aided_weight': 1.0, 'loss.vision_aided_layers': (1,),
    'loss.vision_aided_proj_dim': 8, 'loss.vision_aided_channels': 8}


@pytest.fixture(scope='module')
def clip_dir(tmp_path_factory):
  return make_tiny_clip_dir(tmp_path_factory.mktemp('tiny_clip'))


def frozen_config(clip_dir, **overrides):
  """t2i_micro with the CLIP loss and the vision-aided D on, R1 every step."""
  config = conftest.micro_config()
  config.update_from_flattened_dict({**FROZEN_OVERRIDES, 'loss.clip_dir': clip_dir,
                                     'loss.r1_interval': 1, **overrides})
  return validate(config, check_files=True)


def smooth_images(seed, n=8, side=32):
  """uint8 [n, side, side, 3] with some structure (random walks), not white noise."""
  rng = np.random.default_rng(seed)
  x = np.tanh(np.cumsum(rng.normal(size=(n, side, side, 3)), axis=1) / 4)
  return ((x + 1) * 127.5).astype(np.uint8)


@pytest.fixture(scope='module')
def run(clip_dir):
  config = frozen_config(clip_dir)
  mesh = parallel.make_mesh(config.mesh, jax.devices()[:1])
  tokenizer = make_tokenizer(config.text)
  parts = state_lib.build(config, mesh, tokenizer.vocab_size, 0)
  clip_cfg, frozen = frozen_losses.load(config)
  step = jit_train_step(make_train_step(parts.g, parts.d, parts.g_tx, parts.d_tx, config,
                                        clip_cfg=clip_cfg), parts.shardings, mesh,
                        batch_ndims(config))
  batch = dict(frozen_losses.batch_tokenizer(config, tokenizer, clip_cfg)(CAPTIONS),
               image=smooth_images(0))
  batch = parallel.global_batch({k: np.asarray(batch[k]) for k in batch_ndims(config)}, mesh)
  return config, parts, clip_cfg, frozen, step, batch


def test_batch_carries_clip_tokens_of_the_clip_vocabulary(run):
  config, _, clip_cfg, _, _, batch = run
  assert clip_cfg == dataclasses.replace(tiny_clip_config(), name=clip_cfg.name)
  # The torch-free random stand-in has the loaded weights' tree and shapes.
  shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)
  assert shapes(random_tiny_clip(config)[1]) == shapes(run[3])
  assert set(batch) == set(BATCH_NDIMS) | {'clip_tokens', 'clip_eot'}
  tokens = np.asarray(batch['clip_tokens'])
  assert tokens.shape == (8, clip_cfg.text.max_position_embeddings)
  assert tokens.max() < clip_cfg.text.vocab_size and np.all(tokens[:, 0] == 97)
  eot = np.asarray(batch['clip_eot'])
  assert np.all(tokens[np.arange(8), eot] == conftest.CLIP_EOS)
  assert frozen_losses.VA_KEY in run[1].abstract['d']  # the heads are D's params


def test_frozen_params_bitwise_unchanged_and_heads_trained(run):
  config, parts, _, frozen, step, batch = run
  before = jax.tree.map(np.array, frozen)
  state = parts.init(config)
  heads_before = jax.device_get(state['d'][frozen_losses.VA_KEY])
  new_state, metrics = step(state, batch, frozen)
  metrics = jax.device_get(metrics)
  for key in ('clip', 'd_va', 'g_va', 'd_loss', 'g_loss'):
    assert np.isfinite(metrics[key]), (key, metrics)
  assert not metrics['skipped']
  same = jax.tree.map(np.array_equal, before, jax.device_get(frozen))
  assert all(jax.tree.leaves(same))
  moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), heads_before,
                       jax.device_get(new_state['d'][frozen_losses.VA_KEY]))
  assert all(jax.tree.leaves(moved)), moved
  # Nothing of CLIP's is in the state: D's tree is D's modules plus the heads.
  assert not set(new_state) - set(state) and 'clip' not in new_state['d']


def test_clip_metric_equals_eq9_recomputed_from_gs_output(run):
  config, parts, clip_cfg, frozen, step, batch = run
  state = parts.init(config)
  g_params, key = jax.device_get((state['g'], state['key']))
  _, metrics = step(state, batch, frozen)

  # G's images of the G update: z from the step's second key (step.py).
  k_gz = jax.random.split(jax.random.fold_in(key, 0), 4)[1]
  z = jax.random.normal(k_gz, (8, config.generator.z_dim))
  text = {'tokens': batch['tokens'], 'eot': batch['eot']}

  @jax.jit
  def embeddings(g_params, z):
    fake = parts.g.apply({'params': g_params}, z, text)[0]
    return clip_loss.clip_embeddings(clip_model.CLIPWeights(frozen['clip'], clip_cfg), fake,
                                     batch['clip_tokens'], batch['clip_eot'])

  img, txt = (np.asarray(e, np.float64) for e in embeddings(g_params, z))
  img /= np.linalg.norm(img, axis=1, keepdims=True)
  txt /= np.linalg.norm(txt, axis=1, keepdims=True)
  logits = img @ txt.T / config.loss.clip_temperature
  top = logits.max(axis=1)
  lse = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
  expected = np.mean(lse - np.diag(logits))
  np.testing.assert_allclose(float(metrics['clip']), expected, rtol=2e-4)
  # G's loss holds it with weight 1, next to the adversarial and vision-aided terms.
  assert float(metrics['g_loss']) > float(metrics['clip'])


def test_clip_loss_and_vision_aided_d_loss_fall_on_a_fixed_batch(run):
  config, parts, _, frozen, step, batch = run
  state, history = parts.init(config), []
  for _ in range(8):
    state, metrics = step(state, batch, frozen)
    history.append({k: float(metrics[k]) for k in ('clip', 'd_va', 'g_va')})
  print('clip / d_va / g_va:', [(round(h['clip'], 3), round(h['d_va'], 3), round(h['g_va'], 3))
                                for h in history])
  # Each step draws new z, so single values are noisy: compare the first and last three.
  mean = lambda key, part: np.mean([h[key] for h in part])
  assert mean('clip', history[-3:]) < mean('clip', history[:3]) - 0.2, history
  assert mean('d_va', history[-3:]) < mean('d_va', history[:3]) - 0.1, history


def test_every_loss_on_gives_the_same_steps_on_a_2x2x2_mesh(run):
  """Data, fsdp and tensor parallelism with all of G's and D's losses on (Eq. 8,
  R1, CLIP, vision-aided): two steps' losses equal the single-device ones, and
  so do the weights, up to float32 reduction order."""
  config, parts, clip_cfg, frozen, step, batch = run
  host = jax.device_get(batch)
  sharded = config.copy_and_resolve_references()
  sharded.mesh.data, sharded.mesh.fsdp, sharded.mesh.tensor = 2, 2, 2
  mesh = parallel.make_mesh(sharded.mesh, jax.devices())
  parts8 = state_lib.build(sharded, mesh, make_tokenizer(config.text).vocab_size, 0)
  step8 = jit_train_step(make_train_step(parts8.g, parts8.d, parts8.g_tx, parts8.d_tx, sharded,
                                         clip_cfg=clip_cfg), parts8.shardings, mesh,
                         batch_ndims(config))
  # The mesh splits weights on 'fsdp' and 'tensor' (the test of tensor parallelism).
  specs = [str(x.spec) for x in jax.tree.leaves(parts8.shardings['g'])]
  assert any("'tensor'" in p for p in specs) and any("'fsdp'" in p for p in specs)
  keys = ('d_loss', 'g_loss', 'r1', 'clip', 'd_va', 'g_va', 'd_match_real', 'g_match')

  def two_steps(parts, step, batch, frozen):
    state, losses = parts.init(config), []
    for _ in range(2):
      state, metrics = step(state, batch, frozen)
      losses.append([float(metrics[k]) for k in keys])
    return jax.device_get(state), np.array(losses)

  ref_state, ref = two_steps(parts, step, batch, frozen)
  state, got = two_steps(parts8, step8, parallel.global_batch(host, mesh),
                         jax.device_put(jax.device_get(frozen),
                                        jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())))
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5, err_msg=str(keys))
  for key in ('g', 'd'):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(ref_state[key]),
                            jax.tree.leaves(state[key])):
      # Adam (beta1 0) moves a weight whose gradient is rounding noise by about
      # the learning rate, in a direction the mesh's reduction order picks.
      off = ~np.isclose(x, y, rtol=1e-3, atol=2e-5)
      assert off.sum() <= max(1, 1e-3 * off.size) and np.all(
          np.abs(x - y)[off] <= 4 * config.optim.g_lr), jax.tree_util.keystr(path)


# ------------------------------------------------------------------ config


def test_base_config_declares_the_frozen_loss_fields_with_their_defaults():
  loss = conftest.micro_config().loss
  for field, default, _ in config_utils.FROZEN_LOSS_FIELDS:
    assert tuple(np.atleast_1d(loss[field])) == tuple(np.atleast_1d(default)), field


def test_a_run_saved_before_the_fields_existed_resumes_without_a_config_change():
  current = config_to_dict(conftest.micro_config())
  fields = ({f for f, _, _ in config_utils.FROZEN_LOSS_FIELDS} |
            {f for f, _ in checkpoint._ADDED_LOSS_FIELDS})
  for field, default in checkpoint._ADDED_LOSS_FIELDS:  # the defaults the base config declares
    assert current['loss'][field] == default, field
  saved = dict(current, loss={k: v for k, v in current['loss'].items() if k not in fields},
               optim={k: v for k, v in current['optim'].items() if k != 'lr_schedule'})
  assert diff_configs(saved, current)  # each added field would count as a change
  assert diff_configs(with_added_defaults(saved), current) == []
  current['loss']['clip_weight'] = 1.0  # turning a loss on is one
  assert diff_configs(with_added_defaults(saved), current) == [
      'loss.clip_weight: saved 0.0, now 1.0']


def test_both_weights_at_zero_leave_the_state_as_it_was(clip_dir):
  """Fields set but weights 0: no heads in D, no CLIP entries in the batch."""
  config = frozen_config(clip_dir, **{'loss.clip_weight': 0.0, 'loss.vision_aided_weight': 0.0})
  plain = conftest.micro_config()
  g, d = jax.eval_shape(lambda: state_lib.init_params(*state_lib.build_models(config, 259),
                                                      config, jax.random.key(0), 0))
  g0, d0 = jax.eval_shape(lambda: state_lib.init_params(*state_lib.build_models(plain, 259),
                                                        plain, jax.random.key(0), 0))
  assert jax.tree.structure((g, d)) == jax.tree.structure((g0, d0))
  assert frozen_losses.VA_KEY not in d
  assert batch_ndims(config) == BATCH_NDIMS


def test_config_errors_name_the_field(clip_dir, tmp_path):
  def error(**overrides):
    config = conftest.micro_config()
    config.update_from_flattened_dict(overrides)
    with pytest.raises(ConfigError) as info:
      validate(config, check_files=True)
    return str(info.value)

  assert error(**{'loss.clip_weight': 1.0}).startswith(
      'config.loss.clip_dir: loss.clip_weight > 0 needs CLIP weights')
  assert error(**{'loss.vision_aided_weight': 1.0}).startswith(
      'config.loss.clip_dir: loss.vision_aided_weight > 0 needs CLIP weights')
  missing = str(tmp_path / 'nowhere')
  assert error(**{'loss.clip_weight': 1.0, 'loss.clip_dir': missing}).startswith(
      f'config.loss.clip_dir: {missing!r} is not a directory')
  (tmp_path / 'empty').mkdir()
  assert 'has no config.json' in error(**{'loss.vision_aided_weight': 1.0,
                                          'loss.clip_dir': str(tmp_path / 'empty')})
  assert error(**{'loss.clip_weight': 1.0, 'loss.clip_dir': clip_dir,
                  'data.batch_size': 1}).startswith('config.data.batch_size: ')
  assert error(**{'loss.vision_aided_weight': 1.0, 'loss.clip_dir': clip_dir}).startswith(
      'config.loss.vision_aided_layers: ')  # (4, 8, 12) in a 2-layer tower
  # Without the files, validation without check_files passes: sizing tools work.
  config = conftest.micro_config()
  config.loss.clip_weight = 1.0
  validate(config)
  # The trainer checks the files first, before building anything.
  with pytest.raises(ConfigError, match=r'^config\.loss\.clip_dir: '):
    loop.train(config, str(tmp_path / 'run'))


def test_clip_loss_without_a_clip_vocabulary_names_clip_dir(clip_dir, tmp_path):
  import shutil
  bare = tmp_path / 'bare'
  shutil.copytree(clip_dir, bare)
  (bare / 'vocab.json').unlink()
  config = conftest.micro_config()
  config.update_from_flattened_dict({'loss.clip_weight': 1.0, 'loss.clip_dir': str(bare)})
  with pytest.raises(ConfigError, match=r"^config\.loss\.clip_dir: .*vocab\.json.*'byte'"):
    validate(config, check_files=True)


def test_sr_step_adds_the_clip_loss_to_g(clip_dir):
  """Traced, not compiled (jax.eval_shape): the upsampler's step with the CLIP loss on."""
  config = config_utils.load_config('configs/up_tiny.py')
  config.data.resolution, config.data.degradation.hr_size, config.data.batch_size = 64, 32, 4
  config.discriminator.channels, config.discriminator.levels = (32, 32, 16, 16), 2
  config.update_from_flattened_dict({'loss.clip_weight': 1.0, 'loss.clip_dir': clip_dir})
  config = validate(config, check_files=True)
  mesh = parallel.make_mesh(config.mesh, jax.devices()[:1])
  tokenizer = make_tokenizer(config.text)
  parts = state_lib.build(config, mesh, tokenizer.vocab_size, 0)
  clip_cfg, frozen = frozen_losses.load(config)
  assert set(frozen) == {'clip'} and frozen_losses.VA_KEY not in parts.abstract['d']
  step = make_sr_train_step(parts.g, parts.d, parts.g_tx, parts.d_tx, config, clip_cfg=clip_cfg)
  batch = dict(frozen_losses.batch_tokenizer(config, tokenizer, clip_cfg)(CAPTIONS[:4]),
               image=smooth_images(1, 4), lr=smooth_images(2, 4, 32 // config.upsampler.scale))
  assert set(batch) == set(batch_ndims(config))
  _, metrics = jax.eval_shape(lambda s, b: step(s, b, dict(frozen, backbone={}, lpips={}), False),
                              parts.abstract, batch)
  assert {'clip', 'pixel', 'g_adv', 'g_loss'} <= set(metrics)


def test_sr_refuses_the_vision_aided_d():
  config = config_utils.load_config('configs/up_tiny.py')
  config.loss.vision_aided_weight = 1.0
  with pytest.raises(ConfigError, match=r'^config\.loss\.vision_aided_weight: '):
    validate(config)
