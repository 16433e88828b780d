"""SRCNN (Dong et al., TPAMI 2016): three convs on the bicubic-upsampled image.

The 9-5-5 model with 64/32 channels: patch extraction (9x9, 64), non-linear
mapping (5x5, 32), reconstruction (5x5, 3), ReLU between them, no residual
connection (the network predicts the HR image itself, as in the paper).
Differences from the paper, for interchangeability with the other models:
RGB in and out instead of the Y channel, and 'SAME' zero padding so the
output has the bicubic image's size (the paper used valid convs and compared
the centre crop).
"""
import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from gigagan_jax.models.baselines.bicubic import bicubic_upsample
from gigagan_jax.parallel import to_dtype

_part = nn.with_logical_partitioning


class SRCNN(nn.Module):
  """Attributes:
    cfg: frozen block with `kind='srcnn'`, `scale`, `kernel_sizes`, `channels`,
      `dtype`, `param_dtype` (see `gigagan_jax.models.baselines`).
  """
  cfg: ml_collections.FrozenConfigDict

  @nn.compact
  def __call__(self, lr, text=None, z=None):
    """lr float32 [B, h, w, 3] in [-1, 1] -> [B, h*scale, w*scale, 3]; text, z ignored."""
    del text, z
    cfg = self.cfg
    dtype, pdtype = to_dtype(cfg.dtype), to_dtype(cfg.param_dtype)
    x = bicubic_upsample(lr.astype(jnp.float32), cfg.scale).astype(dtype)
    widths = tuple(cfg.channels) + (lr.shape[-1],)
    for i, (k, width) in enumerate(zip(cfg.kernel_sizes, widths)):
      last = i == len(widths) - 1
      # He init for the ReLU layers; the paper's N(0, 1e-3) init trains far slower.
      init = (nn.initializers.variance_scaling(1.0, 'fan_in', 'normal') if last
              else nn.initializers.he_normal())
      x = nn.Conv(width, (k, k), padding='SAME', dtype=dtype, param_dtype=pdtype,
                  kernel_init=_part(init, (None, None, 'conv_in', 'conv_out')),
                  bias_init=_part(nn.initializers.zeros, ('conv_out',)), name=f'conv{i}')(x)
      if not last:
        x = jax.nn.relu(x)
    return x.astype(jnp.float32)
