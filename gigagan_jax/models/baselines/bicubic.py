"""Bicubic interpolation: the parameter-free floor every SR model must beat."""
import jax
import ml_collections
from flax import linen as nn


def bicubic_upsample(x, scale: int):
  """[B, h, w, C] -> [B, h*scale, w*scale, C] by `jax.image.resize(..., 'bicubic')`.

  Keys' cubic with a = -0.5 (the kernel of PIL/Matlab-style bicubic); values
  are not clipped, so overshoot at edges is kept as the kernel makes it.
  """
  b, h, w, c = x.shape
  return jax.image.resize(x, (b, h * scale, w * scale, c), method='bicubic')


class Bicubic(nn.Module):
  """Bicubic upsampler with the toolbox interface; it has no variables.

  Attributes:
    cfg: frozen block with `kind='bicubic'` and `scale`.
  """
  cfg: ml_collections.FrozenConfigDict

  def __call__(self, lr, text=None, z=None):
    """lr float [B, h, w, 3] -> [B, h*scale, w*scale, 3]; text and z are ignored."""
    del text, z
    return bicubic_upsample(lr, self.cfg.scale)
