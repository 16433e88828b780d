"""GAN objectives of GigaGAN and the ablation alternatives.

All functions are pure and act on the discriminator's dict of logit maps
{name: [B, h, w, 1]} (one entry per pyramid level x exit stage of MS-I/O).
Per paper Eq. 6 the per-map losses are summed, each map averaged over batch
and positions.

Matching-aware loss (paper Eq. 8, Reed et al. 2016): D learns that a real
image with a wrong caption is fake. G gets the matching term too (the
ablation's "G and D" row); our reading of the G-side term, which the paper text
we have does not spell out (open question 6): G also lowers D's score of its
image under a wrong caption, i.e. it is rewarded for images that do *not* fit
other captions.
"""
import jax
import jax.numpy as jnp


def _sum_maps(fn, *logit_dicts):
  """sum over maps of mean over [B, h, w, 1] of fn(map...)."""
  keys = logit_dicts[0].keys()
  return sum(jnp.mean(fn(*(d[k] for d in logit_dicts))) for k in keys)


def d_loss_terms(kind: str, real, fake):
  """Per-map D loss for real and fake logits. Returns [B,h,w,1]-shaped terms."""
  if kind == 'logistic':
    return jax.nn.softplus(-real) + jax.nn.softplus(fake)
  if kind == 'hinge':
    return jax.nn.relu(1 - real) + jax.nn.relu(1 + fake)
  if kind == 'lsgan':
    return jnp.square(real - 1) + jnp.square(fake)
  if kind == 'wgan':
    return fake - real
  raise ValueError(f'config.loss.gan: unknown GAN loss {kind!r}')


def fake_term(kind: str, logits):
  """D's penalty for scoring `logits` as real (used for mismatched pairs)."""
  if kind == 'logistic':
    return jax.nn.softplus(logits)
  if kind == 'hinge':
    return jax.nn.relu(1 + logits)
  if kind == 'lsgan':
    return jnp.square(logits)
  if kind == 'wgan':
    return logits
  raise ValueError(f'config.loss.gan: unknown GAN loss {kind!r}')


def g_loss_terms(kind: str, fake):
  """G's adversarial term for its fake logits."""
  if kind == 'logistic':
    return jax.nn.softplus(-fake)
  if kind in ('hinge', 'wgan'):
    return -fake
  if kind == 'lsgan':
    return jnp.square(fake - 1)
  raise ValueError(f'config.loss.gan: unknown GAN loss {kind!r}')


def discriminator_loss(kind: str, real, fake, real_mismatched=None, matching_weight=1.0):
  """D's adversarial (+ matching-aware) loss; scalar. Arguments are logit dicts."""
  loss = _sum_maps(lambda r, f: d_loss_terms(kind, r, f), real, fake)
  if real_mismatched is not None:
    loss = loss + matching_weight * _sum_maps(lambda m: fake_term(kind, m), real_mismatched)
  return loss


def generator_loss(kind: str, fake, fake_mismatched=None, matching_weight=1.0):
  """G's adversarial (+ matching-aware) loss; scalar."""
  loss = _sum_maps(lambda f: g_loss_terms(kind, f), fake)
  if fake_mismatched is not None:
    loss = loss + matching_weight * _sum_maps(lambda m: fake_term(kind, m), fake_mismatched)
  return loss


def total_logit(logits) -> jax.Array:
  """Scalar whose gradient w.r.t. the images drives R1 / gradient penalties."""
  return sum(jnp.sum(jnp.mean(v, axis=(1, 2, 3))) for v in logits.values())


def r1_penalty(d_fn, pyramid):
  """R1 = E_x[ |grad_x D(x)|^2 ] over all pyramid levels (Mescheder et al. 2018).

  d_fn: pyramid -> logit dict (captions bound). pyramid: tuple of [B,h,w,3].
  Returns the batch mean of the squared gradient norm (scale by gamma/2 outside).
  """
  grads = jax.grad(lambda p: total_logit(d_fn(p)))(pyramid)
  sq = sum(jnp.sum(jnp.square(g.astype(jnp.float32)), axis=(1, 2, 3)) for g in grads)
  return jnp.mean(sq)


def gradient_penalty(d_fn, real, fake, key):
  """WGAN-GP: E[(|grad D(x_hat)| - 1)^2] on random interpolates of real and fake."""
  alpha = jax.random.uniform(key, (real[0].shape[0], 1, 1, 1))
  mixed = tuple(alpha * r + (1 - alpha) * f for r, f in zip(real, fake))
  grads = jax.grad(lambda p: total_logit(d_fn(p)))(mixed)
  norm = jnp.sqrt(sum(jnp.sum(jnp.square(g), axis=(1, 2, 3)) for g in grads) + 1e-12)
  return jnp.mean(jnp.square(norm - 1))


def clip_contrastive_loss(image_embeds, text_embeds, temperature: float = 0.01):
  """Paper Eq. 9: InfoNCE of each generated image against the batch's captions.

  image_embeds [B, D] (of G(c_b)), text_embeds [B, D] (of c_b); L2-normalised
  inside. The positive for image b is caption b.
  """
  img = image_embeds / jnp.linalg.norm(image_embeds, axis=-1, keepdims=True)
  txt = text_embeds / jnp.linalg.norm(text_embeds, axis=-1, keepdims=True)
  logits = img @ txt.T / temperature
  return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - jnp.diagonal(logits))


def d_accuracy(real, fake) -> jax.Array:
  """Fraction of logits on the right side of 0, over all maps (a training signal)."""
  right = [jnp.mean(r > 0) for r in real.values()] + [jnp.mean(f < 0) for f in fake.values()]
  return jnp.mean(jnp.stack(right))
