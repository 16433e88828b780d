"""Minibatch standard deviation (ProGAN): lets D see sample diversity."""
import jax.numpy as jnp


def minibatch_std(x, group_size: int, num_channels: int = 1, eps: float = 1e-8,
                  segments: int = 1):
  """Appends the within-group feature stddev as extra channels.

  x: [S*B, H, W, C], `segments` (S) batches of B samples stacked on the batch
  axis; groups are formed inside each segment only. (The discriminator stacks
  its pyramid levels this way: a group that mixed a 64 px level's features
  with a 32 px level's would measure the difference between levels, not the
  diversity of the samples.) Within a segment, sample b is grouped with
  b + B/g, b + 2B/g, ... where g = min(group_size, B) must divide B.
  Returns [S*B, H, W, C + num_channels].
  """
  n, h, w, c = x.shape
  if n % segments:
    raise ValueError(f'minibatch_std: batch {n} not divisible into {segments} segments')
  b = n // segments
  g = min(group_size, b)
  if b % g:
    raise ValueError(f'minibatch_std: batch {b} (per segment) not divisible by group size {g}')
  y = x.astype(jnp.float32).reshape(segments, g, b // g, h, w, num_channels, c // num_channels)
  y = jnp.sqrt(jnp.var(y, axis=1) + eps)          # [S, B/g, H, W, n, C/n]
  y = jnp.mean(y, axis=(2, 3, 5))                 # [S, B/g, n]
  y = jnp.broadcast_to(y[:, None, :, None, None, :], (segments, g, b // g, h, w, num_channels))
  return jnp.concatenate([x, y.reshape(n, h, w, num_channels).astype(x.dtype)], axis=-1)
