"""The optimisers: weight decay reaches exactly the attention weights
(state.attention_mask), and the learning-rate schedule (state.learning_rate)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from gigagan_jax.config_utils import ConfigError, load_config, validate
from gigagan_jax.models.build import abstract_variables
from gigagan_jax.train import state

# configs/t2i_micro.py has one attention resolution (8 px) in G and D and one
# text-encoder block in each. Decayed: the query/key/value/output projections
# of every attention layer (state.ATTENTION_PROJECTIONS), nothing else.
TEXT_ATTN = {f'text_encoder/block_0/attn/{p}/kernel' for p in ('query', 'key', 'value', 'out')}
G_DECAYED = TEXT_ATTN | {
    'b8_layer0/self_attn/qk/kernel', 'b8_layer0/self_attn/v/kernel',
    'b8_layer0/self_attn/out/kernel', 'b8_layer0/self_attn/w_token/kernel',
    'b8_layer0/cross_attn/q/kernel', 'b8_layer0/cross_attn/k/kernel',
    'b8_layer0/cross_attn/v/kernel', 'b8_layer0/cross_attn/out/kernel'}
D_DECAYED = TEXT_ATTN | {
    'stage8/self_attn/qk/kernel', 'stage8/self_attn/v/kernel', 'stage8/self_attn/out/kernel'}


def _name(path) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def _params(spec: str):
  path, _, arg = spec.partition(':')
  config = validate(load_config(path, arg or None))
  g, d = abstract_variables(config, vocab_size=300)  # jax.eval_shape: no memory, no compile
  return config, nn.meta.unbox(g)['params'], nn.meta.unbox(d)['params']


def _decayed(params) -> set:
  return {_name(p) for p, m in jax.tree_util.tree_leaves_with_path(state.attention_mask(params))
          if m}


@pytest.fixture(scope='module')
def micro():
  return _params('configs/t2i_micro.py')


def test_mask_is_the_attention_projections_of_g_and_d(micro):
  _, g, d = micro
  assert _decayed(g) == G_DECAYED
  assert _decayed(d) == D_DECAYED
  # What sits next to them and must not decay is in the tree (the sets above
  # exclude it for a reason, not because it is absent): the MLP inside the
  # attention modules, the text encoder's attention biases and LayerNorms.
  names = {_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(g)}
  for kept in ('b8_layer0/self_attn/mlp/fc1/kernel', 'b8_layer0/cross_attn/mlp/fc2/kernel',
               'text_encoder/block_0/attn/query/bias', 'text_encoder/block_0/ln_attn/scale',
               'text_encoder/block_0/mlp_in/kernel', 'b8_layer0/conv/bank', 'mapping/fc0/kernel'):
    assert kept in names, kept


def test_swinir_baseline_is_not_decayed():
  """SwinIR's window attention is not GigaGAN's; it trains as its paper does, without decay."""
  _, g, _ = _params('configs/sr_baselines.py:swinir')
  assert any('/attn/qkv/kernel' in _name(p) for p, _ in jax.tree_util.tree_leaves_with_path(g))
  assert not _decayed(g)


def test_one_step_with_zero_gradient_shrinks_only_decayed_weights(micro):
  """AdamW's update with a zero gradient is -lr * wd * param on masked leaves, 0 elsewhere."""
  config, g, _ = micro
  lr, wd = 0.5, config.optim.attn_weight_decay
  assert wd > 0
  params = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), g)
  tx = state.make_optimizer(config.optim, lr)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  stepped = optax.apply_updates(params, updates)
  for path, x in jax.tree_util.tree_leaves_with_path(stepped):
    if _name(path) in G_DECAYED:
      np.testing.assert_allclose(np.asarray(x), 1 - lr * wd, rtol=1e-6, err_msg=_name(path))
    else:
      np.testing.assert_array_equal(np.asarray(x), 1.0, err_msg=_name(path))


def test_lr_schedule_scales_each_update_by_its_multiplier(micro):
  """Adam's moments do not depend on the learning rate, so with the same
  gradients the scheduled optimiser's k-th update is the constant one's times
  the schedule at k (optim.lr_schedule, counted in updates)."""
  config, _, _ = micro
  params = {'w': jnp.ones((3, 4)), 'b': jnp.zeros((4,))}
  const = state.make_optimizer(config.optim, 0.01)
  cfg = config.optim.copy_and_resolve_references()
  cfg.lr_schedule = ((0, 1.0), (2, 1.0), (4, 0.1))
  sched = state.make_optimizer(cfg, 0.01)
  s_const, s_sched = const.init(params), sched.init(params)
  for k, multiplier in enumerate((1.0, 1.0, 1.0, 0.55, 0.1, 0.1)):
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(k), p.shape), params)
    u_const, s_const = const.update(grads, s_const, params)
    u_sched, s_sched = sched.update(grads, s_sched, params)
    for a, b in zip(jax.tree.leaves(u_sched), jax.tree.leaves(u_const)):
      np.testing.assert_allclose(a, multiplier * b, rtol=1e-5, err_msg=f'update {k}')


def _on_the_budgets_clock(config):
  """config with a 4-step schedule on a one-minute budget's clock."""
  config = config.copy_and_resolve_references()
  config.optim.lr_schedule = ((0, 1.0), (2, 1.0), (4, 0.1))
  config.optim.lr_schedule_clock = 'budget'
  config.train.steps, config.train.max_minutes = 4, 1.0
  return validate(config)


def test_budget_clock_gives_the_steps_schedule_while_the_steps_lead(micro):
  """With no time spent, the budget's clock (a constant-rate optimiser whose
  updates the step scales by state.lr_multiplier) gives the updates of the
  steps' clock (the schedule inside optax, by update count)."""
  config = _on_the_budgets_clock(micro[0])
  by_steps = config.optim.copy_and_resolve_references()
  by_steps.lr_schedule_clock = 'steps'
  scheduled, flat = state.make_optimizer(by_steps, 0.01), state.make_optimizer(config.optim, 0.01)
  params = {'w': jnp.ones((3, 4)), 'b': jnp.zeros((4,))}
  s_sched, s_flat = scheduled.init(params), flat.init(params)
  for k in range(6):
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(k), p.shape), params)
    u_sched, s_sched = scheduled.update(grads, s_sched, params)
    u_flat, s_flat = flat.update(grads, s_flat, params)
    multiplier = state.lr_multiplier(config, {'step': jnp.int32(k), 'budget_s': jnp.float32(0)})
    for a, b in zip(jax.tree.leaves(u_sched), jax.tree.leaves(u_flat)):
      np.testing.assert_allclose(a, multiplier * b, rtol=1e-6, err_msg=f'update {k}')


@pytest.mark.parametrize('step, seconds, position, multiplier', [
    (1, 0.0, 1.0, 1.0), (1, 30.0, 2.0, 1.0), (3, 30.0, 3.0, 0.55), (0, 45.0, 3.0, 0.55),
    (2, 120.0, 8.0, 0.1)])
def test_budget_clock_reads_the_schedule_at_the_budgets_share_of_the_steps(
    micro, step, seconds, position, multiplier):
  """Position: the larger of the step and seconds / 60 s of the 4 steps."""
  config = _on_the_budgets_clock(micro[0])
  np.testing.assert_allclose(state.lr_position(config, step, jnp.float32(seconds)), position)
  np.testing.assert_allclose(
      state.lr_multiplier(config, {'step': jnp.int32(step), 'budget_s': jnp.float32(seconds)}),
      multiplier, rtol=1e-6)
  assert state.lr_multiplier(micro[0], {'step': jnp.int32(step)}) is None  # the steps' clock


@pytest.mark.parametrize('field, value, message', [
    ('optim.lr_schedule_clock', 'wall', "'steps' or 'budget'"),
    ('train.max_minutes', 0.0, 'set train.max_minutes'),
    ('optim.lr_schedule', (), 'which is empty')])
def test_bad_budget_clock_names_the_field(micro, field, value, message):
  config = _on_the_budgets_clock(micro[0])
  block, name = field.split('.')
  config[block][name] = value
  with pytest.raises(ConfigError, match=f'optim.lr_schedule_clock.*{message}'):
    validate(config)


def test_bad_lr_schedule_names_the_field():
  config = load_config('configs/t2i_micro.py')
  config.optim.lr_schedule = ((10, 1.0), (5, 0.1))
  with pytest.raises(ConfigError, match='optim.lr_schedule'):
    validate(config)
