"""Paper-size text-conditioned GigaGAN upsampler, 8x: 64 -> 512 px (358.6M params; paper 359.1M).

  python -m gigagan_jax.train --config=configs/up_paper.py --workdir=gs://.../up512 \
      --config.data.builder=<prepared 512 px captioned images> \
      --config.loss.lpips_path=<lpips_vgg.npz>

Paper section 4: the GAN objective (MS-I/O D, matching-aware) plus LPIPS with
weight 10, minibatch-std in D, Gaussian noise on the low-res input; frozen
CLIP ViT-L/14 text backbone as the base model. The same weights upsample
128 -> 1024 (fully convolutional). Numbers the paper leaves open are ours.
"""
from configs import sr_base
from configs import up_base


def get_config(arg=None):
  del arg
  c = sr_base.get_sr_config(up_base.paper_upsampler(scale=8), hr_size=512)
  t = c.text
  t.tokenizer, t.backbone, t.max_len, t.feature_dim = 'clip', 'clip', 77, 768
  c.data.degradation.bicubic_noise = (0.0, 5.0)
  d = c.discriminator
  d.channels = sr_base.discriminator_channels(512, 1024, 128)
  d.self_attn_resolutions = (8, 16)
  d.dtype = 'bfloat16'
  c.loss.lpips_weight = 10.0
  c.loss.gan_weight = 1.0
  c.loss.pixel_weight = 0.0
  c.data.batch_size = 256
  c.train.steps = 500_000
  c.train.ema_decay = 0.9999         # the base model's per-step decay (paper Table A2)
  c.train.sample_every = 2000
  c.train.ckpt_every = 2000
  return c
