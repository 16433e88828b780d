"""GigaGAN multi-scale input / multi-scale output (MS-I/O) discriminator.

Image branch phi: stages that each run (self-attention at configured
resolutions) + a residual stride-2 block, from R px down to 4 px, and a final
stage 4 px -> 1x1. Pyramid level i (R/2^i px) enters phi at the stage of its
resolution through its own fromRGB ("late entry"), and from every stage j it
passes through, a prediction D_ij is made ("early exit"): with L levels and
L stages that is L(L+1)/2 logit maps (15 for the 64 px model).

Prediction head (paper Eq. 7): D_ij = psi_j(phi_ij, t_D) + Conv1x1(phi_ij),
where psi_j is a stack of 1x1 convs modulated by D's own global text
descriptor t_D and the 1x1 conv is an unconditional skip. Heads are shared by
all entry levels of a stage.

Entry levels run through phi together, stacked on the batch axis; the
minibatch-stddev layer of the final stage (when on) groups samples of one
level only.

To score the same images against mismatched captions (matching-aware loss),
pass `mismatched_text`: phi runs once and only the text branch and the cheap
heads run twice.
"""
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from gigagan_jax.config_utils import num_scales
from gigagan_jax.nn.attention import SelfAttention
from gigagan_jax.nn.blocks import ResidualDownBlock
from gigagan_jax.nn.equalized import EqualConv, EqualDense, lrelu
from gigagan_jax.nn.minibatch_std import minibatch_std
from gigagan_jax.nn.modulated_conv import ModulatedConv
from gigagan_jax.nn.remat import remat
from gigagan_jax.parallel import to_dtype
from gigagan_jax.text.encoder import text_encoder_from


def logit_name(in_res: int, out_res: int) -> str:
  """Key of the logit map of pyramid level `in_res` exiting at `out_res`."""
  return f'in{in_res}_out{out_res}'


class PredictionHead(nn.Module):
  """psi_j(phi, t_D) + Conv1x1(phi): [B,H,W,C], t_D [B,Dt] -> [B,H,W,1] float32."""
  layers: int
  conditional: bool = True           # False: the unconditional 1x1 conv alone
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, t_d):
    uncond = EqualConv(1, 1, dtype=self.dtype, param_dtype=self.param_dtype, name='skip')(x)
    if not self.conditional:
      return uncond.astype(jnp.float32)
    c = x.shape[-1]
    h = x
    for i in range(self.layers - 1):
      h = lrelu(ModulatedConv(c, 1, 1, dtype=self.dtype, param_dtype=self.param_dtype,
                              name=f'mod{i}')(h, t_d))
    cond = ModulatedConv(1, 1, 1, demodulate=False, dtype=self.dtype,
                         param_dtype=self.param_dtype, name=f'mod{self.layers - 1}')(h, t_d)
    return (cond + uncond).astype(jnp.float32)


class Stage(nn.Module):
  """One phi stage: [B, r, r, Cin] -> [B, r/2, r/2, Cout] (or [B, 1, 1, Cout] at r=4)."""
  features: int
  self_attn: bool
  final: bool
  cfg: ml_collections.FrozenConfigDict

  @nn.compact
  def __call__(self, x, segments: int = 1):
    """x: [S*B, r, r, Cin], S = `segments` entry levels stacked on the batch axis."""
    dtype, pdtype = to_dtype(self.cfg.dtype), to_dtype(self.cfg.param_dtype)
    if self.self_attn:
      x = SelfAttention(self.cfg.attn_heads, dtype=dtype, param_dtype=pdtype, name='self_attn')(x)
    if not self.final:
      return ResidualDownBlock(self.features, dtype, pdtype, name='block')(x)
    if self.cfg.mbstd_group:
      x = minibatch_std(x, self.cfg.mbstd_group, segments=segments)  # groups within a level
    x = lrelu(EqualConv(x.shape[-1], 3, dtype=dtype, param_dtype=pdtype, name='conv')(x))
    x = x.reshape(x.shape[0], 1, 1, -1)
    return lrelu(EqualDense(self.features, names=('embed', 'mlp'), dtype=dtype,
                            param_dtype=pdtype, name='fc')(x))


class TextConditionedD(nn.Module):
  """What GigaGAN's and the plain projection D share: their fields and their
  own text branch, T over the caption projected to the global descriptor t_D.
  Subclasses call super().setup() first.

  Attributes:
    cfg: the config's `discriminator` block; resolution and pyramid_levels come
      from the generator block (`resolution`, `levels`).
  """
  cfg: ml_collections.FrozenConfigDict
  resolution: int
  levels: int
  vocab_size: int
  max_len: int

  def setup(self):
    cfg = self.cfg
    dtype, pdtype = to_dtype(cfg.dtype), to_dtype(cfg.param_dtype)
    enc = cfg.text_encoder
    self.text_encoder = text_encoder_from(enc, self.vocab_size, self.max_len, dtype, pdtype)
    self.text_proj = EqualDense(cfg.text_dim, names=('embed', 'mlp'), param_dtype=pdtype)

  def text_embedding(self, text):
    """t_D [B, text_dim] from D's own text encoder (global descriptor only)."""
    _, t_global, _ = self.text_encoder(text['tokens'], text['eot'], text.get('features'))
    return self.text_proj(t_global)


class Discriminator(TextConditionedD):
  """D(pyramid, text) -> {logit_name(i, j): [B, r_j, r_j, 1]} (fields: TextConditionedD)."""

  def setup(self):
    super().setup()
    cfg = self.cfg
    dtype, pdtype = to_dtype(cfg.dtype), to_dtype(cfg.param_dtype)
    n = num_scales(self.resolution)
    # Stage k takes resolution R/2^k; channels are listed 4 px first.
    self.stage_res = [self.resolution // 2**k for k in range(n)]
    ch = list(reversed(cfg.channels))
    self.from_rgb = [EqualConv(ch[k], 1, dtype=dtype, param_dtype=pdtype, name=f'from_rgb{r}')
                     for k, r in enumerate(self.stage_res[:self.levels])]
    stage_cls = remat(Stage, cfg.get('remat', 'none'), static_argnums=(2,))  # segments: a Python int
    self.stages = [stage_cls(ch[min(k + 1, n - 1)], r in cfg.self_attn_resolutions, final=(r == 4),
                         cfg=cfg, name=f'stage{r}') for k, r in enumerate(self.stage_res)]
    text_exits = cfg.get('text_exits', 'all')
    self.heads = [PredictionHead(cfg.head_layers, text_exits == 'all' or r == 4, dtype, pdtype,
                                 name=f'head{r}') for r in self.stage_res]

  def __call__(self, pyramid, text, mismatched_text=None):
    """Scores an image pyramid against its captions.

    Args:
      pyramid: tuple of `levels` images, highest resolution first,
        [B, R, R, 3], [B, R/2, R/2, 3], ... in [-1, 1].
      text: {'tokens' [B,L], 'eot' [B], optional 'features' [B,L,Df]}.
      mismatched_text: optional second captions, same layout.
    Returns:
      logits, or (logits, mismatched_logits) when mismatched_text is given;
      each a dict logit_name(in_res, out_res) -> [B, out, out, 1] float32.
    """
    if len(pyramid) != self.levels:
      raise ValueError(f'discriminator expects {self.levels} pyramid levels, got {len(pyramid)}')
    b = pyramid[0].shape[0]
    dtype = to_dtype(self.cfg.dtype)
    texts = [self.text_embedding(text)]
    if mismatched_text is not None:
      texts.append(self.text_embedding(mismatched_text))
    outs = [{} for _ in texts]
    h, entries = None, []
    for k, stage in enumerate(self.stages):
      # Late entry: the level at this resolution joins the batch of running paths.
      if k < self.levels:
        new = lrelu(self.from_rgb[k](pyramid[k].astype(dtype)))
        h = new if h is None else jnp.concatenate([h, new], axis=0)
        entries.append(self.stage_res[k])
      h = stage(h, len(entries))  # positional: static under remat
      out_res = h.shape[1]
      if self.cfg.get('exits', 'all') == 'last' and k < len(self.stages) - 1:
        continue  # single-scale-output ablation: predict at the final stage only
      for i, (t_d, out) in enumerate(zip(texts, outs)):  # early exit of every running path
        if i and not self.heads[k].conditional:
          continue  # an unconditional map scores every caption alike: no matching term
        logits = self.heads[k](h, jnp.tile(t_d, (len(entries), 1)))
        for e, in_res in enumerate(entries):
          out[logit_name(in_res, out_res)] = logits[e * b:(e + 1) * b]
    return outs[0] if mismatched_text is None else tuple(outs)
