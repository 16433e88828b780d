"""The discriminator's minibatch-stddev layer sees one pyramid level at a time."""
import jax
import numpy as np
from flax import linen as nn

from gigagan_jax.config_utils import load_config, validate
from gigagan_jax.models.build import build_models
from gigagan_jax.models.discriminator import logit_name
from gigagan_jax.text.tokenizer import make_tokenizer

PROMPTS = ['a red circle', 'a blue square', 'a green star', 'two yellow triangles']


def test_minibatch_std_groups_never_mix_pyramid_levels():
  config = validate(load_config('configs/t2i_micro.py'))  # 32 px, levels 32 and 16
  config.discriminator.mbstd_group = 2
  tokenizer = make_tokenizer(config.text)
  _, d = build_models(config, tokenizer.vocab_size)
  text = tokenizer(PROMPTS)
  r, b = config.generator.resolution, len(PROMPTS)
  keys = jax.random.split(jax.random.key(0), 3)
  pyramid = (jax.random.normal(keys[0], (b, r, r, 3)),
             jax.random.normal(keys[1], (b, r // 2, r // 2, 3)))
  variables = nn.meta.unbox(jax.jit(d.init)(jax.random.key(1), pyramid, text))
  apply = jax.jit(d.apply)
  top = logit_name(r, 1)  # the 32 px level's exit after the final (minibatch-std) stage

  base = np.asarray(apply(variables, pyramid, text)[top])
  # Other images of the 16 px level leave the 32 px level's scores alone: its
  # groups hold only 32 px samples. (Stacked on the batch axis, the old groups
  # paired 32 px sample i with 16 px sample i.)
  other_16 = (pyramid[0], 3.0 * jax.random.normal(keys[2], pyramid[1].shape))
  np.testing.assert_allclose(np.asarray(apply(variables, other_16, text)[top]), base,
                             atol=1e-5, rtol=1e-5)
  # ... while the layer is on: another sample of the same level does change
  # sample 0's score (samples meet nowhere else in D).
  other_32 = (pyramid[0].at[1:].multiply(3.0), pyramid[1])
  changed = np.asarray(apply(variables, other_32, text)[top])
  assert np.abs(changed[0] - base[0]).max() > 1e-4
