"""GigaGAN 64 px text-to-image base model, sized after the paper.

Paper (PAPER_NOTES.md 1, 5): G 652.5M params, D 381.4M, CLIP ViT-L/14 text
backbone (penultimate layer, 77 tokens), z=128, 4-layer mapping, 5-level
pyramid 64..4 px, AdamW lr 0.0025 betas (0, 0.99), batch 512-1024, R1 every 16,
G EMA 0.9999 per step.
Widths, kernel-bank sizes, attention placement and T's depth are not in the
paper text we have (open questions 1-4): the values below are our choice,
picked so that the parameter counts land on the paper's.

  python -m gigagan_jax.models.summary --config=configs/t2i_paper.py
  python -m gigagan_jax.train --config=configs/t2i_paper.py --workdir=... \
      --config.text.backbone_path=/path/to/clip-vit-large-patch14 \
      --config.loss.clip_dir=/path/to/clip-vit-base-patch32
"""
from configs import base


def get_config(arg=None):
  del arg
  c = base.get_base_config()
  c.text.tokenizer = 'clip'
  c.text.max_len = 77
  c.text.backbone = 'clip'
  c.text.backbone_layer = -2
  c.text.feature_dim = 768           # CLIP ViT-L/14 text width

  g = c.generator
  g.resolution = 64
  g.w_dim = 1024
  g.channels = (1024, 1024, 1024, 512, 256)      # 4, 8, 16, 32, 64 px
  g.convs_per_scale = (2, 2, 2, 2, 2)
  g.kernel_bank = (8, 8, 8, 8, 8)
  g.self_attn_resolutions = (8, 16, 32)
  g.cross_attn_resolutions = (8, 16, 32)
  g.attn_heads = 16
  g.pyramid_levels = 5
  g.text_encoder = base.text_encoder_config(dim=768, layers=4, heads=12)
  g.dtype = 'bfloat16'

  d = c.discriminator
  d.channels = (2048, 2048, 1536, 1024, 512)     # stage inputs 4 ... 64 px
  d.self_attn_resolutions = (8, 16, 32)
  d.attn_heads = 16
  d.head_layers = 4
  d.text_dim = 768
  d.text_encoder = base.text_encoder_config(dim=768, layers=2, heads=12)
  d.dtype = 'bfloat16'

  # The paper's objective (PAPER_NOTES 3): V_MS-I/O + L_CLIP + L_Vision, written
  # without weights, so both at 1. tau = 1/100 (OpenAI CLIP's logit scale; Eq. 9
  # writes none). Vision-aided D on CLIP ViT-B/32 (Table A2). Both need the
  # CLIP weights: set clip_dir to a Hugging Face openai/clip-vit-base-patch32
  # download (config.json, model.safetensors, vocab.json, merges.txt); the
  # summary and the planner size them without it.
  c.loss.clip_weight = 1.0
  c.loss.vision_aided_weight = 1.0
  c.loss.clip_dir = ''               # set: --config.loss.clip_dir=/path/to/clip-vit-base-patch32

  c.data.resolution = 64
  c.data.batch_size = 512
  c.train.steps = 1_350_000
  c.train.ema_decay = 0.9999         # paper Table A2, per step (a 6.9k-step half-life)
  c.train.log_every = 100
  c.train.sample_every = 5000
  c.train.ckpt_every = 5000
  c.train.keep_every = 50_000
  c.mesh.fsdp = 8
  return c
