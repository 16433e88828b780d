"""GAN objectives of GigaGAN and the ablation alternatives.

All functions are pure and act on the discriminator's dict of logit maps
{name: [B, h, w, 1]} (one entry per pyramid level x exit stage of MS-I/O).
Per paper Eq. 6 the per-map losses are summed, each map averaged over batch
and positions.

Matching-aware loss (paper Eq. 8, after Reed et al. 2016), with c the image's
caption and c' a mismatched caption of the batch (`mismatched_captions`):

  V_match = E[ softplus(D(x, c')) ] + E[ softplus(D(G(c), c')) ]

i.e. D scores as fake both a real image and a generated one when they are
shown with a caption that is not theirs (softplus is the logistic loss's fake
term; other `kind`s use their own, `fake_term`). D minimises V_match.

G's side (the ablation's "G and D" row; PAPER_NOTES section 3 and open
question 6: the text we have does not write it out). Only the second term
depends on G, and we let G minimise it too, with the same sign as D:

  L_G,match = E[ softplus(D(G(c), c')) ]

so the matching term is shared, not adversarial: G is rewarded for images
that D finds do *not* fit other captions, which can only come from fitting
their own. The adversarial reading (G maximising V_match) would reward images
that pass as real under any caption, which works against text alignment,
while the paper's ablation reports a higher CLIP score with the term on G.

A pair whose c' equals c token for token (datasets repeat captions) is no
mismatch: it is masked out, and each term is the mean over the valid pairs
only (0 when there is none).
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


def mismatched_captions(tokens, key):
  """For each caption of the batch, another caption of the batch to pair it with.

  tokens: int [B, L] token ids; key: PRNG key. Returns (index int32 [B], valid
  bool [B]): caption index[b] differs from caption b in at least one token,
  drawn uniformly among those that do; valid[b] is False when every caption of
  the batch equals b's (index[b] is then arbitrary and the pair is to be masked).
  Pure and jittable; with a batch-sharded `tokens` XLA gathers the [B, L]
  tokens to compare all pairs ([B, B] booleans, small next to the images).
  """
  # Token equality, not index equality: a shuffled batch still repeats
  # captions (captioned_shapes has few distinct ones), and a "mismatched"
  # caption equal to the true one would teach D to reject real, matching pairs.
  differ = jnp.any(tokens[:, None, :] != tokens[None, :, :], axis=-1)
  score = jnp.where(differ, jax.random.uniform(key, differ.shape), -1.0)
  return jnp.argmax(score, axis=1).astype(jnp.int32), jnp.any(differ, axis=1)


def matching_term(kind: str, mismatched, valid=None):
  """One term of Eq. 8: D's fake-penalty on mismatched pairs; scalar.

  mismatched: logit dict {name: [B, h, w, 1]} of (image, wrong caption) pairs;
  valid: optional bool [B], False for pairs to leave out. Per map: the mean
  over positions, then over the valid pairs; maps are summed. 0, not NaN,
  when no pair is valid.
  """
  if valid is None:
    return _sum_maps(lambda m: fake_term(kind, m), mismatched)
  count = jnp.maximum(jnp.sum(valid.astype(jnp.float32)), 1.0)
  total = 0.0
  for logits in mismatched.values():
    per_pair = jnp.mean(fake_term(kind, logits), axis=(1, 2, 3))
    # where, not a product: a masked pair's term must not leak in even if it is inf
    total = total + jnp.sum(jnp.where(valid, per_pair, 0.0)) / count
  return total


def discriminator_loss(kind: str, real, fake, real_mismatched=None, fake_mismatched=None,
                       valid=None, matching_weight=1.0):
  """D's adversarial (+ matching-aware, Eq. 8) loss; scalar.

  real / fake: logit dicts of (x, c) and (G(c), c); real_mismatched /
  fake_mismatched: of (x, c') and (G(c), c'), or None to leave the term out;
  valid: bool [B] mask of the mismatched pairs (None: all valid).
  """
  loss = _sum_maps(lambda r, f: d_loss_terms(kind, r, f), real, fake)
  for mismatched in (real_mismatched, fake_mismatched):
    if mismatched is not None:
      loss = loss + matching_weight * matching_term(kind, mismatched, valid)
  return loss


def generator_loss(kind: str, fake, fake_mismatched=None, valid=None, matching_weight=1.0):
  """G's adversarial (+ matching-aware) loss; scalar. See the module doc for G's
  matching term (fake_mismatched: logits of (G(c), c'); valid as in discriminator_loss)."""
  loss = _sum_maps(lambda f: g_loss_terms(kind, f), fake)
  if fake_mismatched is not None:
    loss = loss + matching_weight * matching_term(kind, fake_mismatched, valid)
  return loss


def piecewise_linear(points, step):
  """Value at `step` of the piecewise-linear curve through `points`.

  points: sequence of (step, value) pairs, steps non-decreasing; constant
  before the first and after the last. Empty: 1.0. step: int scalar (traced
  is fine). Returns float32 [].
  """
  if not points:
    return jnp.ones((), jnp.float32)
  xs = jnp.asarray([float(p[0]) for p in points], jnp.float32)
  ys = jnp.asarray([float(p[1]) for p in points], jnp.float32)
  return jnp.interp(jnp.asarray(step, jnp.float32), xs, ys)


def scheduled_weight(loss_cfg, name: str, step):
  """loss_cfg[name] times its schedule loss_cfg[name + '_schedule'] at `step`.

  The schedule is a tuple of (step, multiplier) points (`piecewise_linear`;
  () = always 1), so the weight field keeps its meaning as the full-strength
  weight, e.g. gan_weight_schedule = ((0, 0.), (100_000, 0.), (110_000, 1.))
  trains on the other losses first and ramps the GAN term in over 10k steps.
  step: the number of steps done before this one (state['step']).
  """
  return loss_cfg[name] * piecewise_linear(loss_cfg.get(name + '_schedule', ()), step)


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


def contrastive_loss(image_embeds, text_embeds, temperature: float = 0.01, tokens=None):
  """InfoNCE of each image against the batch's captions: the CLIP loss of
  paper Eq. 9 on CLIP's embeddings (frozen/clip_loss.py), and the
  contrastive term (config loss.contrastive_weight) on the projection D's.

  image_embeds [B, D] (of image b), text_embeds [N, D], N >= B (of c_b for
  n = b < B, then extra negatives such as data.hard_negatives' captions);
  L2-normalised inside. The positive for image b is caption b. tokens:
  optional int [N, L] of the captions; another caption with the same tokens
  as b's is b's own caption, not a negative, and is left out of b's softmax
  (captioned_shapes repeats captions, and caption dropout makes many empty
  ones): counted as a negative, each copy would raise the loss's floor to
  log(copies) and push the image away from its own caption's copies.
  """
  img = image_embeds / jnp.linalg.norm(image_embeds, axis=-1, keepdims=True)
  txt = text_embeds / jnp.linalg.norm(text_embeds, axis=-1, keepdims=True)
  logits = img @ txt.T / temperature  # [B, N]
  b = len(img)
  positive = jnp.diagonal(logits)
  if tokens is not None:
    same = jnp.all(tokens[:b, None, :] == tokens[None, :, :], axis=-1)
    logits = jnp.where(same & ~jnp.eye(*same.shape, dtype=bool), -jnp.inf, logits)
  return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - positive)


def d_accuracy(real, fake) -> jax.Array:
  """Fraction of logits on the right side of 0, over all maps (a training signal)."""
  right = [jnp.mean(r > 0) for r in real.values()] + [jnp.mean(f < 0) for f in fake.values()]
  return jnp.mean(jnp.stack(right))
