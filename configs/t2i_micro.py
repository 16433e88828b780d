"""Micro text-to-image GigaGAN: the smallest config with every part present.

For tests and quick checks of the training machinery (sharding, resume,
preemption), where compile time matters more than image quality:

  python -m gigagan_jax.train --config=configs/t2i_micro.py --workdir=runs/micro

Channel widths are multiples of 8 so that every sharding path (fsdp=8,
tensor=2) actually splits the weights.
"""
from configs import base


def get_config(arg=None):
  del arg
  c = base.get_base_config()
  c.text.max_len = 16

  g = c.generator
  g.resolution = 32
  g.w_dim = 32
  g.z_dim = 16
  g.mapping_layers = 2
  g.channels = (32, 32, 16, 16)      # 4, 8, 16, 32 px
  g.convs_per_scale = (1, 1, 1, 1)
  g.kernel_bank = (2, 2, 1, 1)
  g.self_attn_resolutions = (8,)
  g.cross_attn_resolutions = (8,)
  g.attn_heads = 2
  g.attn_mlp_ratio = 2
  g.pyramid_levels = 2               # 32, 16
  g.text_encoder = base.text_encoder_config(dim=32, layers=1, heads=2)

  d = c.discriminator
  d.channels = (32, 32, 16, 16)
  d.self_attn_resolutions = (8,)
  d.attn_heads = 2
  d.head_layers = 1
  d.text_dim = 32
  d.text_encoder = base.text_encoder_config(dim=32, layers=1, heads=2)

  c.data.resolution = 32
  c.data.num_examples = 256
  c.data.batch_size = 8

  # R1 every step: one compiled step variant per test instead of two (the
  # host's lazy choice is tested on its own in tests/test_train_step.py).
  c.loss.r1_interval = 1
  c.train.steps = 6
  c.train.ema_halflife_kimg = 0.01
  c.train.log_every = 1
  c.train.sample_every = 1000
  c.train.ckpt_every = 3
  c.train.num_sample_seeds = 2
  return c
