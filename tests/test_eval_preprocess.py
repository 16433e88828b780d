"""The authors' evaluation preprocessing: centre crop + PIL Lanczos; clean-fid resize."""
import numpy as np
import pytest
from PIL import Image

from gigagan_jax.evaluate import preprocess


@pytest.mark.parametrize('h,w', [(48, 80), (81, 40)])
def test_crop_resize_equals_pil_lanczos_on_the_centre_crop(h, w):
  img = np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8)
  out = preprocess.crop_resize(img, 32)
  assert out.shape == (32, 32, 3) and out.dtype == np.uint8
  s = min(h, w)
  left, top = (w - s) // 2, (h - s) // 2
  ref = Image.fromarray(img).crop((left, top, left + s, top + s)).resize(
      (32, 32), Image.Resampling.LANCZOS)
  np.testing.assert_array_equal(out, np.asarray(ref))


def test_center_crop_and_batch():
  img = np.arange(5 * 8).reshape(5, 8, 1)
  np.testing.assert_array_equal(preprocess.center_crop_square(img), img[:, 1:6])
  batch = [np.zeros((20, 30, 3), np.uint8), np.full((64, 64, 4), 7, np.uint8)]
  out = preprocess.eval_preprocess(batch, 16)
  assert out.shape == (2, 16, 16, 3) and (out[1] == 7).all()
  # Already at the evaluation size: left untouched.
  img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
  np.testing.assert_array_equal(preprocess.crop_resize(img, 16), img)


def test_to_uint8_rounds_and_clips():
  x = np.array([-0.1, 0.0, 0.5 / 255, 1.49 / 255, 1.0, 1.2])
  np.testing.assert_array_equal(preprocess.to_uint8(x), [0, 0, 0, 1, 255, 255])


def test_clean_resize_is_per_channel_float_bicubic():
  img = np.random.default_rng(0).integers(0, 256, (2, 24, 40, 3), dtype=np.uint8)
  out = preprocess.clean_resize(img, 299)
  assert out.shape == (2, 299, 299, 3) and out.dtype == np.float32
  assert 0.0 <= out.min() and out.max() <= 1.0
  ref = Image.fromarray(img[1, :, :, 2].astype(np.float32), mode='F').resize(
      (299, 299), Image.Resampling.BICUBIC)
  np.testing.assert_allclose(out[1, :, :, 2], np.clip(np.asarray(ref), 0, 255) / 255.0, rtol=1e-6)
  with pytest.raises(ValueError, match='uint8'):
    preprocess.clean_resize(img.astype(np.float32))
