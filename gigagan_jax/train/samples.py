"""Fixed-latent sample grids of G_ema, written as PNG and to TensorBoard."""
import jax
import numpy as np
from PIL import Image

from gigagan_jax import storage
from gigagan_jax.models.baselines import bicubic_upsample


def to_uint8(images) -> np.ndarray:
  """[-1, 1] float [B, H, W, 3] -> uint8 [B, H, W, 3]."""
  return np.asarray(np.clip((np.asarray(images, np.float32) + 1) * 127.5 + 0.5, 0, 255), np.uint8)


def grid(images: np.ndarray, rows: int, pad: int = 2) -> np.ndarray:
  """uint8 [rows*cols, H, W, 3] -> one uint8 image, row-major, with a white gutter."""
  n, h, w, c = images.shape
  cols = -(-n // rows)
  out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
  for i, img in enumerate(images):
    r, col = divmod(i, cols)
    out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = img
  return out


def save_png(image: np.ndarray, path, upscale: int = 1):
  """Writes uint8 [H, W, 3] as PNG to a local or object-store (gs://) path."""
  img = Image.fromarray(image)
  if upscale > 1:  # tiny models draw 32 px images; enlarge with hard pixels to be seen
    img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
  storage.save_image(img, path)


class SampleGrid:
  """G_ema on fixed prompts (rows) x fixed latents (columns).

  Args:
    sample_fn: (ema_params, z [N, Dz], text) -> pyramid (jitted by the caller).
    prompts: captions, one grid row each; tokenize: the run's tokenizer.
  """

  def __init__(self, sample_fn, prompts, tokenize, z_dim: int, seeds: int, seed: int = 0):
    self.prompts = list(prompts)
    n = len(self.prompts)
    self.text = tokenize([p for p in self.prompts for _ in range(seeds)])
    z = jax.random.normal(jax.random.PRNGKey(seed), (seeds, z_dim))
    self.z = np.tile(np.asarray(z), (n, 1))
    self.rows = n
    self.sample_fn = sample_fn

  def render(self, ema_params) -> np.ndarray:
    return grid(to_uint8(self.sample_fn(ema_params, self.z, self.text)[0]), self.rows)


class SRSampleGrid:
  """An upsampler's G_ema on fixed low-res inputs: one row per example,
  (bicubic | G_ema | ground truth).

  Args:
    sample_fn: (ema_params, lr [N,h,h,3] in [-1,1], text, z [N, Dz]) -> [N,H,H,3] (jitted).
    batch: a data batch with 'lr', 'image' (uint8), 'tokens', 'eot'; its first
      `count` examples are shown.
  """

  def __init__(self, sample_fn, batch, count: int, z_dim: int, seed: int = 0):
    self.lr = np.asarray(batch['lr'][:count], np.float32) / 127.5 - 1.0
    self.hr = np.asarray(batch['image'][:count])
    self.text = {k: np.asarray(batch[k][:count]) for k in ('tokens', 'eot')}
    self.z = np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (len(self.lr), z_dim)))
    self.sample_fn = sample_fn

  def render(self, ema_params) -> np.ndarray:
    out = to_uint8(self.sample_fn(ema_params, self.lr, self.text, self.z))
    bicubic = to_uint8(bicubic_upsample(self.lr, out.shape[1] // self.lr.shape[1]))
    rows = np.stack([bicubic, out, self.hr], axis=1).reshape((-1,) + out.shape[1:])
    return grid(rows, len(self.lr))
