"""One GigaGAN training step: a D update then a G update, as a pure function.

  train_step(state, batch, frozen, do_r1) -> (state, metrics)

batch: {'image': uint8 [B, R, R, 3], 'tokens': int32 [B, L], 'eot': int32 [B]}
(+ 'clip_tokens' int32 [B, Lc], 'clip_eot' int32 [B] with the CLIP loss;
+ 'negative_tokens' / 'negative_eot' with data.hard_negatives, which the
contrastive terms score each image against as well).
frozen: {'backbone': text backbone params, 'clip': CLIP params (CLIP loss),
'vision_aided': the vision-aided D's frozen tree}; absent entries are unused
(train/frozen_losses.py). Frozen params enter through stop_gradient and are
never part of the state.

Losses (weights in config.loss, each optionally scheduled, see
losses.scheduled_weight):
  D: MS-I/O GAN + matching-aware (Eq. 8) + lazy R1
     + vision_aided_weight * vision-aided D loss ('d_va')
     + contrastive_weight * InfoNCE of real images in D's embedding ('d_contrastive')
  G: GAN + matching-aware (unless loss.matching_in_g is off) + clip_weight *
     CLIP loss (Eq. 9, 'clip') + vision_aided_weight * vision-aided G loss ('g_va')
     + contrastive_weight * InfoNCE of G(c) in D's embedding ('g_contrastive')
With loss.d_translate, every D term (not CLIP's) reads the images translated
at random (train/augment.py), by keys of their own (augment_keys).
The G update draws its own latents, or with config.train.shared_fakes trains
on the D update's images through the VJP of that forward pass (one G forward
a step instead of two). Also logged: 'attn_entropy/<layer>' of each G
self-attention layer (0 = every token reads only one, 1 = uniform;
nn/attention.py).
A weight of 0 leaves its term out of the traced program: with both CLIP
weights at 0 the state, the program and the checkpoints are those of a
step without them.
do_r1 is a static Python bool: whether this step adds the lazy R1 penalty.
The host decides it (`r1_due(config.loss, step)`, from the step count it
keeps anyway), so the step compiles into two programs, with and without R1,
and neither pays for the other: no penalty computed and masked, no
conditional (XLA:CPU ran R1 ~20x slower inside one).

Everything random comes from fold_in(state['key'], state['step']), so a step
is a function of the state and the batch alone: resuming from a checkpoint
replays exactly. A step whose losses or gradients are not finite leaves the
parameters and optimiser states untouched and is counted.
"""
import functools

import jax
import jax.numpy as jnp
import optax

from gigagan_jax import losses
from gigagan_jax.nn.attention import collect_attention_entropy
from gigagan_jax.parallel import activation_mesh, batch_sharding, replicated, shard_batch
from gigagan_jax.train import augment, frozen_losses
from gigagan_jax.train.state import lr_multiplier


def real_pyramid(images, levels: int):
  """uint8 [B,R,R,3] -> ([B,R,R,3], [B,R/2,R/2,3], ...) in [-1, 1] by 2x2 box averaging."""
  return box_pyramid(images.astype(jnp.float32) / 127.5 - 1.0, levels)


def box_pyramid(x, levels: int):
  """float [B,R,R,C] -> ([B,R,R,C], [B,R/2,R/2,C], ...) by 2x2 box averaging."""
  out = [x]
  for _ in range(levels - 1):
    b, h, w, c = x.shape
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
    out.append(x)
  return tuple(out)


def ema_beta(train_cfg, batch_size: int, step):
  """Per-step decay of G's EMA; float32 [].

  train_cfg.ema_decay > 0: that decay every step (the paper's 0.9999, which is
  tied to its batch and step count). Otherwise from a half-life in images,
  train_cfg.ema_halflife_kimg (StyleGAN2-ADA), which keeps its meaning when
  the batch changes, with train_cfg.ema_rampup shortening it early on.
  """
  decay = train_cfg.get('ema_decay', 0.0)
  if decay > 0:
    return jnp.asarray(decay, jnp.float32)
  half_life = train_cfg.ema_halflife_kimg * 1000.0
  if train_cfg.ema_rampup:
    half_life = jnp.minimum(half_life, (step + 1) * batch_size * train_cfg.ema_rampup)
  return 0.5 ** (batch_size / jnp.maximum(half_life, 1e-8))


def text_features(backbone, batch, backbone_params, prefix: str = '') -> dict:
  """The text inputs of G and D: tokens, eot and (frozen, no gradient) backbone
  features, from the batch when the loop's FeatureCache put them there.
  prefix 'negative_': those of the hard-negative captions (data.hard_negatives)."""
  text = {'tokens': batch[prefix + 'tokens'], 'eot': batch[prefix + 'eot']}
  if prefix + 'features' in batch:
    text['features'] = batch[prefix + 'features']
  elif backbone is not None:
    text['features'] = jax.lax.stop_gradient(
        backbone.apply(backbone_params, text['tokens'], text['eot']))
  return text


def all_finite(*trees) -> jax.Array:
  """True iff every element of `trees` is finite.

  The sum of squares is non-finite for any inf or NaN element, and XLA shares
  its per-leaf sums with the gradient-norm metrics. It also overflows on
  finite values above ~1e19, so only when it is not finite does the exact
  check run: x * 0 is 0 for finite x and NaN otherwise. That check sits in a
  lax.cond because per-leaf reductions in the step's main body double XLA:CPU's
  compile time (t2i_micro: ~12 s -> ~25 s).
  """
  exact = lambda t: jnp.isfinite(sum(jnp.sum(x * 0) for x in jax.tree.leaves(t)))
  return jax.lax.cond(jnp.isfinite(optax.tree.norm(trees)), lambda t: jnp.bool_(True), exact,
                      trees)


def _inject_nan(grads, fault: jax.Array):
  """`grads` with one NaN element (the first of the last leaf) where `fault`:
  the smallest fault the non-finite guard must still catch."""
  leaves, treedef = jax.tree.flatten(grads)
  first = (0,) * leaves[-1].ndim
  leaves[-1] = leaves[-1].at[first].set(jnp.where(fault, jnp.nan, leaves[-1][first]))
  return jax.tree.unflatten(treedef, leaves)


def _apply_updates(tx, grads, opt_state, params, lr_scale=None):
  """One optimiser update; lr_scale (float32 [], or None) multiplies it, which
  for AdamW is the update at lr * lr_scale (state.lr_multiplier)."""
  updates, opt_state = tx.update(grads, opt_state, params)
  if lr_scale is not None:
    updates = jax.tree.map(lambda u: u * lr_scale.astype(u.dtype), updates)
  return optax.apply_updates(params, updates), opt_state


def r1_due(loss_cfg, step: int) -> bool:
  """Host side: does step `step` (0-based, = state['step'] before it) add lazy R1?"""
  return bool(loss_cfg.r1_gamma > 0 and step % loss_cfg.r1_interval == 0)


def r1_weight(loss_cfg) -> float:
  """gamma/2, times the interval: lazy R1 runs on 1/interval of the steps."""
  return loss_cfg.r1_gamma / 2 * loss_cfg.r1_interval


def mismatched_text(text: dict, key):
  """(text of a mismatched caption per example, valid bool [B]); see
  losses.mismatched_captions. text: {'tokens' [B,L], 'eot' [B], 'features'?}."""
  index, valid = losses.mismatched_captions(text['tokens'], key)
  # The gather reads other shards' rows; its result stays split over the batch.
  return jax.tree.map(lambda x: shard_batch(jnp.take(x, index, axis=0)), text), valid


def step_keys(key, step):
  """This step's keys: the D update's latents, the G update's (unused with
  train.shared_fakes), the gradient penalty's, the mismatched captions'."""
  return jax.random.split(jax.random.fold_in(key, step), 4)


def augment_keys(key, step):
  """This step's keys of D's augmentation (loss.d_translate): the real and the
  generated images of the D update, the generated images of the G update. A
  stream of their own, so that turning augmentation on leaves step_keys' as
  they were."""
  return jax.random.split(jax.random.fold_in(jax.random.fold_in(key, step), 1), 3)


def make_train_step(g, d, g_tx, d_tx, config, backbone=None, clip_cfg=None):
  """Builds the (un-jitted) step function for these models and config.

  clip_cfg: the frozen CLIP's sizes (clip_model.CLIPConfig) when the CLIP loss
  or the vision-aided D is on; default frozen_losses.clip_config(config).
  The function carries `.r1_due(step) -> bool` (r1_due for this config), for
  the host to choose its do_r1 argument, `.conv_weights`
  (config.mesh.conv_weights), for jit_train_step, and `.g_objective`: G's
  loss and metrics as a function of (g_params, z, d_params, text, wrong,
  valid, frozen, batch, step, negatives, aug_keys), whose gradient the G
  update takes.
  """
  loss_cfg, levels = config.loss, config.generator.pyramid_levels
  kind = loss_cfg.gan
  z_dim = config.generator.z_dim
  inject_d = tuple(config.train.get('inject_nan_steps', ()))
  inject_g = tuple(config.train.get('inject_nan_g_steps', ()))
  matching = loss_cfg.matching_aware
  matching_in_g = matching and loss_cfg.get('matching_in_g', True)
  use_clip, use_va = frozen_losses.clip_on(loss_cfg), frozen_losses.va_on(loss_cfg)
  contrastive_w = loss_cfg.get('contrastive_weight', 0.0)
  shared_fakes = config.train.get('shared_fakes', False)
  d_translate = loss_cfg.get('d_translate', 0.0)
  if (use_clip or use_va) and clip_cfg is None:
    clip_cfg = frozen_losses.clip_config(config)
  va_spec = frozen_losses.va_spec(config, clip_cfg) if use_va else None

  def generate(g_params, z, text):
    return g.apply({'params': g_params}, z, text)

  def generate_with_entropy(g_params, z, text):
    """(pyramid, {'attn_entropy/<layer>': scalar}): G's images and how spread
    each self-attention layer's weights are (nn.attention.attention_entropy),
    logged to see tied-L2 attention stay mixing rather than read only itself."""
    fake, state = g.apply({'params': g_params}, z, text, mutable=['intermediates'])
    entropy = collect_attention_entropy(state.get('intermediates', {}))
    return fake, {f'attn_entropy/{k}': jax.lax.stop_gradient(v) for k, v in entropy.items()}

  def vision_aided_d(d_own, heads, frozen, real, fake, text, weight):
    """D's vision-aided term on the top pyramid level, text from D's own t_D."""
    t_d = d.apply({'params': d_own}, text, method='text_embedding')
    real_va, fake_va = frozen_losses.va_real_fake_logits(
        va_spec, frozen['vision_aided'], heads, real[0], fake[0], t_d)
    d_va = losses.discriminator_loss(kind, real_va, fake_va)
    return weight('vision_aided_weight') * d_va, {'d_va': d_va}

  def contrastive(d_params, images, text, negatives):
    """InfoNCE of each image against the batch's captions in D's projection
    space (ProjectionDiscriminator.pair_embeddings), and against the batch's
    hard negatives when `negatives` (their text) is given; copies of an image's
    own caption are not its negatives."""
    if negatives is not None:
      text = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), text, negatives)
    h, e = d.apply({'params': d_params}, images, text, method='pair_embeddings')
    return losses.contrastive_loss(h, e, loss_cfg.contrastive_temperature, tokens=text['tokens'])

  def seen_by_d(pyramid, key):
    """What D is shown of `pyramid`: translated at random with loss.d_translate."""
    return augment.translate(pyramid, key, d_translate) if d_translate else pyramid

  def d_loss_fn(d_params, fake, real, text, wrong, valid, do_r1, key, frozen, step, negatives,
                aug_keys):
    d_params, heads = frozen_losses.split_d(d_params)
    real, fake = seen_by_d(real, aug_keys[0]), seen_by_d(fake, aug_keys[1])
    d_fn = lambda pyr, t=text: d.apply({'params': d_params}, pyr, t)
    if matching:  # one image trunk per pyramid, a text head for each caption
      real_logits, real_wrong = d.apply({'params': d_params}, real, text, wrong)
      fake_logits, fake_wrong = d.apply({'params': d_params}, fake, text, wrong)
    else:
      real_logits, fake_logits, real_wrong, fake_wrong = d_fn(real), d_fn(fake), None, None
    loss = losses.discriminator_loss(kind, real_logits, fake_logits, real_wrong, fake_wrong,
                                     valid, loss_cfg.matching_weight)
    if kind == 'wgan':
      loss = loss + loss_cfg.wgan_gp_weight * losses.gradient_penalty(d_fn, real, fake, key)
    r1 = losses.r1_penalty(d_fn, real) if do_r1 else jnp.zeros((), jnp.float32)
    loss = loss + r1 * r1_weight(loss_cfg)
    metrics = {'d_acc': losses.d_accuracy(real_logits, fake_logits),
               'real_score': losses.total_logit(real_logits) / len(real_logits),
               'fake_score': losses.total_logit(fake_logits) / len(fake_logits)}
    if use_va:
      weight = functools.partial(losses.scheduled_weight, loss_cfg, step=step)
      va_loss, va_metrics = vision_aided_d(d_params, heads, frozen, real, fake, text, weight)
      loss = loss + va_loss
      metrics.update(va_metrics)
    if contrastive_w:
      metrics['d_contrastive'] = contrastive(d_params, real, text, negatives)
      loss = loss + contrastive_w * metrics['d_contrastive']
    metrics.update(d_loss=loss, r1=r1)
    if matching:
      metrics.update(d_match_real=losses.matching_term(kind, real_wrong, valid),
                     d_match_fake=losses.matching_term(kind, fake_wrong, valid),
                     match_valid=jnp.mean(valid.astype(jnp.float32)))
    return loss, metrics

  def g_loss_of_fake(fake, d_params, text, wrong, valid, frozen, batch, step, negatives,
                     aug_keys):
    """G's objective as a function of its images (the pyramid)."""
    d_params, heads = frozen_losses.split_d(d_params)
    images, fake = fake, seen_by_d(fake, aug_keys[2])  # CLIP's loss reads G's own images
    metrics = {}
    if matching_in_g:
      fake_logits, fake_wrong = d.apply({'params': d_params}, fake, text, wrong)
      loss = losses.generator_loss(kind, fake_logits, fake_wrong, valid, loss_cfg.matching_weight)
      metrics['g_match'] = losses.matching_term(kind, fake_wrong, valid)
    else:
      loss = losses.generator_loss(kind, d.apply({'params': d_params}, fake, text))
    if contrastive_w:
      metrics['g_contrastive'] = contrastive(d_params, fake, text, negatives)
      loss = loss + contrastive_w * metrics['g_contrastive']
    weight = functools.partial(losses.scheduled_weight, loss_cfg, step=step)
    if use_clip:  # Eq. 9 on the full-resolution output
      clip = frozen_losses.clip_term(config, clip_cfg, frozen['clip'], images[0], batch)
      loss, metrics['clip'] = loss + weight('clip_weight') * clip, clip
    if use_va:
      t_d = d.apply({'params': d_params}, text, method='text_embedding')
      g_va = losses.generator_loss(kind, frozen_losses.va_logits(
          va_spec, frozen['vision_aided'], heads, fake[0], t_d))
      loss, metrics['g_va'] = loss + weight('vision_aided_weight') * g_va, g_va
    return loss, metrics

  def g_loss_fn(g_params, z, d_params, text, *rest):
    fake, entropy = generate_with_entropy(g_params, z, text)
    loss, metrics = g_loss_of_fake(fake, d_params, text, *rest)
    return loss, {**entropy, **metrics}

  def train_step(state, batch, frozen, do_r1: bool):
    step = state['step']
    k_dz, k_gz, k_gp, k_wrong = step_keys(state['key'], step)
    real = real_pyramid(batch['image'], levels)
    batch_size = real[0].shape[0]
    text = text_features(backbone, batch, frozen.get('backbone'))
    wrong, valid = mismatched_text(text, k_wrong)
    aug_keys = augment_keys(state['key'], step)
    negatives = None
    if 'negative_tokens' in batch:
      negatives = text_features(backbone, batch, frozen.get('backbone'), prefix='negative_')

    def injected_fault(steps):
      # Fault drill (config.train.inject_nan_steps / inject_nan_g_steps): transient
      # faults, injected until that many skips have been counted in the run
      # (total_skips survives a restore, so a replay is clean). Steps are
      # numbered as logged: the first step is step 1.
      return (jnp.isin(step + 1, jnp.array(steps)) &
              (state['total_skips'] < len(inject_d) + len(inject_g)))

    # ---- D update
    z = jax.random.normal(k_dz, (batch_size, z_dim))
    if shared_fakes:  # G's forward pass once; its VJP serves the G update below
      fake, g_vjp, entropy = jax.vjp(lambda p: generate_with_entropy(p, z, text), state['g'],
                                     has_aux=True)
    else:
      fake = generate(state['g'], z, text)
    fake = jax.lax.stop_gradient(fake)
    (d_loss, d_metrics), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
        state['d'], fake, real, text, wrong, valid, bool(do_r1) and loss_cfg.r1_gamma > 0, k_gp,
        frozen, step, negatives, aug_keys)
    if inject_d:
      d_grads = _inject_nan(d_grads, injected_fault(inject_d))
    lr_scale = lr_multiplier(config, state)
    d_params, d_opt = _apply_updates(d_tx, d_grads, state['d_opt'], state['d'], lr_scale)

    # ---- G update against the updated D
    g_args = (d_params, text, wrong, valid, frozen, batch, step, negatives, aug_keys)
    if shared_fakes:  # on the D update's images, by the chain rule through its VJP
      (g_loss, g_metrics), fake_grads = jax.value_and_grad(g_loss_of_fake, has_aux=True)(
          fake, *g_args)
      (g_grads,) = g_vjp(fake_grads)
      g_metrics.update(entropy)
    else:
      (g_loss, g_metrics), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(
          state['g'], jax.random.normal(k_gz, (batch_size, z_dim)), *g_args)
    g_metrics['g_loss'] = g_loss
    if inject_g:
      g_grads = _inject_nan(g_grads, injected_fault(inject_g))
    g_params, g_opt = _apply_updates(g_tx, g_grads, state['g_opt'], state['g'], lr_scale)

    finite = all_finite(d_loss, g_loss, d_grads, g_grads)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    beta = ema_beta(config.train, batch_size, step)
    ema = jax.tree.map(lambda e, p: beta * e + (1 - beta) * p, state['ema'], g_params)
    new_state = {
        **state,  # 'key', and 'budget_s', which the loop sets, pass through
        'step': step + 1,
        'g': keep(g_params, state['g']),
        'd': keep(d_params, state['d']),
        'ema': keep(ema, state['ema']),
        'g_opt': keep(g_opt, state['g_opt']),
        'd_opt': keep(d_opt, state['d_opt']),
        'skips': jnp.where(finite, 0, state['skips'] + 1),
        'total_skips': state['total_skips'] + (~finite).astype(jnp.int32),
    }
    metrics = {**d_metrics, **g_metrics, 'd_loss': d_loss, 'skipped': ~finite,
               'consecutive_skips': new_state['skips'],
               'g_grad_norm': optax.tree.norm(g_grads),
               'd_grad_norm': optax.tree.norm(d_grads), 'ema_beta': beta}
    if lr_scale is not None:
      metrics['lr_multiplier'] = lr_scale
    return new_state, metrics

  train_step.r1_due = functools.partial(r1_due, loss_cfg)
  train_step.g_objective = g_loss_fn
  train_step.conv_weights = config.mesh.get('conv_weights', 'auto')
  return train_step


# What the step reads of a batch, and each entry's rank.
BATCH_NDIMS = {'image': 4, 'tokens': 2, 'eot': 1}


def batch_ndims(config) -> dict:
  """BATCH_NDIMS of config.task ('sr' adds the low-res input 'lr'), plus the
  cached text features [B, L, D] with config.text.feature_cache, the hard
  negatives' negative_tokens / negative_eot (and negative_features, cached)
  with config.data.hard_negatives, and the CLIP loss's captions
  (frozen_losses.CLIP_BATCH_NDIMS) when it is on."""
  out = dict(BATCH_NDIMS, lr=4) if config.task == 'sr' else dict(BATCH_NDIMS)
  if feature_cache_on(config.text):
    out['features'] = 3
  if config.data.get('hard_negatives', False):
    out.update(negative_tokens=2, negative_eot=1)
    if feature_cache_on(config.text):
      out['negative_features'] = 3
  if frozen_losses.clip_on(config.loss):
    out.update(frozen_losses.CLIP_BATCH_NDIMS)
  return out


def feature_cache_on(text_cfg) -> bool:
  """Whether the loop feeds backbone features with the batch (text/feature_cache.py)."""
  return bool(text_cfg.get('feature_cache', False))


class JittedStep:
  """A jitted train step: one compiled program per value of the static do_r1.

    step(state, batch, frozen, do_r1) -> (state, metrics)

  do_r1: the host's `step_fn.r1_due(host_step)`. Left out (None), it is read
  from state['step'], which waits for the previous step to finish: fine for
  tests and notebooks; the training loop passes it.
  """

  def __init__(self, jitted, r1_due):
    self.jitted, self.r1_due = jitted, r1_due

  def __call__(self, state, batch, frozen, do_r1=None):
    if do_r1 is None:
      do_r1 = self.r1_due(int(jax.device_get(state['step'])))
    return self.jitted(state, batch, frozen, bool(do_r1))

  def lower(self, state, batch, frozen, do_r1: bool = True):
    """AOT lowering of one variant; by default the R1 one, the larger (planners, benchmarks)."""
    return self.jitted.lower(state, batch, frozen, bool(do_r1))


def jit_train_step(step_fn, state_shardings, mesh, ndims=BATCH_NDIMS) -> JittedStep:
  """jit with explicit shardings; the state buffer is donated (updated in place).

  step_fn: from make_train_step / make_sr_train_step. The batch (entries and
  ranks `ndims`) is sharded over ('data', 'fsdp'); the frozen params (text
  backbone, CLIP, vision-aided tower, LPIPS) are replicated; do_r1 (argument
  3) is static.
  """
  batch_sh = {k: batch_sharding(mesh, n) for k, n in ndims.items()}

  def traced_on_mesh(*args):  # activations keep the batch sharding (parallel.shard_batch)
    with activation_mesh(mesh, step_fn.conv_weights):
      return step_fn(*args)

  jitted = jax.jit(traced_on_mesh, static_argnums=(3,),
                   in_shardings=(state_shardings, batch_sh, replicated(mesh)),
                   out_shardings=(state_shardings, replicated(mesh)),
                   donate_argnums=(0,))
  return JittedStep(jitted, step_fn.r1_due)
