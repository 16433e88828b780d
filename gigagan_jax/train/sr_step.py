"""One super-resolution training step (config.task = 'sr'), as a pure function.

  train_step(state, batch, frozen, do_r1) -> (state, metrics)

batch: {'image': uint8 [B, S, S, 3] HR crops, 'lr': uint8 [B, S/s, S/s, 3],
'tokens' int32 [B, L], 'eot' int32 [B]} (+ 'clip_tokens', 'clip_eot' with the
CLIP loss); frozen: {'backbone': text backbone params, 'lpips': LPIPS-VGG
params, 'clip': CLIP params} (each may be {} or absent when unused).

G is the upsampler (GigaGAN's or a baseline): fake = G(lr, text, z). Its loss
  pixel_weight * |fake - hr|_1 + lpips_weight * LPIPS(fake, hr)
  + gan_weight * (adversarial + matching-aware terms against D)
  + clip_weight * CLIP loss (Eq. 9) of G's output ('clip')
(paper section 4: the GAN objective, CLIP loss included, plus LPIPS with
weight 10; no vision-aided D for the upsampler). D is the
MS-I/O discriminator on the HR pyramid, conditioned on the text and on the
low-res input, which joins every pyramid level as 3 extra channels: D judges
"is this a real HR image *of this LR image*", so G cannot drift from its input.
With gan_weight = 0 (SRCNN, SwinIR: pixel losses only) D is not run and its
parameters stay as initialised.

R1 penalises D's gradient w.r.t. the HR image only: the LR channels are the
condition, not the data (like the caption), and they are the same for real
and fake, so their gradient is no part of "D is smooth around the reals".

The loss weights follow their schedules, loss.<name>_schedule (piecewise
linear in the step, losses.scheduled_weight): e.g. a GAN term ramped in after
a PSNR-only phase, Real-ESRNet then Real-ESRGAN. D trains from the start all
the same (its weight is a trace-time constant, the schedule is not), so the
GAN term meets a D that already tells the model's outputs from real ones.

Randomness, the static do_r1, skipping of non-finite steps and the EMA are as
in step.py.
"""
import functools

import jax
import jax.numpy as jnp
import optax

from gigagan_jax import losses
from gigagan_jax.frozen.lpips import lpips_loss
from gigagan_jax.train import frozen_losses
from gigagan_jax.train.step import (all_finite, _apply_updates, box_pyramid, ema_beta,
                                    mismatched_text, r1_due, r1_weight, text_features)
from gigagan_jax.train.state import lr_multiplier


def with_low_res(pyramid, lr):
  """Appends the low-res input, resized to each level, as channels 3..5.

  pyramid: tuple of [B, r, r, 3] in [-1, 1]; lr: [B, h, h, 3] -> tuple of [B, r, r, 6].
  """
  out = []
  for x in pyramid:
    up = jax.image.resize(lr, x.shape[:3] + (3,), 'linear')
    out.append(jnp.concatenate([x, up.astype(x.dtype)], axis=-1))
  return tuple(out)


def hr_r1_penalty(d_fn, hr, lr, levels: int):
  """R1 of D w.r.t. the HR image only, the LR channels held fixed; float32 [].

  d_fn: 6-channel pyramid (`with_low_res`) -> logit dict; hr: [B, S, S, 3]
  in [-1, 1]; lr: [B, S/s, S/s, 3]. The gradient flows through the box pyramid
  back to the one HR image (the real sample; its lower levels are functions
  of it, for real and fake alike); none is taken w.r.t. lr.
  """
  return losses.r1_penalty(lambda x: d_fn(with_low_res(box_pyramid(x[0], levels), lr)), (hr,))


def make_sr_train_step(g, d, g_tx, d_tx, config, backbone=None, clip_cfg=None):
  """Builds the (un-jitted) SR step for these models and config (`.r1_due` and
  `.conv_weights` as make_train_step's; `.r1_due` always False without a GAN
  term). clip_cfg: the frozen CLIP's sizes when the CLIP loss is on (default
  frozen_losses.clip_config)."""
  loss_cfg, levels = config.loss, config.discriminator.levels
  kind = loss_cfg.gan
  z_dim = config.upsampler.get('z_dim', 1)
  use_gan = loss_cfg.gan_weight > 0
  matching = loss_cfg.matching_aware
  matching_in_g = matching and loss_cfg.get('matching_in_g', True)
  use_clip = frozen_losses.clip_on(loss_cfg)
  if use_clip and clip_cfg is None:
    clip_cfg = frozen_losses.clip_config(config)

  def d_input(hr, lr):
    return with_low_res(box_pyramid(hr, levels), lr)

  def d_loss_fn(d_params, fake, real, lr, text, wrong, valid, do_r1):
    d_fn = lambda pyr, t=text: d.apply({'params': d_params}, pyr, t)
    if matching:
      real_logits, real_wrong = d.apply({'params': d_params}, d_input(real, lr), text, wrong)
      fake_logits, fake_wrong = d.apply({'params': d_params}, d_input(fake, lr), text, wrong)
    else:
      real_logits, fake_logits = d_fn(d_input(real, lr)), d_fn(d_input(fake, lr))
      real_wrong = fake_wrong = None
    loss = losses.discriminator_loss(kind, real_logits, fake_logits, real_wrong, fake_wrong,
                                     valid, loss_cfg.matching_weight)
    r1 = hr_r1_penalty(d_fn, real, lr, levels) if do_r1 else jnp.zeros((), jnp.float32)
    loss = loss + r1 * r1_weight(loss_cfg)
    return loss, {'d_loss': loss, 'r1': r1, 'd_acc': losses.d_accuracy(real_logits, fake_logits)}

  def g_loss_fn(g_params, d_params, lr, hr, z, text, wrong, valid, frozen, batch, step):
    fake = g.apply({'params': g_params}, lr, text, z)
    pixel = jnp.mean(jnp.abs(fake - hr))
    weight = functools.partial(losses.scheduled_weight, loss_cfg, step=step)
    loss, metrics = weight('pixel_weight') * pixel, {'pixel': pixel}
    if loss_cfg.lpips_weight > 0:
      perceptual = lpips_loss(frozen.get('lpips'), fake, hr)
      loss, metrics['lpips'] = loss + weight('lpips_weight') * perceptual, perceptual
    if use_clip:
      clip = frozen_losses.clip_term(config, clip_cfg, frozen['clip'], fake, batch)
      loss, metrics['clip'] = loss + weight('clip_weight') * clip, clip
    if use_gan:
      if matching_in_g:
        fake_logits, fake_wrong = d.apply({'params': d_params}, d_input(fake, lr), text, wrong)
      else:
        fake_logits, fake_wrong = d.apply({'params': d_params}, d_input(fake, lr), text), None
      adv = losses.generator_loss(kind, fake_logits, fake_wrong, valid, loss_cfg.matching_weight)
      gan_weight = weight('gan_weight')
      loss, metrics['g_adv'], metrics['gan_weight'] = loss + gan_weight * adv, adv, gan_weight
    return loss, dict(metrics, g_loss=loss)

  def train_step(state, batch, frozen, do_r1: bool):
    step = state['step']
    k_dz, k_gz, k_wrong = jax.random.split(jax.random.fold_in(state['key'], step), 3)
    hr = batch['image'].astype(jnp.float32) / 127.5 - 1.0
    lr = batch['lr'].astype(jnp.float32) / 127.5 - 1.0
    b = hr.shape[0]
    text = text_features(backbone, batch, frozen.get('backbone'))
    wrong, valid = mismatched_text(text, k_wrong)

    d_params, d_opt = state['d'], state['d_opt']
    lr_scale = lr_multiplier(config, state)
    d_metrics, d_grads = {}, ()  # no D metrics without a GAN term
    if use_gan:
      fake = jax.lax.stop_gradient(
          g.apply({'params': state['g']}, lr, text, jax.random.normal(k_dz, (b, z_dim))))
      (_, d_metrics), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
          d_params, fake, hr, lr, text, wrong, valid, bool(do_r1) and loss_cfg.r1_gamma > 0)
      d_params, d_opt = _apply_updates(d_tx, d_grads, d_opt, d_params, lr_scale)

    (g_loss, g_metrics), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(
        state['g'], d_params, lr, hr, jax.random.normal(k_gz, (b, z_dim)), text, wrong, valid,
        frozen, batch, step)
    g_params, g_opt = _apply_updates(g_tx, g_grads, state['g_opt'], state['g'], lr_scale)

    finite = all_finite(d_metrics.get('d_loss', 0.0), g_loss, d_grads, g_grads)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    beta = ema_beta(config.train, b, step)
    ema = jax.tree.map(lambda e, p: beta * e + (1 - beta) * p, state['ema'], g_params)
    new_state = {
        **state,  # 'key', and 'budget_s', which the loop sets, pass through
        'step': step + 1,
        'g': keep(g_params, state['g']), 'd': keep(d_params, state['d']),
        'ema': keep(ema, state['ema']),
        'g_opt': keep(g_opt, state['g_opt']), 'd_opt': keep(d_opt, state['d_opt']),
        'skips': jnp.where(finite, 0, state['skips'] + 1),
        'total_skips': state['total_skips'] + (~finite).astype(jnp.int32),
    }
    metrics = {**d_metrics, **g_metrics, 'skipped': ~finite,
               'consecutive_skips': new_state['skips'],
               'g_grad_norm': optax.tree.norm(g_grads), 'ema_beta': beta}
    if lr_scale is not None:
      metrics['lr_multiplier'] = lr_scale
    return new_state, metrics

  train_step.r1_due = lambda step: use_gan and r1_due(loss_cfg, step)
  train_step.conv_weights = config.mesh.get('conv_weights', 'auto')
  return train_step

