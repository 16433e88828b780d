"""Shared structure of every super-resolution config (config.task = 'sr').

`get_sr_config(upsampler, hr_size)` takes a model block (configs/up_base.py
for GigaGAN's upsampler, `baselines.baseline_config` for bicubic / SRCNN /
ESRGAN / SwinIR) and adds data, discriminator and losses. The text-to-image
fields of base.py that an SR run reads keep their meaning (text, optim, mesh,
train); `generator` is removed.

Training pairs: HR crops of data.degradation.hr_size px from images stored at
data.resolution px, and their low-res versions made by data.degradation
('bicubic': the classical SR setting that PSNR/SSIM tables use; 'realesrgan':
the blind, real-world degradations).
"""
from configs import base
from gigagan_jax.data import degrade


def discriminator_channels(hr_size: int, widest: int, narrowest: int) -> tuple:
  """D widths for stage inputs 4..hr_size px: `widest` at 4 px, halving up to `narrowest`."""
  n = hr_size.bit_length() - 2
  return tuple(max(narrowest, widest >> max(0, i - 2)) for i in range(n))


def get_sr_config(upsampler, hr_size: int):
  c = base.get_base_config()
  del c['generator']
  c.task = 'sr'
  c.upsampler = upsampler

  c.data.resolution = hr_size        # stored image side (crops of hr_size are taken from it)
  # Half the training captions are empty: the model learns to upsample from
  # the image alone, so a caption it never saw, or none, does not steer it off
  # (bench/sr_natural.py measures each prompt setting against no dropout).
  c.data.caption_dropout = 0.5
  # And the other half lose each word with probability 0.3: a few captions
  # (bench/sr_natural.py trains on 14) are otherwise learned whole, as names
  # of their images, and a new caption then steered the upsampler off by
  # about 0.5 dB against the empty prompt; with word dropout, within 0.04.
  c.data.word_dropout = 0.3
  deg = c.data.degradation = degrade.degradation_config()
  deg.mode = 'bicubic'
  deg.bicubic_noise = (0.0, 0.0)     # paper: Gaussian noise on the LR input (std in 0..255 units)
  deg.scale = upsampler.scale
  deg.hr_size = hr_size

  d = c.discriminator
  d.channels = discriminator_channels(hr_size, 512, 64)
  d.self_attn_resolutions = ()
  d.levels = 3                       # HR pyramid levels fed to the MS-I/O D
  d.mbstd_group = 4                  # paper: minibatch-std on in the upsampler's D

  loss = c.loss
  loss.pixel_weight = 1.0            # L1 on [-1, 1] images
  loss.lpips_weight = 0.0            # paper: 10 (64->512); needs lpips_path
  loss.lpips_path = ''               # npz from `python -m gigagan_jax.frozen.lpips`
  loss.gan_weight = 1.0              # 0: no D (pixel / perceptual losses only)
  # Schedules of the weights above: (step, multiplier) points of a piecewise-
  # linear curve in the step count, () = 1 throughout. PSNR first, then GAN
  # (Real-ESRNet -> Real-ESRGAN): gan_weight_schedule = ((0, 0.), (N, 0.),
  # (N + ramp, 1.)), and the same for lpips_weight_schedule.
  loss.pixel_weight_schedule = ()
  loss.lpips_weight_schedule = ()
  loss.gan_weight_schedule = ()
  loss.r1_interval = 4

  c.train.ema_halflife_kimg = 1.0
  c.train.num_sample_seeds = 4       # SR: examples in the sample grid (bicubic | model | HR)
  return c
