"""The train steps' side of the losses on a frozen CLIP: CLIP loss (paper Eq. 9)
and vision-aided D (L_Vision). The networks live in gigagan_jax.frozen; this
module wires them into training.

What a step gets:
  frozen['clip']          CLIP params, both towers (CLIP loss), from loss.clip_dir
  frozen['vision_aided']  the vision-aided D's frozen tree (ViT up to the last
                          tapped layer + fixed random projection from
                          loss.vision_aided_seed)
  state['d'][VA_KEY]      the vision-aided heads: trainable, a subtree of D's
                          params, so D's optimiser trains them and the
                          checkpoint saves them (absent when the VA D is off,
                          so old checkpoints restore unchanged)
  batch['clip_tokens'] int32 [B, Lc], batch['clip_eot'] int32 [B]
                          the captions in CLIP's BPE (CLIP loss only)

Captions for the CLIP loss. The run's tokenizer (config.text.tokenizer) may
be any, so the data pipeline tokenizes each caption a second time with
CLIP's BPE (`BatchTokenizer`): vocab.json + merges.txt from loss.clip_dir
(the Hugging Face repo of a CLIP checkpoint ships both), else the run's own
CLIP files when text.tokenizer is 'clip'; Lc = the CLIP text tower's
max_position_embeddings (77). The vision-aided heads are conditioned on D's
own t_D (D's text branch, any tokenizer), which therefore also learns from
the vision-aided loss.

Dtypes: frozen params are cast to the compute dtype of the network whose loss
they serve (generator/upsampler dtype for the CLIP loss, discriminator dtype
for the vision-aided D): bfloat16 in the paper configs halves their memory.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from gigagan_jax.config_utils import ConfigError
from gigagan_jax.frozen import clip_loss, clip_model, sizes, vision_aided
from gigagan_jax.text import tokenizer as tokenizer_lib

VA_KEY = 'vision_aided'  # D's params subtree of the vision-aided heads
CLIP_BATCH_NDIMS = {'clip_tokens': 2, 'clip_eot': 1}


def clip_on(loss_cfg) -> bool:
  return loss_cfg.get('clip_weight', 0.0) > 0


def va_on(loss_cfg) -> bool:
  return loss_cfg.get('vision_aided_weight', 0.0) > 0


def g_dtype(config) -> str:
  """Compute dtype of the network the CLIP loss trains (G or the upsampler)."""
  return (config.upsampler if config.get('task', 't2i') == 'sr' else config.generator).dtype


def clip_config(config) -> clip_model.CLIPConfig:
  """CLIP sizes: loss.clip_dir's config.json when readable, else OpenAI ViT-B/32's
  (sizing tools plan without weights)."""
  return sizes.clip_config(config.loss)


def va_spec(config, clip_cfg: clip_model.CLIPConfig) -> vision_aided.VisionAidedSpec:
  return vision_aided.make_spec(config.loss, clip_cfg, config.discriminator.dtype)


def init_va_heads(config, key):
  """Boxed (logically partitioned) params of the vision-aided heads, for D's tree.

  Their shapes depend on the layers, P, C and D's text_dim only, not on the
  CLIP checkpoint, so the state (and a restore target) is built without it.
  """
  loss = config.loss
  spec = vision_aided.VisionAidedSpec(
      vision=clip_model.CLIPVisionConfig(image_size=32, patch_size=32), image_mean=(0.,) * 3,
      image_std=(1.,) * 3, layers=tuple(int(l) for l in loss.vision_aided_layers),
      proj_dim=int(loss.vision_aided_proj_dim), channels=int(loss.vision_aided_channels),
      head_layers=int(loss.vision_aided_head_layers), dtype=config.discriminator.dtype)
  feats = tuple(jnp.zeros((1, 1, 1, spec.proj_dim), jnp.float32) for _ in spec.layers)
  t = jnp.zeros((1, config.discriminator.text_dim), jnp.float32)
  return vision_aided.VisionAidedHeads(spec).init(key, feats, t)['params']


def _cast(tree, dtype: str):
  dtype = jnp.dtype(dtype)
  return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                      tree)


def frozen_trees(config, clip: clip_model.CLIPWeights) -> dict:
  """{'clip': params, 'vision_aided': frozen tree} for the losses that are on, cast
  to their networks' compute dtypes; {} when both are off. numpy leaves."""
  out = {}
  if clip_on(config.loss):
    out['clip'] = _cast(clip.params, g_dtype(config))
  if va_on(config.loss):
    spec = va_spec(config, clip.cfg)
    tree = vision_aided.make_frozen(clip, spec, int(config.loss.vision_aided_seed))
    out['vision_aided'] = _cast(tree, config.discriminator.dtype)
  return jax.tree.map(np.asarray, out)


def load(config) -> tuple[clip_model.CLIPConfig | None, dict]:
  """(CLIP config, frozen_trees) from loss.clip_dir; (None, {}) when both losses are off.

  Raises ConfigError naming loss.clip_dir when the weights cannot be read.
  """
  if not (clip_on(config.loss) or va_on(config.loss)):
    return None, {}
  try:
    clip = clip_model.load_clip(config.loss.clip_dir)
  except (OSError, KeyError, ValueError) as e:
    raise ConfigError(f'config.loss.clip_dir: cannot load CLIP weights from '
                      f'{config.loss.clip_dir!r}: {e}') from None
  return clip.cfg, frozen_trees(config, clip)


def abstract_frozen(config, clip_cfg: clip_model.CLIPConfig) -> dict:
  """ShapeDtypeStructs of frozen_trees (the planner: shapes, no weights)."""
  out = {}
  if clip_on(config.loss):
    out['clip'] = sizes.clip_param_shapes(clip_cfg)
    dtype = g_dtype(config)
    out['clip'] = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype), out['clip'])
  if va_on(config.loss):
    tree = sizes.vision_aided_frozen_shapes(va_spec(config, clip_cfg))
    dtype = config.discriminator.dtype
    out['vision_aided'] = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype), tree)
  return out


# ------------------------------------------------------------------ captions


def clip_tokenizer(config, clip_cfg: clip_model.CLIPConfig):
  """CLIP BPE tokenizer of the CLIP loss, tokens of length max_position_embeddings."""
  from etils import epath
  root = epath.Path(config.loss.clip_dir)
  if all((root / n).is_file() for n in ('vocab.json', 'merges.txt')):
    files = (str(root / 'vocab.json'), str(root / 'merges.txt'))
  elif config.text.tokenizer == 'clip':
    files = tokenizer_lib.clip_files(config.text)
  else:
    raise ConfigError(f'config.loss.clip_dir: {config.loss.clip_dir!r} has no vocab.json + '
                      'merges.txt for the CLIP loss\'s captions, and config.text.tokenizer='
                      f'{config.text.tokenizer!r} is not CLIP\'s')
  text_cfg = dict(tokenizer='clip', vocab_path=files[0], merges_path=files[1],
                  max_len=clip_cfg.text.max_position_embeddings)
  import ml_collections
  tok = tokenizer_lib.make_tokenizer(ml_collections.ConfigDict(text_cfg))
  if tok.vocab_size > clip_cfg.text.vocab_size:
    raise ConfigError(f'config.loss.clip_dir: the CLIP vocabulary has {tok.vocab_size} tokens, '
                      f'the CLIP text tower {clip_cfg.text.vocab_size}')
  return tok


@dataclasses.dataclass
class BatchTokenizer:
  """captions -> the run's tokens {'tokens', 'eot'} plus the CLIP loss's
  {'clip_tokens', 'clip_eot'} (the data pipeline's `tokenize`)."""
  tokenize: object
  clip_tokenize: object

  def __call__(self, captions):
    clip = self.clip_tokenize(captions)
    return dict(self.tokenize(captions), clip_tokens=clip['tokens'], clip_eot=clip['eot'])


def batch_tokenizer(config, tokenize, clip_cfg):
  """What the data pipeline tokenizes with: `tokenize`, plus CLIP tokens when the
  CLIP loss is on."""
  if not clip_on(config.loss):
    return tokenize
  return BatchTokenizer(tokenize, clip_tokenizer(config, clip_cfg))


# ------------------------------------------------------------------ losses in the step


def clip_term(config, clip_cfg, clip_params, images, batch):
  """Eq. 9 for G's images float [B, H, W, 3] in [-1, 1]; float32 []."""
  return clip_loss.clip_loss(clip_model.CLIPWeights(clip_params, clip_cfg), images,
                             batch['clip_tokens'], batch['clip_eot'],
                             temperature=config.loss.clip_temperature,
                             dtype=jnp.dtype(g_dtype(config)))


def split_d(d_params: dict):
  """(D's own params, the vision-aided heads or None)."""
  if VA_KEY not in d_params:
    return d_params, None
  return {k: v for k, v in d_params.items() if k != VA_KEY}, d_params[VA_KEY]


def va_logits(spec, frozen_va, heads, images, t_d):
  """Vision-aided logit dict {name: float32 [B, g, g, 1]} of images [B, H, W, 3]
  with text embeddings t_d [B, Dt]."""
  return vision_aided.vision_aided_logits(spec, frozen_va, heads, images, t_d)


def va_real_fake_logits(spec, frozen_va, heads, real, fake, t_d):
  """One CLIP pass over [real; fake] (one traced tower, not two); (real, fake) logit dicts."""
  b = real.shape[0]
  both = va_logits(spec, frozen_va, heads, jnp.concatenate([real, fake.astype(real.dtype)]),
                   jnp.concatenate([t_d, t_d]))
  return ({k: v[:b] for k, v in both.items()}, {k: v[b:] for k, v in both.items()})


def random_frozen(config, clip_cfg: clip_model.CLIPConfig, seed: int = 0) -> dict:
  """frozen_trees of a randomly initialised CLIP of these sizes (benchmarks and
  tests without weights)."""
  s = clip_cfg.vision.image_size
  params = jax.jit(clip_model.CLIP(clip_cfg).init)(
      jax.random.key(seed), jnp.zeros((1, s, s, 3)), jnp.zeros((1, 2), jnp.int32),
      jnp.zeros((1,), jnp.int32))['params']
  return frozen_trees(config, clip_model.CLIPWeights(jax.device_get(params), clip_cfg))
