"""SR baselines of the toolbox, trained by the same loop: bicubic, SRCNN, ESRGAN, SwinIR.

  python -m gigagan_jax.train --config=configs/sr_baselines.py:srcnn --workdir=runs/srcnn
  for k in bicubic srcnn esrgan swinir; do python -m gigagan_jax.train \
      --config=configs/sr_baselines.py:$k --workdir=runs/sr/$k; done

`get_config('KIND')` or `'KIND,paper'`: without ',paper' a CPU-sized model on
captioned_shapes (4x, 16 -> 64 px); with it the published size (SRCNN 9-5-5
64/32, ESRGAN 23 RRDBs, SwinIR classical 6x6 blocks of 180 wide) on 256 px
HR crops. Losses follow each paper: SRCNN and SwinIR L1 only (SRCNN's paper
used L2); ESRGAN L1 1e-2 + perceptual 1 + GAN 5e-3, where our perceptual
term is LPIPS-VGG16 (ESRGAN's is a VGG19 feature distance) and our D is the
MS-I/O discriminator (ESRGAN's is a relativistic VGG-style D). Bicubic has
no parameters: its run only records the baseline's samples and metrics.
"""
from configs import sr_base
from gigagan_jax.models import baselines

SMALL = {  # CPU sizes, same fields as the published ones
    'srcnn': dict(channels=(32, 16)),
    'esrgan': dict(num_feat=16, num_blocks=2, growth=8),
    'swinir': dict(embed_dim=24, depths=(2, 2), num_heads=(2, 2), window_size=8, num_feat=16),
}


def get_config(arg='srcnn'):
  kind, _, size = (arg or 'srcnn').partition(',')
  paper = size == 'paper'
  u = baselines.baseline_config(kind, scale=4)
  if not paper:
    for k, v in SMALL.get(kind, {}).items():
      u[k] = v
  c = sr_base.get_sr_config(u, hr_size=256 if paper else 64)
  if not paper:
    c.data.num_examples = 2048
    d = c.discriminator
    d.channels, d.attn_heads, d.head_layers, d.text_dim = (64, 64, 32, 32, 16), 2, 2, 64
    d.text_encoder = sr_base.base.text_encoder_config(dim=64, layers=1, heads=2)
    d.mbstd_group = 0
  loss = c.loss
  loss.gan_weight = 0.0
  if kind == 'esrgan':
    loss.pixel_weight, loss.lpips_weight, loss.gan_weight = 1e-2, 1.0, 5e-3
  c.optim.g_lr = 2e-4 if paper else 1e-3
  c.optim.b1 = 0.9                   # Adam as these papers train (the GAN default is 0)
  c.data.batch_size = 16 if paper else 8
  c.train.steps = 200_000 if paper else 300
  c.train.sample_every = c.train.ckpt_every = 5000 if paper else 100
  return c

