"""D's random translation (train/augment.py) against a numpy reference."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import micro_config
from gigagan_jax.config_utils import ConfigError, validate
from gigagan_jax.train.augment import translate
from gigagan_jax.train.step import box_pyramid


def _numpy_shift(image, dy, dx):
  """[H, W, C] moved by (dy, dx): output pixel (i, j) reads input pixel
  (i - dy, j - dx), clamped to the image (edges repeated)."""
  h, w, _ = image.shape
  rows = np.clip(np.arange(h) - dy, 0, h - 1)
  cols = np.clip(np.arange(w) - dx, 0, w - 1)
  return image[rows][:, cols]


def _shifts(key, batch, pad):
  """The shifts `translate` draws (its documented distribution and key use)."""
  return np.asarray(jax.random.randint(key, (batch, 2), -pad, pad + 1))


def test_translate_moves_every_level_by_its_scaled_shift():
  rng = np.random.default_rng(0)
  top = jnp.asarray(rng.normal(size=(6, 16, 16, 3)), jnp.float32)
  pyramid = box_pyramid(top, 3)
  key = jax.random.PRNGKey(3)
  out = translate(pyramid, key, 0.25)            # up to 4 px at 16 px
  shifts = _shifts(key, 6, 4)
  assert len(out) == 3 and all(o.shape == p.shape for o, p in zip(out, pyramid))
  assert np.abs(shifts).max() > 0
  for level, (o, p) in enumerate(zip(out, pyramid)):
    scaled = np.round(shifts / 2**level).astype(int)
    for b in range(6):
      np.testing.assert_array_equal(np.asarray(o[b]),
                                    _numpy_shift(np.asarray(p[b]), *scaled[b]),
                                    err_msg=f'level {level} example {b}')


def test_translate_draws_a_shift_per_example_over_the_whole_range():
  shifts = _shifts(jax.random.PRNGKey(0), 4096, 2)
  assert set(np.unique(shifts)) == {-2, -1, 0, 1, 2}
  assert abs(np.corrcoef(shifts[:, 0], shifts[:, 1])[0, 1]) < 0.05  # dy and dx independent
  image = jnp.arange(8 * 8, dtype=jnp.float32).reshape(1, 8, 8, 1)
  moved = {np.asarray(translate((image,), jax.random.PRNGKey(k), 0.25)[0]).tobytes()
           for k in range(40)}
  assert len(moved) > 10                            # different keys move differently


def test_translate_is_the_identity_below_one_pixel():
  image = jnp.ones((2, 8, 8, 3))
  assert translate((image,), jax.random.PRNGKey(0), 0.05)[0] is image  # round(0.4) = 0 px


def test_translate_passes_gradients_back_to_the_pixels_it_read():
  """The vjp of a translation sums each output pixel's cotangent into the
  input pixel it was read from (several at a repeated edge)."""
  rng = np.random.default_rng(1)
  image = jnp.asarray(rng.normal(size=(3, 8, 8, 2)), jnp.float32)
  weights = rng.normal(size=(3, 8, 8, 2)).astype(np.float32)
  key = jax.random.PRNGKey(5)
  grad = jax.grad(lambda x: jnp.sum(translate((x,), key, 0.25)[0] * weights))(image)
  expected = np.zeros_like(weights)
  for b, (dy, dx) in enumerate(_shifts(key, 3, 2)):
    rows = np.clip(np.arange(8) - dy, 0, 7)
    cols = np.clip(np.arange(8) - dx, 0, 7)
    for i in range(8):
      for j in range(8):
        expected[b, rows[i], cols[j]] += weights[b, i, j]
  np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-6, atol=1e-6)


def test_d_translate_is_checked():
  config = micro_config()
  config.loss.d_translate = 0.5
  with pytest.raises(ConfigError, match='loss.d_translate'):
    validate(config)
  config.loss.d_translate = 1 / 16
  validate(config)
