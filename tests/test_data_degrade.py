"""SR degradations: deterministic per seed, expected shapes / dtypes / ranges, sane kernels."""
import numpy as np
import pytest

from gigagan_jax.data import captioned_shapes as cs
from gigagan_jax.data import degrade


@pytest.fixture(scope='module')
def image():
  return cs.generate_example('train', 7, 128)['image']  # uint8 [128, 128, 3]


def _cfg(**kw):
  c = degrade.degradation_config()
  c.hr_size = 64
  for k, v in kw.items():
    c[k] = v
  return c


def test_same_seed_same_pair_other_seed_other_pair(image):
  c = _cfg()
  a, b = degrade.make_pair(image, c, seed=3), degrade.make_pair(image, c, seed=3)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  others = [degrade.make_pair(image, c, seed=s)[0] for s in range(4, 8)]
  assert all(not np.array_equal(a[0], o) for o in others)
  # A Generator passed in is the only randomness: same state, same pair.
  r1, r2 = np.random.default_rng([1, 2]), np.random.default_rng([1, 2])
  np.testing.assert_array_equal(degrade.make_pair(image, c, rng=r1)[0],
                                degrade.make_pair(image, c, rng=r2)[0])


@pytest.mark.parametrize('scale,dtype', [(4, 'uint8'), (8, 'float32')])
def test_shapes_dtypes_ranges(image, scale, dtype):
  c = _cfg(scale=scale, output_dtype=dtype)
  for seed in range(3):
    lr, hr = degrade.make_pair(image, c, seed=seed)
    assert hr.shape == (64, 64, 3) and lr.shape == (64 // scale, 64 // scale, 3)
    assert lr.dtype == hr.dtype == np.dtype(dtype)
    if dtype == 'float32':
      assert 0.0 <= lr.min() and lr.max() <= 1.0 and 0.0 <= hr.min() and hr.max() <= 1.0
  # The HR crop is a crop of the input, untouched.
  lr, hr = degrade.make_pair(image, _cfg(), seed=0)
  windows = np.lib.stride_tricks.sliding_window_view(image, (64, 64, 3))[..., 0, :, :, :]
  assert np.any(np.all(windows == hr, axis=(-3, -2, -1)))


def test_lr_is_a_degraded_version_of_hr(image):
  """Close to a clean downscale on average, but not equal to it."""
  lr, hr = degrade.make_pair(image, _cfg(output_dtype='float32'), seed=0)
  clean = degrade.resize(hr, 16, 16, 'area')
  err = np.abs(lr - clean).mean()
  assert 0.003 < err < 0.25
  # Mostly the same picture: correlated with the clean downscale.
  assert np.corrcoef(lr.ravel(), clean.ravel())[0, 1] > 0.6


def test_first_order_only_and_whole_image(image):
  c = _cfg(second_order_prob=0.0, hr_size=0)
  lr, hr = degrade.make_pair(image, c, seed=1)
  assert hr.shape == image.shape and lr.shape == (32, 32, 3)
  with pytest.raises(ValueError, match='hr_size'):
    degrade.make_pair(image, _cfg(hr_size=256), seed=0)
  with pytest.raises(ValueError, match='seed'):
    degrade.make_pair(image, c)


def test_kernels_are_normalized_and_shaped():
  rng = np.random.default_rng(0)
  c = degrade.degradation_config()
  for _ in range(40):
    k = degrade.random_kernel(rng, c.first, c.kernel_range)
    assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1 and 7 <= k.shape[0] <= 21
    assert abs(k.sum() - 1) < 1e-9
  iso = degrade.gaussian_kernel(11, 2.0, 2.0, 0.0)
  np.testing.assert_allclose(iso, iso.T, atol=1e-12)
  aniso = degrade.gaussian_kernel(11, 3.0, 0.5, 0.0)
  assert aniso[5, :].sum() > 2 * aniso[:, 5].sum()  # wide along x, narrow along y
  sinc = degrade.sinc_kernel(21, np.pi / 4)
  assert abs(sinc.sum() - 1) < 1e-9 and sinc.min() < 0  # ringing lobes


def test_bicubic_mode_is_one_bicubic_downsample(image):
  """The classical SR setting: exactly PIL's bicubic downscale, noise only when asked."""
  lr, hr = degrade.make_pair(image, _cfg(mode='bicubic', output_dtype='float32'), seed=0)
  clean = np.round(degrade.resize(hr, 16, 16, 'bicubic').clip(0, 1) * 255) / 255
  np.testing.assert_allclose(lr, clean, atol=1e-6)
  noisy, _ = degrade.make_pair(image, _cfg(mode='bicubic', output_dtype='float32',
                                           bicubic_noise=(5.0, 5.0)), seed=0)
  assert 2.0 / 255 < np.std(noisy - clean) < 8.0 / 255
  with pytest.raises(ValueError, match='degradation.mode'):
    degrade.make_pair(image, _cfg(mode='jpeg'), seed=0)
