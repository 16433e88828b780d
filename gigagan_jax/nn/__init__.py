"""Building blocks shared by the generator, discriminator and upsampler."""
from gigagan_jax.nn.attention import CrossAttention, SelfAttention
from gigagan_jax.nn.blocks import ResidualDownBlock
from gigagan_jax.nn.equalized import EqualConv, EqualDense, lrelu
from gigagan_jax.nn.fir import blur, downsample2d, upsample2d
from gigagan_jax.nn.minibatch_std import minibatch_std
from gigagan_jax.nn.modulated_conv import ModulatedConv
