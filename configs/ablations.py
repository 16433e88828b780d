"""The paper's ablation study (PAPER_NOTES.md 1.4-2.3, Table 1) as a sweep.

  python -m gigagan_jax.sweep --config=configs/ablations.py --dry-run       # tiny, list
  python -m gigagan_jax.sweep --config=configs/ablations.py:paper \
      --workdir_root=gs://bucket/ablations --launcher=launch/slurm.sh -- --nodes=4

get_config(arg) is the full model ('tiny': configs/t2i_tiny.py, the default,
for CPU rehearsals; 'paper': configs/t2i_paper.py); get_sweep(arg) lists the
variants, each a name and the fields it overrides. One switch per variant,
as in the paper's table:
  full                   everything on
  no_kernel_selection    one kernel per conv (plain StyleGAN2 modulated conv)
  no_attention           no self- or cross-attention in G, no self-attention in D
  single_scale_d         G outputs only the top level, D predicts once (no MS-I/O)
  projection_d           a plain conv D with a projection head instead of MS-I/O
                         (not in the paper; t2i_tiny's D, ABLATION.md)
  tiny_recipe            t2i_tiny's departures from the paper together: the
                         projection D with its contrastive loss, the whitened
                         sentence embedding in T, G's input from w
  matching_d_only        matching-aware loss (Eq. 8) in D's loss only, not G's
  no_matching_aware      no matching-aware loss in D or G
  width_half, width_double   every channel count of G and D scaled
  clip_loss              + the CLIP contrastive loss (Eq. 9) at weight 1; listed
                         only when CLIP weights are given: ARG,clip_dir=DIR, e.g.
                         --config=configs/ablations.py:tiny,clip_dir=/ckpt/clip-vit-b32
"""
from configs import t2i_paper, t2i_tiny


def _parse(arg):
  """'tiny' | 'paper', optionally followed by ',clip_dir=DIR' -> (name, clip_dir)."""
  name, *options = (arg or 'tiny').split(',')
  clip_dir = ''
  for option in options:
    key, _, value = option.partition('=')
    if key != 'clip_dir' or not value:
      raise ValueError(f"configs/ablations.py: unknown option {option!r} (only clip_dir=DIR)")
    clip_dir = value
  if name not in ('tiny', 'paper'):
    raise ValueError(f"configs/ablations.py: argument must be 'tiny' or 'paper', got {name!r}")
  return name, clip_dir


# Where t2i_tiny departs from the paper's model (ABLATION.md): the sweep's
# baseline sets the paper's values, the 'tiny_recipe' variant t2i_tiny's.
PAPER_MODEL = {'discriminator.kind': 'msio', 'loss.contrastive_weight': 0.0,
               'generator.text_encoder.sentence_whitening': False,
               'discriminator.text_encoder.sentence_whitening': False,
               'generator.input_from_w': False}
TINY_RECIPE = {'discriminator.kind': 'projection', 'loss.contrastive_weight': 1.0,
               'generator.text_encoder.sentence_whitening': True,
               'discriminator.text_encoder.sentence_whitening': True,
               'generator.input_from_w': True}


def get_config(arg=None):
  name, clip_dir = _parse(arg)
  config = {'tiny': t2i_tiny, 'paper': t2i_paper}[name].get_config()
  config.update_from_flattened_dict(PAPER_MODEL)
  if clip_dir:
    config.loss.clip_dir = clip_dir
  return config


def _scaled(channels, factor):
  return tuple(max(8, int(c * factor)) // 8 * 8 for c in channels)


def get_sweep(arg=None):
  c = get_config(arg)
  g, d = c.generator, c.discriminator
  clip = [{'name': 'clip_loss', 'loss.clip_weight': 1.0}] if _parse(arg)[1] else []
  return [
      {'name': 'full'},
      {'name': 'no_kernel_selection', 'generator.kernel_bank': (1,) * len(g.kernel_bank)},
      {'name': 'no_attention', 'generator.self_attn_resolutions': (),
       'generator.cross_attn_resolutions': (), 'discriminator.self_attn_resolutions': ()},
      {'name': 'single_scale_d', 'generator.pyramid_levels': 1, 'discriminator.exits': 'last'},
      {'name': 'projection_d', 'discriminator.kind': 'projection'},
      {'name': 'tiny_recipe', **TINY_RECIPE},
      {'name': 'matching_d_only', 'loss.matching_in_g': False},
      {'name': 'no_matching_aware', 'loss.matching_aware': False},
      {'name': 'width_half', 'generator.channels': _scaled(g.channels, 0.5),
       'discriminator.channels': _scaled(d.channels, 0.5)},
      {'name': 'width_double', 'generator.channels': _scaled(g.channels, 2),
       'discriminator.channels': _scaled(d.channels, 2)},
  ] + clip
