"""Minibatch standard deviation (ProGAN): lets D see sample diversity."""
import jax.numpy as jnp


def minibatch_std(x, group_size: int, num_channels: int = 1, eps: float = 1e-8):
  """Appends the within-group feature stddev as extra channels.

  x: [B, H, W, C] with B divisible by the group size (min(group_size, B)).
  Returns [B, H, W, C + num_channels].
  """
  b, h, w, c = x.shape
  g = min(group_size, b)
  if b % g:
    raise ValueError(f'minibatch_std: batch {b} not divisible by group size {g}')
  y = x.astype(jnp.float32).reshape(g, b // g, h, w, num_channels, c // num_channels)
  y = jnp.sqrt(jnp.var(y, axis=0) + eps)          # [B/g, H, W, n, C/n]
  y = jnp.mean(y, axis=(1, 2, 4))                 # [B/g, n]
  y = jnp.tile(y[None, :, None, None, :], (g, 1, h, w, 1)).reshape(b, h, w, num_channels)
  return jnp.concatenate([x, y.astype(x.dtype)], axis=-1)
