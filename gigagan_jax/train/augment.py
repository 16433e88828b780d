"""What D sees: images translated at random (DiffAugment's translation).

D, trained on a few thousand images for dozens of epochs, learns them by
heart: on `t2i_tiny.py:long` its accuracy reaches 1.0 and its logits +-50.
DiffAugment (Zhao et al. 2020) shows D real and generated images through the
same random, differentiable transform, in D's update and in G's, so D cannot
separate them by memorised pixels and G's gradient flows back through the
transform. Translation alone, by a few pixels, keeps what captions name:
shape, colour, count, size, the background, and the 3x3 grid cell of a
position.

config: loss.d_translate, the largest shift as a fraction of the image side
(DiffAugment's default is 1/8); 0 = off. Off in every config: on
t2i_tiny.py:long, 2 px held D back but slowed G's shapes, and the run ended
0.05 lower (ABLATION.md, session 35).
"""
import jax
import jax.numpy as jnp


def _shift(image, dy, dx, pad: int):
  """[H, W, C] moved by (dy, dx) integer pixels, edges repeated (a plain
  background stays plain: zeros would paint a black border, and black is a
  caption's colour)."""
  h, w, _ = image.shape
  padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode='edge')
  return jax.lax.dynamic_slice(padded, (pad - dy, pad - dx, 0), (h, w, image.shape[2]))


def translate(pyramid, key, fraction: float):
  """The image pyramid, each example moved by its own random shift.

  pyramid: ([B, R, R, C], [B, R/2, R/2, C], ...); fraction: the largest shift
  as a fraction of the side. One shift (dy, dx) per example, uniform over the
  integers in [-round(fraction * R), round(fraction * R)] at the top level;
  each lower level moves by that shift scaled to its size and rounded, so the
  levels stay aligned to a pixel of theirs. Differentiable in the pixels.
  """
  top = pyramid[0].shape[1]
  pad = round(fraction * top)
  if pad == 0:
    return pyramid
  shifts = jax.random.randint(key, (pyramid[0].shape[0], 2), -pad, pad + 1)
  out = []
  for level in pyramid:
    scale = level.shape[1] / top
    s = jnp.round(shifts * scale).astype(jnp.int32)
    out.append(jax.vmap(_shift, in_axes=(0, 0, 0, None))(
        level, s[:, 0], s[:, 1], max(1, round(pad * scale))))
  return type(pyramid)(out)
