"""Timing loops shared by the benchmarks: wall-clock ms of calls waited for."""
import time

import jax
import numpy as np

from gigagan_jax import tiling


def timed(fn, args, warmup: int, repeats: int) -> list[float]:
  """ms per call of fn(*args) (waited for), after `warmup` calls (at least one: compile)."""
  for _ in range(max(1, warmup)):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append((time.perf_counter() - t0) * 1000)
  return times


def time_tiled(fn, image, *, scale: int, tile: int, overlap, tile_batch: int, repeats: int):
  """ms per whole image of `tiling.upsample_tiled(fn, image, ...)`, compilation excluded.

  fn: [tile_batch, tile, tile, 3] -> [tile_batch, tile*scale, tile*scale, 3];
  image: float [S, S, 3]. Returns (times_ms, number of tiles, overlap used).
  """
  jax.block_until_ready(fn(np.zeros((tile_batch, tile, tile, 3), np.float32)))  # compile
  side = image.shape[0]
  ov = tiling.default_overlap(tile) if overlap is None else overlap
  n = len(tiling.tile_starts(max(side, tile), tile, ov))**2
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = tiling.upsample_tiled(fn, image, scale=scale, tile=tile, overlap=ov, batch=tile_batch)
    times.append((time.perf_counter() - t0) * 1000)
    assert out.shape == (side * scale, side * scale, 3), out.shape
  return times, n, ov
