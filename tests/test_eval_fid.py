"""Frechet distance, KID and streaming feature statistics."""
import numpy as np
import pytest
import scipy.linalg

from gigagan_jax.evaluate import fid


def _random_stats(rng, d, n):
  x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d) + rng.normal(size=d)
  return x.mean(0), np.cov(x, rowvar=False)


def _direct_fd(mu1, s1, mu2, s2):
  """Independent route: tr((s1 s2)^1/2) = sum sqrt(eig(s1^1/2 s2 s1^1/2)), all symmetric."""
  w, v = np.linalg.eigh(s1)
  root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
               - 2 * np.sum(np.sqrt(np.clip(inner, 0, None))))


@pytest.mark.parametrize('d', [8, 64])
def test_frechet_distance_matches_direct_computation(d):
  rng = np.random.default_rng(d)
  mu1, s1 = _random_stats(rng, d, 4 * d)
  mu2, s2 = _random_stats(rng, d, 4 * d)
  ours = fid.frechet_distance(mu1, s1, mu2, s2)
  # The textbook formula with scipy's sqrtm of the product.
  textbook = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
              - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real))
  direct = _direct_fd(mu1, s1, mu2, s2)
  assert abs(ours - textbook) / abs(textbook) < 1e-6
  assert abs(ours - direct) / abs(direct) < 1e-6, (ours, direct)


def test_frechet_distance_of_identical_stats_is_zero():
  rng = np.random.default_rng(0)
  mu, s = _random_stats(rng, 32, 200)
  assert abs(fid.frechet_distance(mu, s, mu, s)) < 1e-6
  # Shifting the mean by v adds exactly |v|^2.
  v = rng.normal(size=32)
  assert fid.frechet_distance(mu, s, mu + v, s) == pytest.approx(v @ v, rel=1e-6)


def test_frechet_distance_with_singular_covariances_is_finite():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(5, 16)), rng.normal(size=(5, 16))  # 5 samples: rank-4 covariances
  value = fid.frechet_distance(x.mean(0), np.cov(x, rowvar=False),
                               y.mean(0), np.cov(y, rowvar=False))
  assert np.isfinite(value) and value > 0


def test_kid_identical_sets_near_zero_and_shift_positive():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(400, 16))
  same = fid.kid(x, x, subsets=20, subset_size=100)
  other = fid.kid(x, rng.normal(size=(400, 16)), subsets=20, subset_size=100)
  shifted = fid.kid(x, x + 1.0, subsets=20, subset_size=100)
  # Subsets of one set overlap, which biases the estimate slightly negative; it is
  # still tiny next to a real difference between the distributions.
  assert shifted > 1.0
  assert abs(same) < 0.01 * shifted and abs(other) < 0.01 * shifted


def test_kid_matches_a_direct_unbiased_mmd():
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 5)) + 0.5
  k = lambda a, b: (a @ b.T / 5 + 1) ** 3
  m = 30
  direct = ((k(x, x).sum() - np.trace(k(x, x))) / (m * (m - 1))
            + (k(y, y).sum() - np.trace(k(y, y))) / (m * (m - 1)) - 2 * k(x, y).mean())
  # One subset covering every row is a permutation of the full sets.
  assert fid.kid(x, y, subsets=1, subset_size=m) == pytest.approx(direct, rel=1e-10)


def test_feature_stats_streaming_equals_numpy_and_roundtrips(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(257, 12)).astype(np.float32) * 0.1 + 100.0  # large mean, small spread
  stats = fid.FeatureStats(max_keep=100)
  for i in range(0, len(x), 50):
    stats.update(x[i:i + 50])
  np.testing.assert_allclose(stats.mean, x.astype(np.float64).mean(0), rtol=1e-12)
  np.testing.assert_allclose(stats.cov, np.cov(x.astype(np.float64), rowvar=False),
                             rtol=1e-9, atol=1e-15)
  assert stats.features.shape == (100, 12)

  calls = []
  def compute():
    calls.append(1)
    return stats
  name = 'shapes 64px / lanczos, clean299'
  first = fid.cached_stats(str(tmp_path), name, compute, network='inception')
  again = fid.cached_stats(str(tmp_path), name, compute)
  assert len(calls) == 1 and first is stats
  assert again.n == 257 and again.meta == {'name': name, 'network': 'inception'}
  np.testing.assert_allclose(again.cov, stats.cov, rtol=1e-12)
  np.testing.assert_array_equal(again.features, stats.features)
  assert again.frechet_distance(stats) == pytest.approx(0.0, abs=1e-8)


def test_errors_name_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match='missing.npz'):
    fid.FeatureStats.load(str(tmp_path / 'missing.npz'))
  with pytest.raises(ValueError, match='empty'):
    fid.FeatureStats().mean
  with pytest.raises(ValueError, match='shape mismatch'):
    fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
