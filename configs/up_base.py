"""The `upsampler` config block of the text-conditioned GigaGAN upsampler.

Experiment configs (configs/up_*.py) take `upsampler_config()` or one of the
sized blocks below and override fields. The model is
gigagan_jax/models/upsampler.py; `gigagan_jax.config_utils.check_upsampler`
validates a block. Values the paper leaves open (PAPER_NOTES.md 4, 7) are
our choice and marked "open question".

Sizes (parameters counted with jax.eval_shape, as tests/test_upsampler.py
does; the frozen text backbone is not counted, as for G):
  paper_upsampler(8)  358.6M with CLIP ViT-L/14 features (768-d); the paper's
                      64->512 model has 359.1M (-0.1%). The same weights
                      upsample 128 -> 1024 (the model is fully convolutional);
                      the paper's own 128->1024 model is wider (693M) and is
                      not sized here. paper_upsampler(4) has 358.2M (the
                      paper's 4x ImageNet 64->256 model: 359M).
  tiny_upsampler(4)   0.76M, 16 -> 64 px (or 64 -> 256) on CPU; (8): 0.76M.
"""
import ml_collections

from configs import base


def _up_lists(scale: int, num_down: int, widths: dict, banks: dict, convs: dict):
  """Per-up-stage tuples from per-side tables (keys: log2 of side / input side)."""
  sides = [i - num_down + 1 for i in range(num_down + scale.bit_length() - 1)]
  return (tuple(widths[s] for s in sides), tuple(convs[s] for s in sides),
          tuple(banks[s] for s in sides))


def upsampler_config(scale: int = 8) -> ml_collections.ConfigDict:
  """The `upsampler` block with every field, at a small default size.

  The caption tokenizer and frozen backbone come from the experiment's
  `config.text`, as for the generator.

  Up stage i (0-based) outputs at side h * 2**(i - num_down + 1), h the input
  side: with num_down = 3, scale 8 the stages run at h/4, h/2, h, 2h, 4h, 8h.
  """
  u = ml_collections.ConfigDict()
  u.kind = 'gigagan'                 # architecture; only 'gigagan' so far
  u.scale = scale                    # output side / input side: 2, 4, 8 or 16 (paper: 8; 4 for ImageNet)
  u.z_dim = 128                      # paper: z in R^128
  u.w_dim = 512                      # style width (open question, as G)
  u.mapping_layers = 4               # as G
  u.mapping_lr_mul = 0.01            # StyleGAN2 mapping learning-rate multiplier
  u.text_encoder = base.text_encoder_config(dim=512, layers=2, heads=4)  # its own T
  u.num_down = 3                     # paper: 3 downsampling residual blocks
  # Widths at the input side h and after each down block (h/2, h/4, h/8):
  # num_down + 1 entries; [0] is fromRGB's width.
  u.down_channels = (128, 256, 512, 512)
  u.down_kernel_bank = (2, 4, 4)     # kernel-bank size N of each down block's convs
  # One entry per up stage (num_down + log2(scale)): output width, number of
  # SynthesisLayers (AdaConv + attention where set; the first upsamples), N.
  # Written as tables keyed by log2(stage side / h) (-2: h/4, ..., 4: 16h),
  # from which _up_lists takes the stages of `scale`.
  widths = {-2: 512, -1: 512, 0: 256, 1: 128, 2: 64, 3: 32, 4: 32}
  u.up_channels, u.up_convs, u.up_kernel_bank = _up_lists(
      scale, u.num_down, widths, banks={-2: 4, -1: 4, 0: 4, 1: 2, 2: 1, 3: 1, 4: 1},
      convs={s: 2 for s in widths})
  # Up stages with L2 self-attention (fed w) / cross-attention to t_local
  # (open question: the paper puts attention in its up blocks without saying
  # which). Self-attention is global over the tile: quadratic in its area.
  u.self_attn_stages = (0, 1)
  u.cross_attn_stages = (0, 1, 2)
  u.attn_heads = 4
  u.attn_mlp_ratio = 4               # feed-forward after attention; 0 = none
  u.attn_residual_gain = 0.1         # "small gain" on attention branches, as G
  u.attn_w_token = True              # w joins self-attention as an extra token
  u.conv_impl = 'fused'              # | 'grouped' | 'auto' (per layer; nn/modulated_conv.py)
  # 'zero': every modulated conv's style and kernel-selection weights start at
  # zero (styles 1, uniform kernel mix), so the untrained U-Net ignores z and
  # text and learns how much they should steer it; 'random': as the generator.
  u.style_init = 'zero'
  # Output = base(lr) + learned RGB. 'bicubic': the network learns a residual
  # over bicubic upsampling, from toRGB kernels that start at zero (an
  # untrained model is exactly the bicubic baseline); 'none': it predicts the
  # whole image.
  u.residual_base = 'bicubic'
  u.dtype = 'float32'                # compute dtype; 'bfloat16' on accelerators
  u.param_dtype = 'float32'
  return u


def tiny_upsampler(scale: int = 4) -> ml_collections.ConfigDict:
  """CPU-sized block: 0.76M parameters at scale 4 (16 -> 64 px) and at 8."""
  u = upsampler_config(scale)
  u.z_dim = 32
  u.w_dim = 64
  u.mapping_layers = 2
  u.text_encoder = base.text_encoder_config(dim=64, layers=1, heads=2)
  u.down_channels = (32, 48, 64, 64)
  u.down_kernel_bank = (1, 2, 2)
  widths = {-2: 64, -1: 64, 0: 48, 1: 32, 2: 16, 3: 16, 4: 16}
  # Two layers in the stages above the input side: the first upsamples, the
  # second is a 3x3 conv at the stage's full resolution, where the detail
  # that PSNR rewards is drawn (bench/sr_natural.py's validation crops, 4
  # minutes each: 0.41 dB more with the empty prompt than one layer).
  u.up_channels, u.up_convs, u.up_kernel_bank = _up_lists(
      scale, u.num_down, widths, banks={-2: 2, -1: 2, 0: 2, 1: 1, 2: 1, 3: 1, 4: 1},
      convs={s: 1 if s < 1 else 2 for s in widths})
  u.self_attn_stages = (0,)
  u.cross_attn_stages = (0, 1)
  u.attn_heads = 2
  u.attn_mlp_ratio = 2
  return u


def paper_upsampler(scale: int = 8) -> ml_collections.ConfigDict:
  """Paper-size block: 64 -> 512 (and 128 -> 1024) at scale 8, ~359M parameters.

  Widths are ours (the paper's table could not be read), chosen so the count
  lands on the paper's 359.1M with a CLIP ViT-L/14 backbone (768-d features).
  """
  u = upsampler_config(scale)
  u.w_dim = 1024
  u.text_encoder = base.text_encoder_config(dim=768, layers=4, heads=12)
  u.down_channels = (128, 256, 512, 1024)
  u.down_kernel_bank = (8, 8, 4)
  widths = {-2: 1024, -1: 768, 0: 512, 1: 256, 2: 128, 3: 64, 4: 64}
  u.up_channels, u.up_convs, u.up_kernel_bank = _up_lists(
      scale, u.num_down, widths, banks={-2: 4, -1: 4, 0: 8, 1: 4, 2: 2, 3: 1, 4: 1},
      convs={s: 2 for s in widths})
  u.self_attn_stages = (0, 1)
  u.cross_attn_stages = (0, 1, 2)
  u.attn_heads = 16
  u.dtype = 'bfloat16'
  return u
