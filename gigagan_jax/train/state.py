"""Train state: a plain dict of arrays, its optimisers, and its shardings.

  state = {
    'step': int32 [],                 training steps done
    'key': uint32 [2],                base PRNG key; step keys are fold_in(key, step)
    'g', 'd', 'ema': param trees,     G, D and G's exponential moving average
    'g_opt', 'd_opt': optax states,
    'skips': int32 [],                consecutive steps skipped as non-finite
    'total_skips': int32 [],
    'budget_s': float32 [],           training seconds so far (optim.lr_schedule_clock='budget' only)
  }

D's tree includes the vision-aided heads when that loss is on (init_params).

Shardings come from the parameters' logical axis names (parallel.LOGICAL_RULES);
optimizer moments follow their parameters, scalars are replicated.
"""
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from gigagan_jax import losses, parallel
from gigagan_jax.models.build import build_models, example_g_inputs, example_pyramid, example_text
from gigagan_jax.train import frozen_losses


# Weight decay on attention weights only. The paper stabilises attention in
# G and D with, among other things, "weight decay on attention weights (0.01)"
# (PAPER_NOTES.md 1.5 (c); Table A2 lists "attention weight decay 0.01" with
# AdamW, PAPER_NOTES.md 3 and 5). We read "attention weights" as the
# projection matrices that make an attention layer's queries, keys, values
# and output: the ones that set how sharp the attention logits can grow
# (the L2 logit is quadratic in the tied query/key matrix). Not decayed: the
# FeedForward MLP that follows attention inside the same module ('mlp': not
# attention), biases, LayerNorms, and every conv, style, mapping and
# embedding weight. The layers, by module name -> projection names:
ATTENTION_PROJECTIONS = {
    # nn/attention.py SelfAttention (G, D, upsampler); w_token turns w into
    # the extra key/value token, so it feeds the logits like qk does.
    'self_attn': ('qk', 'v', 'out', 'w_token'),
    'cross_attn': ('q', 'k', 'v', 'out'),        # nn/attention.py CrossAttention
    # The learned text encoder T's attention (text/encoder.py Block 'attn'),
    # the paper's "learned attention layers" on top of the frozen backbone.
    # SwinIR's 'attn' (projections 'qkv', 'proj') is not GigaGAN attention and
    # is trained as its paper trains it, without weight decay.
    'attn': ('query', 'key', 'value', 'out'),
}


def _is_attention_weight(path) -> bool:
  """True for .../<attention layer>/<projection>/kernel (see ATTENTION_PROJECTIONS)."""
  keys = [str(getattr(k, 'key', k)) for k in path]
  return (len(keys) >= 3 and keys[-1] == 'kernel'
          and keys[-2] in ATTENTION_PROJECTIONS.get(keys[-3], ()))


def attention_mask(params):
  """True for the attention projection kernels: the ones the paper's 0.01
  weight decay applies to (see ATTENTION_PROJECTIONS)."""
  return jax.tree_util.tree_map_with_path(lambda p, _: _is_attention_weight(p), params)


def budget_clock(optim_cfg) -> bool:
  """Whether optim.lr_schedule runs on the time budget's clock (the step
  scales the updates, lr_multiplier) instead of the optimiser's count."""
  return optim_cfg.get('lr_schedule_clock', 'steps') == 'budget'


def learning_rate(optim_cfg, lr: float):
  """`lr`, or with optim.lr_schedule's (step, multiplier) points a function of
  the optimiser's update count (losses.piecewise_linear), e.g. a decay to a
  tenth over a run's last quarter. The count is the train step less the steps
  skipped as non-finite, which do not update the optimiser. On the budget's
  clock, `lr`: the step applies the schedule (lr_multiplier)."""
  points = tuple(optim_cfg.get('lr_schedule', ()))
  if not points or budget_clock(optim_cfg):
    return lr
  return lambda count: lr * losses.piecewise_linear(points, count)


def lr_position(config, step, budget_s):
  """Where optim.lr_schedule is read on the budget's clock, in steps: the
  larger of `step` and the budget's share spent, budget_s / (60 *
  train.max_minutes), of train.steps. So the schedule ends at train.steps or
  at the budget, whichever comes first. float32 []."""
  share = budget_s / (60.0 * config.train.max_minutes)
  return jnp.maximum(jnp.asarray(step, jnp.float32), share * config.train.steps)


def lr_multiplier(config, state):
  """The schedule's multiplier of both learning rates this step, float32 [],
  on the budget's clock; None on the steps' clock (optax applies it)."""
  if not budget_clock(config.optim):
    return None
  position = lr_position(config, state['step'], state['budget_s'])
  return losses.piecewise_linear(tuple(config.optim.lr_schedule), position)


def make_optimizer(optim_cfg, lr: float) -> optax.GradientTransformation:
  """AdamW with weight decay on attention weights only (paper Table A2)."""
  tx = optax.adamw(learning_rate(optim_cfg, lr), b1=optim_cfg.b1, b2=optim_cfg.b2,
                   eps=optim_cfg.eps, weight_decay=optim_cfg.attn_weight_decay,
                   mask=attention_mask)
  if optim_cfg.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(optim_cfg.grad_clip), tx)
  return tx


def make_optimizers(config):
  return (make_optimizer(config.optim, config.optim.g_lr),
          make_optimizer(config.optim, config.optim.d_lr))


def init_params(g, d, config, key, feature_dim: int, batch: int = 2):
  """Boxed (logically partitioned) G and D params.

  With the vision-aided D on (loss.vision_aided_weight > 0) D's tree also
  holds its trainable heads under frozen_losses.VA_KEY: D's optimiser trains
  them and checkpoints save them. Off, the tree is D's alone.
  """
  k_g, k_d = jax.random.split(key)
  g_params = g.init(k_g, *example_g_inputs(config, batch, feature_dim))['params']
  d_params = d.init(k_d, example_pyramid(config, batch),
                    example_text(config, batch, feature_dim))['params']
  if frozen_losses.va_on(config.loss):
    # A key of its own: G's and D's draws stay what they are without the heads.
    heads = frozen_losses.init_va_heads(config, jax.random.fold_in(key, 2))
    d_params = {**d_params, frozen_losses.VA_KEY: heads}
  return g_params, d_params


def init_state(g, d, g_tx, d_tx, config, feature_dim: int):
  """A fresh state (unboxed) from config.seed."""
  key = jax.random.PRNGKey(config.seed)
  g_params, d_params = nn.meta.unbox(init_params(g, d, config, key, feature_dim))
  return {
      'step': jnp.zeros((), jnp.int32),
      'key': jax.random.fold_in(key, 1),
      'g': g_params,
      'd': d_params,
      'ema': jax.tree.map(jnp.copy, g_params),
      'g_opt': g_tx.init(g_params),
      'd_opt': d_tx.init(d_params),
      'skips': jnp.zeros((), jnp.int32),
      'total_skips': jnp.zeros((), jnp.int32),
      **({'budget_s': jnp.zeros((), jnp.float32)} if budget_clock(config.optim) else {}),
  }


def state_shardings(g, d, g_tx, d_tx, config, feature_dim: int, mesh):
  """NamedShardings for every leaf of the state on `mesh`."""
  boxed = jax.eval_shape(
      lambda: init_params(g, d, config, jax.random.PRNGKey(0), feature_dim))
  g_sh, d_sh = parallel.logical_shardings(boxed[0], mesh), parallel.logical_shardings(boxed[1], mesh)
  rep = parallel.replicated(mesh)
  abstract = jax.eval_shape(functools.partial(init_state, g, d, g_tx, d_tx, config, feature_dim))

  def opt_shardings(tx, opt_state, param_sh):
    return optax.tree_map_params(tx, lambda _, s: s, opt_state, param_sh,
                                 transform_non_params=lambda _: rep)

  return {
      'step': rep, 'key': rep, 'skips': rep, 'total_skips': rep,
      **({'budget_s': rep} if budget_clock(config.optim) else {}),
      'g': g_sh, 'd': d_sh, 'ema': g_sh,
      'g_opt': opt_shardings(g_tx, abstract['g_opt'], g_sh),
      'd_opt': opt_shardings(d_tx, abstract['d_opt'], d_sh),
  }


def abstract_state(shardings, g, d, g_tx, d_tx, config, feature_dim: int):
  """ShapeDtypeStructs carrying `shardings`: the restore target for Orbax."""
  shapes = jax.eval_shape(functools.partial(init_state, g, d, g_tx, d_tx, config, feature_dim))
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      shapes, shardings)


def count_params(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


class Parts(NamedTuple):
  """Everything the step, init and restore need for a config on a mesh."""
  g: Any
  d: Any
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation
  shardings: dict   # NamedSharding per state leaf
  abstract: dict    # ShapeDtypeStruct per state leaf, carrying its sharding
  feature_dim: int

  def init(self, config):
    """A fresh state, created directly in its shards."""
    return jax.jit(lambda: init_state(self.g, self.d, self.g_tx, self.d_tx, config,
                                      self.feature_dim), out_shardings=self.shardings)()


def build(config, mesh, vocab_size: int, feature_dim: int) -> Parts:
  g, d = build_models(config, vocab_size)
  g_tx, d_tx = make_optimizers(config)
  shardings = state_shardings(g, d, g_tx, d_tx, config, feature_dim, mesh)
  return Parts(g, d, g_tx, d_tx, shardings,
               abstract_state(shardings, g, d, g_tx, d_tx, config, feature_dim), feature_dim)
