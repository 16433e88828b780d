"""Frechet distance, KID and streaming feature statistics with an npz cache.

All statistics are numpy float64 on the host: a 2048x2048 covariance over tens
of thousands of images loses digits in float32, and FID is a small difference
of large traces.
"""
from __future__ import annotations

import io
import json
import re
import warnings
from typing import Any, Callable

import numpy as np
import scipy.linalg

from gigagan_jax import storage


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
  """Frechet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    d^2 = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))

  mu*: [D]; sigma*: [D, D] (symmetric PSD). Returns a Python float.

  The matrix square root is scipy's `sqrtm` of the product. With too few
  samples the product is singular and `sqrtm` can return inf/nan; as in the
  reference implementations we then retry with `eps` added to the diagonals
  (and warn). Round-off gives the root a tiny imaginary part, which is
  dropped; a large one means the inputs are not covariances and raises.
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
    raise ValueError(f'shape mismatch: mu {mu1.shape} vs {mu2.shape}, '
                     f'sigma {sigma1.shape} vs {sigma2.shape}')
  diff = mu1 - mu2
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    warnings.warn(f'frechet_distance: singular product of covariances; adding {eps} to the '
                  'diagonals (too few samples for the feature dimension?)')
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    max_imag = np.max(np.abs(np.diagonal(covmean).imag))
    if max_imag > 1e-3:
      raise ValueError(f'frechet_distance: sqrtm has an imaginary diagonal component of '
                       f'{max_imag:.3g}; the inputs are not valid covariance matrices')
    covmean = covmean.real
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def kid_per_subset(feats1: np.ndarray, feats2: np.ndarray, subsets: int = 100,
                   subset_size: int = 1000, seed: int = 0) -> np.ndarray:
  """Unbiased squared-MMD estimates on random subsets; [subsets] float64.

  feats*: [N*, D]. Kernel k(x, y) = (x.y / D + 1)^3 (polynomial, degree 3,
  gamma = 1/D, coef 1), as in Binkowski et al. 2018. Each subset draws
  min(subset_size, N1, N2) rows of each set without replacement; the
  within-set kernel sums leave out the diagonal, which makes each estimate
  unbiased. `seed` makes the draw reproducible.
  """
  x_all = np.asarray(feats1, np.float64)
  y_all = np.asarray(feats2, np.float64)
  if x_all.ndim != 2 or y_all.ndim != 2 or x_all.shape[1] != y_all.shape[1]:
    raise ValueError(f'expected features [N1, D] and [N2, D], got {x_all.shape}, {y_all.shape}')
  d = x_all.shape[1]
  m = min(subset_size, len(x_all), len(y_all))
  if m < 2:
    raise ValueError(f'KID needs at least 2 samples per set, got {len(x_all)} and {len(y_all)}')
  rng = np.random.default_rng(seed)
  out = np.empty(subsets)
  for i in range(subsets):
    x = x_all[rng.choice(len(x_all), m, replace=False)]
    y = y_all[rng.choice(len(y_all), m, replace=False)]
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    out[i] = within - 2.0 * kxy.mean()
  return out


def kid(feats1: np.ndarray, feats2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> float:
  """Kernel Inception Distance: mean of `kid_per_subset` (a Python float).

  Report `kid_per_subset(...).std()` beside it when the spread matters.
  """
  return float(kid_per_subset(feats1, feats2, subsets, subset_size, seed).mean())


class FeatureStats:
  """Streaming mean and covariance of feature vectors, accumulated in float64.

  `update` merges each batch with Chan et al.'s pairwise formula (batch mean
  and centred scatter combined with the running ones), which stays accurate
  when the mean is large relative to the spread, unlike sum / sum-of-squares.
  `cov` divides by N - 1, as `np.cov` (and so pytorch-fid) does.

  Optionally keeps up to `max_keep` raw features (for KID, precision/recall).
  """

  def __init__(self, dim: int | None = None, max_keep: int = 0):
    self.dim = dim
    self.n = 0
    self.max_keep = max_keep
    self._mean = None if dim is None else np.zeros(dim)
    self._scatter = None if dim is None else np.zeros((dim, dim))
    self._kept: list[np.ndarray] = []
    self._num_kept = 0
    self.meta: dict = {}  # how the features were made; filled by load / cached_stats

  def update(self, feats: Any) -> 'FeatureStats':
    """Adds a batch of features [B, D] (any float dtype, numpy or jax)."""
    x = np.asarray(feats, np.float64)
    if x.ndim != 2:
      raise ValueError(f'expected features [B, D], got shape {x.shape}')
    if self.dim is None:
      self.dim = x.shape[1]
      self._mean, self._scatter = np.zeros(self.dim), np.zeros((self.dim, self.dim))
    if x.shape[1] != self.dim:
      raise ValueError(f'feature dimension changed from {self.dim} to {x.shape[1]}')
    nb = x.shape[0]
    if nb == 0:
      return self
    mean_b = x.mean(axis=0)
    centred = x - mean_b
    delta = mean_b - self._mean
    total = self.n + nb
    self._scatter += centred.T @ centred + np.outer(delta, delta) * (self.n * nb / total)
    self._mean += delta * (nb / total)
    self.n = total
    if self._num_kept < self.max_keep:
      keep = x[:self.max_keep - self._num_kept]
      self._kept.append(keep)
      self._num_kept += len(keep)
    return self

  @property
  def mean(self) -> np.ndarray:
    """[D] float64."""
    if self.n == 0:
      raise ValueError('FeatureStats is empty: no features were added')
    return self._mean.copy()

  @property
  def cov(self) -> np.ndarray:
    """[D, D] float64, unbiased (N - 1)."""
    if self.n < 2:
      raise ValueError(f'a covariance needs at least 2 features, have {self.n}')
    return self._scatter / (self.n - 1)

  @property
  def features(self) -> np.ndarray:
    """The kept raw features [min(N, max_keep), D] float64."""
    if not self._kept:
      return np.zeros((0, self.dim or 0))
    return np.concatenate(self._kept)

  def frechet_distance(self, other: 'FeatureStats') -> float:
    return frechet_distance(self.mean, self.cov, other.mean, other.cov)

  def save(self, path: str, **meta: Any) -> None:
    """Writes mu, sigma, n (+ kept features and JSON `meta`) to an npz file.

    `meta` records how the features were made (network, preprocessing,
    dataset, split...), so a cache file explains itself.
    """
    arrays = {'mu': self.mean, 'sigma': self.cov, 'n': np.int64(self.n),
              'meta': np.array(json.dumps(meta, sort_keys=True, default=str))}
    if self._kept:
      arrays['features'] = self.features
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    storage.write_atomic(path, buf.getvalue())  # a killed job never leaves half a cache file

  @classmethod
  def load(cls, path: str) -> 'FeatureStats':
    """Reads a file written by `save` (also accepts pytorch-fid style npz with mu/sigma)."""
    if not storage.run_path(path).is_file():
      raise FileNotFoundError(f'feature statistics file not found: {path}')
    with np.load(io.BytesIO(storage.run_path(path).read_bytes())) as f:
      for key in ('mu', 'sigma'):
        if key not in f:
          raise KeyError(f'{path}: no {key!r} array (expected mu, sigma[, n, features, meta])')
      mu, sigma = f['mu'].astype(np.float64), f['sigma'].astype(np.float64)
      # Without a count (pytorch-fid files) pretend 2 samples so that cov == sigma.
      n = int(f['n']) if 'n' in f else 2
      feats = f['features'] if 'features' in f else None
      meta = json.loads(str(f['meta'])) if 'meta' in f else {}
    stats = cls(dim=mu.shape[0])
    stats.n, stats._mean, stats._scatter = n, mu, sigma * (n - 1)
    if feats is not None:
      stats._kept, stats._num_kept, stats.max_keep = [feats], len(feats), len(feats)
    stats.meta = meta
    return stats


def cache_path(cache_dir: str, name: str) -> str:
  """`cache_dir/<name>.npz` with `name` made filesystem-safe.

  Use a descriptive name that pins everything the statistics depend on, e.g.
  'coco2014_val_30k_256px_lanczos_clean299_inception-2015-12-05'.
  """
  safe = re.sub(r'[^A-Za-z0-9._=-]+', '_', name).strip('_')
  if not safe:
    raise ValueError(f'unusable cache name {name!r}')
  return str(storage.run_path(cache_dir) / (safe + '.npz'))


def cached_stats(cache_dir: str, name: str, compute: Callable[[], FeatureStats],
                 **meta: Any) -> FeatureStats:
  """Loads reference statistics `name` from `cache_dir`, or computes and saves them.

  `compute()` returns a filled FeatureStats; `meta` is stored with it.
  """
  path = cache_path(cache_dir, name)
  if storage.run_path(path).is_file():
    return FeatureStats.load(path)
  stats = compute()
  stats.save(path, name=name, **meta)
  stats.meta = dict(meta, name=name)
  return stats
