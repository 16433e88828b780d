"""A plain conditional discriminator with a projection head (Miyato & Koyama 2018).

config `discriminator.kind = 'projection'`: the alternative to GigaGAN's
MS-I/O discriminator for small runs. It scores only the top pyramid level:

  h      = lrelu(FC(flatten(conv4x4/2(... conv4x4/2(x)))))    [B, fc]
  D(x,c) = Dense_1(h) + <Embed(t_D(c)), h>

with plain (not equalized) 4x4 stride-2 convs from R px down to 4 px and the
same text branch t_D as the MS-I/O D (its own T over the caption). Why it
exists (ABLATION.md, "A plain GAN on the same budget"): on captioned_shapes
the tiny GigaGAN G trained against this D drew the prompt better than against
the MS-I/O D (0.516 against 0.35-0.37 attribute accuracy on training captions)
at about a third of the step time; taking the plain D toward ours, the
equalized, residual, FIR-downsampling trunk was what cost most.

The interface is the MS-I/O D's (models/discriminator.py), so the train step,
losses and vision-aided term use it unchanged: one logit map
{logit_name(R, 1): [B, 1, 1, 1]}.
"""
import jax
import jax.numpy as jnp
from flax import linen as nn

from gigagan_jax.models.discriminator import TextConditionedD, logit_name
from gigagan_jax.parallel import shard_batch, to_dtype

_part = nn.with_logical_partitioning


class ProjectionDiscriminator(TextConditionedD):
  """D(pyramid, text) -> {logit_name(R, 1): [B, 1, 1, 1] float32}.

  Fields: TextConditionedD's. Of `cfg` it reads `projection_channels` (widths
  of the stride-2 convs, R/2 px first, down to 4 px), `projection_fc`, and
  the text branch's `text_encoder`, `text_dim`.
  """

  def setup(self):
    super().setup()
    cfg = self.cfg
    dtype, pdtype = to_dtype(cfg.dtype), to_dtype(cfg.param_dtype)
    dense = lambda n, names, name: nn.Dense(
        n, dtype=dtype, param_dtype=pdtype, name=name,
        kernel_init=_part(nn.initializers.lecun_normal(), names),
        bias_init=_part(nn.initializers.zeros, names[-1:]))
    self.convs = [nn.Conv(ch, (4, 4), strides=2, padding='SAME', dtype=dtype, param_dtype=pdtype,
                          kernel_init=_part(nn.initializers.lecun_normal(),
                                            (None, None, 'conv_in', 'conv_out')),
                          bias_init=_part(nn.initializers.zeros, ('conv_out',)),
                          name=f'conv{self.resolution // 2**k}')
                  for k, ch in enumerate(cfg.projection_channels)]
    self.fc = dense(cfg.projection_fc, ('embed', 'mlp'), 'fc')
    self.out = dense(1, ('mlp', None), 'out')
    self.embed = dense(cfg.projection_fc, ('embed', 'mlp'), 'embed')

  def _features(self, pyramid):
    """h [B, fc]: the image trunk's features of pyramid[0] ([B, R, R, C])."""
    x = pyramid[0].astype(to_dtype(self.cfg.dtype))
    for conv in self.convs:
      x = shard_batch(jax.nn.leaky_relu(conv(x), 0.2))
    return shard_batch(jax.nn.leaky_relu(self.fc(x.reshape(x.shape[0], -1)), 0.2))

  def pair_embeddings(self, pyramid, text):
    """(h [B, fc], Embed(t_D(c)) [B, fc]): the two sides of the projection
    term, whose inner product is D's text score; the contrastive loss
    (losses.contrastive_loss, config loss.contrastive_weight) compares every
    image of a batch with every caption through them."""
    return self._features(pyramid), self.embed(self.text_embedding(text))

  def __call__(self, pyramid, text, mismatched_text=None):
    """As Discriminator.__call__; only pyramid[0] ([B, R, R, C]) is scored."""
    h = self._features(pyramid)
    b = h.shape[0]
    uncond = self.out(h)

    def logits(t):
      score = uncond + jnp.sum(self.embed(self.text_embedding(t)) * h, -1, keepdims=True)
      return {logit_name(self.resolution, 1): score.reshape(b, 1, 1, 1).astype(jnp.float32)}

    if mismatched_text is None:
      return logits(text)
    return logits(text), logits(mismatched_text)
