"""Real-ESRGAN-style degradations: (low-res, high-res) pairs for the upsampler.

The high-order degradation model of Real-ESRGAN (Wang et al., ICCVW 2021),
reimplemented with numpy/scipy/Pillow so it runs inside grain workers:

  HR crop -> [blur -> resize -> noise -> JPEG]              first order
          -> [blur? -> resize -> noise]                     second order (optional)
          -> {resize to HR/scale + sinc?, JPEG} in random order   -> LR

Blur kernels: isotropic / anisotropic Gaussian, generalized Gaussian
(exp(-0.5 d^beta)), plateau (1 / (1 + d^beta)), where d = x^T Sigma^-1 x for a
rotated covariance Sigma, and 2-D sinc (ideal low-pass, ringing and overshoot
artifacts). Resize: area (box), bilinear or bicubic, up, down or keep. Noise:
Gaussian or Poisson, per channel or gray (one field for all channels). JPEG:
Pillow encode/decode at a random quality.

Everything random comes from one `np.random.Generator`, so a pair is a pure
function of (image, config, seed): `make_pair(img, cfg, seed=s)` twice gives
identical arrays. All numbers live in `degradation_config()`.
"""
import io

import ml_collections
import numpy as np
from PIL import Image
from scipy import special

KERNEL_TYPES = ('iso', 'aniso', 'generalized_iso', 'generalized_aniso',
                'plateau_iso', 'plateau_aniso')
RESIZE_MODES = {'area': Image.BOX, 'bilinear': Image.BILINEAR, 'bicubic': Image.BICUBIC}


def _stage(*, blur_prob, sigma, resize_probs, resize_range, noise_range,
           poisson_scale_range):
  s = ml_collections.ConfigDict()
  s.blur_prob = blur_prob              # chance of blurring at all
  # Kernel family and its probability (Real-ESRGAN's table).
  s.kernel_types = KERNEL_TYPES
  s.kernel_probs = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
  s.sinc_prob = 0.1                    # chance the blur is a sinc instead
  s.blur_sigma = sigma                 # Gaussian std range, pixels
  s.betag_range = (0.5, 4.0)           # generalized Gaussian shape exponent
  s.betap_range = (1.0, 2.0)           # plateau shape exponent
  s.resize_probs = resize_probs        # (up, down, keep)
  s.resize_range = resize_range        # scale factor range (down below 1, up above)
  s.gaussian_noise_prob = 0.5          # else Poisson noise
  s.noise_range = noise_range          # Gaussian std, in 0..255 units
  s.poisson_scale_range = poisson_scale_range
  s.gray_noise_prob = 0.4              # same noise in all channels
  return s


def degradation_config() -> ml_collections.ConfigDict:
  """Real-ESRGAN's x4 settings (its `train_realesrgan_x4plus.yml`).

  Fields (ranges are (low, high), sampled uniformly):
    scale: HR side / LR side (4 or 8 for GigaGAN's upsampler).
    hr_size: side of the random HR crop; 0 = use the whole image.
    kernel_range: (min, max) blur kernel side, odd values in between.
    first, second: the two orders' blur / resize / noise settings (above).
    first_jpeg_range: JPEG quality after the first order.
    second_order_prob: chance of applying the second order (0 = first only).
    final_sinc_prob: chance of a sinc blur in the final resize step.
    final_jpeg_range: JPEG quality of the final step.
    resize_modes: interpolation modes drawn uniformly at every resize.
    output_dtype: 'uint8' (0..255) or 'float32' (0..1) for both lr and hr.
    mode: 'realesrgan' (the pipeline above) or 'bicubic': the classical SR
      setting, one bicubic downsample of the HR crop (+ Gaussian noise of std
      `bicubic_noise`, the paper's input augmentation); PSNR/SSIM tables of
      SR papers are measured this way.
    bicubic_noise: (low, high) Gaussian noise std in 0..255 units ('bicubic' mode).
  """
  c = ml_collections.ConfigDict()
  c.mode = 'realesrgan'
  c.bicubic_noise = (0.0, 0.0)
  c.scale = 4
  c.hr_size = 256
  c.kernel_range = (7, 21)
  c.first = _stage(blur_prob=1.0, sigma=(0.2, 3.0), resize_probs=(0.2, 0.7, 0.1),
                   resize_range=(0.15, 1.5), noise_range=(1.0, 30.0),
                   poisson_scale_range=(0.05, 3.0))
  c.first_jpeg_range = (30, 95)
  c.second_order_prob = 1.0
  c.second = _stage(blur_prob=0.8, sigma=(0.2, 1.5), resize_probs=(0.3, 0.4, 0.3),
                    resize_range=(0.3, 1.2), noise_range=(1.0, 25.0),
                    poisson_scale_range=(0.05, 2.5))
  c.final_sinc_prob = 0.8
  c.final_jpeg_range = (30, 95)
  c.resize_modes = ('area', 'bilinear', 'bicubic')
  c.output_dtype = 'uint8'
  return c


# ---------------------------------------------------------------- kernels

def _grid(size: int):
  r = np.arange(size, dtype=np.float64) - (size - 1) / 2
  return np.meshgrid(r, r, indexing='xy')


def _mahalanobis(size, sigma_x, sigma_y, theta):
  """x^T Sigma^-1 x on a size x size grid for a covariance rotated by theta."""
  rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
  cov = rot @ np.diag([sigma_x**2, sigma_y**2]) @ rot.T
  inv = np.linalg.inv(cov)
  xx, yy = _grid(size)
  return inv[0, 0] * xx**2 + (inv[0, 1] + inv[1, 0]) * xx * yy + inv[1, 1] * yy**2


def gaussian_kernel(size, sigma_x, sigma_y, theta, kind='gaussian', beta=1.0):
  """Normalized blur kernel float64 [size, size].

  kind: 'gaussian' exp(-d/2), 'generalized' exp(-0.5 d^beta), 'plateau'
  1/(1 + d^beta), with d the squared Mahalanobis distance.
  """
  d = _mahalanobis(size, sigma_x, sigma_y, theta)
  if kind == 'gaussian':
    k = np.exp(-0.5 * d)
  elif kind == 'generalized':
    k = np.exp(-0.5 * d**beta)
  elif kind == 'plateau':
    k = 1.0 / (1.0 + d**beta)
  else:
    raise ValueError(f'unknown kernel kind {kind!r}')
  return k / k.sum()


def sinc_kernel(size, cutoff):
  """Circular ideal low-pass kernel float64 [size, size], cutoff in radians/pixel."""
  xx, yy = _grid(size)
  r = np.hypot(xx, yy)
  with np.errstate(divide='ignore', invalid='ignore'):
    k = cutoff * special.j1(cutoff * r) / (2 * np.pi * r)
  k[r == 0] = cutoff**2 / (4 * np.pi)  # the limit at r -> 0
  return k / k.sum()


def random_kernel(rng: np.random.Generator, stage, kernel_range) -> np.ndarray:
  """Samples one blur kernel of `stage` (a config from degradation_config)."""
  lo, hi = kernel_range
  size = int(rng.choice(np.arange(lo, hi + 1, 2)))
  if rng.uniform() < stage.sinc_prob:
    # Small kernels cannot hold low cutoffs without truncation artifacts.
    cutoff = rng.uniform(np.pi / 3 if size < 13 else np.pi / 5, np.pi)
    return sinc_kernel(size, cutoff)
  probs = np.asarray(stage.kernel_probs, np.float64)
  kind = stage.kernel_types[int(rng.choice(len(probs), p=probs / probs.sum()))]
  sx = rng.uniform(*stage.blur_sigma)
  if kind.endswith('_iso') or kind == 'iso':
    sy, theta = sx, 0.0
  else:
    sy, theta = rng.uniform(*stage.blur_sigma), rng.uniform(-np.pi, np.pi)
  family, beta = 'gaussian', 1.0
  if kind.startswith('generalized'):
    family, beta = 'generalized', rng.uniform(*stage.betag_range)
  elif kind.startswith('plateau'):
    family, beta = 'plateau', rng.uniform(*stage.betap_range)
  return gaussian_kernel(size, sx, sy, theta, family, beta)


# ---------------------------------------------------------------- operations

def blur(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """float32 [H, W, C] convolved with kernel [k, k] (reflect padding)."""
  # Imported here: scipy.signal takes ~0.7 s to import, which every training,
  # sampling and test process would pay (data.pipeline imports this module)
  # and only the SR data's workers use.
  from scipy import signal  # pylint: disable=g-import-not-at-top
  p = kernel.shape[0] // 2
  padded = np.pad(img, ((p, p), (p, p), (0, 0)), mode='reflect')
  out = signal.fftconvolve(padded, kernel[:, :, None], mode='valid', axes=(0, 1))
  return out.astype(np.float32)


def resize(img: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
  """float32 [H, W, C] -> float32 [height, width, C], per channel in Pillow 'F' mode
  (no 8-bit rounding between steps)."""
  resample = RESIZE_MODES[mode]
  chans = [np.asarray(Image.fromarray(np.ascontiguousarray(img[..., c])).resize(
      (width, height), resample)) for c in range(img.shape[-1])]
  return np.stack(chans, axis=-1).astype(np.float32)


def add_noise(img, rng, stage) -> np.ndarray:
  """Gaussian or Poisson noise on float32 [H, W, C] in 0..1; clipped to 0..1."""
  gray = rng.uniform() < stage.gray_noise_prob
  shape = img.shape[:2] + ((1,) if gray else (img.shape[2],))
  if rng.uniform() < stage.gaussian_noise_prob:
    noise = rng.normal(0.0, rng.uniform(*stage.noise_range) / 255.0, shape)
  else:
    scale = rng.uniform(*stage.poisson_scale_range)
    base = img.mean(-1, keepdims=True) if gray else img
    # Photon-count noise at 8-bit levels: variance grows with intensity.
    base = np.clip(base, 0, 1)
    noise = scale * (rng.poisson(base * 255.0) / 255.0 - base)
  return np.clip(img + noise, 0.0, 1.0).astype(np.float32)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
  """JPEG round trip of float32 [H, W, 3] in 0..1 at `quality` (Pillow)."""
  u8 = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(u8).save(buf, format='JPEG', quality=int(quality))
  buf.seek(0)
  with Image.open(buf) as im:
    return np.asarray(im.convert('RGB'), np.float32) / 255.0


def _random_resize(img, rng, stage, base_h, base_w, modes):
  kind = int(rng.choice(3, p=np.asarray(stage.resize_probs) / np.sum(stage.resize_probs)))
  lo, hi = stage.resize_range
  s = rng.uniform(1.0, hi) if kind == 0 else rng.uniform(lo, 1.0) if kind == 1 else 1.0
  mode = modes[int(rng.integers(len(modes)))]
  return resize(img, max(1, round(base_h * s)), max(1, round(base_w * s)), mode)


def degrade(hr: np.ndarray, cfg: ml_collections.ConfigDict,
            rng: np.random.Generator) -> np.ndarray:
  """The Real-ESRGAN degradation of one image.

  Args:
    hr: [H, W, 3], uint8 (0..255) or float (0..1); H and W divisible by cfg.scale.
    cfg: degradation_config().
    rng: the only source of randomness.

  Returns:
    float32 [H / scale, W / scale, 3] in 0..1, rounded to 8-bit levels.
  """
  h, w = hr.shape[:2]
  if h % cfg.scale or w % cfg.scale:
    raise ValueError(f'HR size {h}x{w} is not divisible by degradation scale {cfg.scale}')
  th, tw = h // cfg.scale, w // cfg.scale
  x = hr.astype(np.float32) / 255.0 if hr.dtype == np.uint8 else hr.astype(np.float32)
  mode = cfg.get('mode', 'realesrgan')
  if mode == 'bicubic':
    x = resize(x, th, tw, 'bicubic')
    std = rng.uniform(*cfg.bicubic_noise) / 255.0
    x = x + rng.normal(0.0, std, x.shape) if std > 0 else x
    return (np.clip(np.round(x * 255.0), 0, 255) / 255.0).astype(np.float32)
  if mode != 'realesrgan':
    raise ValueError(f"degradation.mode must be 'realesrgan' or 'bicubic', got {mode!r}")
  modes = tuple(cfg.resize_modes)

  # First order, sizes relative to the HR image.
  if rng.uniform() < cfg.first.blur_prob:
    x = blur(x, random_kernel(rng, cfg.first, cfg.kernel_range))
  x = _random_resize(x, rng, cfg.first, h, w, modes)
  x = add_noise(x, rng, cfg.first)
  x = jpeg(x, rng.integers(cfg.first_jpeg_range[0], cfg.first_jpeg_range[1] + 1))

  # Second order, sizes relative to the LR target (as Real-ESRGAN does).
  if rng.uniform() < cfg.second_order_prob:
    if rng.uniform() < cfg.second.blur_prob:
      x = blur(x, random_kernel(rng, cfg.second, cfg.kernel_range))
    x = _random_resize(x, rng, cfg.second, th, tw, modes)
    x = add_noise(x, rng, cfg.second)

  # Final step: resize to the target (+ sinc) and JPEG, in random order, so
  # the model sees both ringing-then-blocking and blocking-then-ringing.
  quality = rng.integers(cfg.final_jpeg_range[0], cfg.final_jpeg_range[1] + 1)
  use_sinc = rng.uniform() < cfg.final_sinc_prob
  lo, hi = cfg.kernel_range
  sinc_size = int(rng.choice(np.arange(lo, hi + 1, 2)))
  sinc_cut = rng.uniform(np.pi / 3, np.pi)
  mode = modes[int(rng.integers(len(modes)))]

  def resize_sinc(y):
    y = resize(y, th, tw, mode)
    return blur(y, sinc_kernel(sinc_size, sinc_cut)) if use_sinc else y

  if rng.uniform() < 0.5:
    x = jpeg(np.clip(resize_sinc(x), 0, 1), quality)
  else:
    x = resize_sinc(jpeg(np.clip(x, 0, 1), quality))
  return (np.clip(np.round(x * 255.0), 0, 255) / 255.0).astype(np.float32)


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """A random size x size crop of img [H, W, C] (whole image if size == 0)."""
  h, w = img.shape[:2]
  if size == 0:
    return img
  if size > h or size > w:
    raise ValueError(f'HR crop {size} is larger than the image {h}x{w}; lower '
                     'degradation.hr_size or use higher-resolution data')
  y = int(rng.integers(h - size + 1))
  x = int(rng.integers(w - size + 1))
  return img[y:y + size, x:x + size]


def make_pair(img: np.ndarray, cfg: ml_collections.ConfigDict, *, seed=None,
              rng: np.random.Generator | None = None) -> tuple:
  """(lr, hr) training pair from one image.

  Args:
    img: uint8 [H, W, 3] (or float in 0..1).
    cfg: degradation_config().
    seed: int or sequence of ints seeding a fresh Generator; or pass `rng`.

  Returns:
    lr [s/scale, s/scale, 3] and hr [s, s, 3] with s = cfg.hr_size (or the
    image side when 0); dtype uint8 (0..255) or float32 (0..1) per
    cfg.output_dtype.
  """
  if rng is None:
    if seed is None:
      raise ValueError('make_pair needs a seed or an rng (pairs must be reproducible)')
    rng = np.random.default_rng(seed)
  hr = random_crop(img, cfg.hr_size, rng)
  lr = degrade(hr, cfg, rng)
  if cfg.output_dtype == 'uint8':
    hr = hr if hr.dtype == np.uint8 else np.clip(np.round(hr * 255), 0, 255).astype(np.uint8)
    return np.round(lr * 255).astype(np.uint8), hr
  if cfg.output_dtype == 'float32':
    hr = hr.astype(np.float32) / 255.0 if hr.dtype == np.uint8 else hr.astype(np.float32)
    return lr, hr
  raise ValueError("degradation.output_dtype must be 'uint8' or 'float32', "
                   f'got {cfg.output_dtype!r}')
