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
  no_matching_aware      no matching-aware loss (real image + wrong caption)
  width_half, width_double   every channel count of G and D scaled
The CLIP-contrastive loss variant waits for that loss to enter the train
step (config.loss.clip_weight is refused by validate until then).
"""
from configs import t2i_paper, t2i_tiny


def get_config(arg=None):
  base = {'tiny': t2i_tiny, 'paper': t2i_paper}
  if (arg or 'tiny') not in base:
    raise ValueError(f"configs/ablations.py: argument must be 'tiny' or 'paper', got {arg!r}")
  return base[arg or 'tiny'].get_config()


def _scaled(channels, factor):
  return tuple(max(8, int(c * factor)) // 8 * 8 for c in channels)


def get_sweep(arg=None):
  c = get_config(arg)
  g, d = c.generator, c.discriminator
  return [
      {'name': 'full'},
      {'name': 'no_kernel_selection', 'generator.kernel_bank': (1,) * len(g.kernel_bank)},
      {'name': 'no_attention', 'generator.self_attn_resolutions': (),
       'generator.cross_attn_resolutions': (), 'discriminator.self_attn_resolutions': ()},
      {'name': 'single_scale_d', 'generator.pyramid_levels': 1, 'discriminator.exits': 'last'},
      {'name': 'no_matching_aware', 'loss.matching_aware': False},
      {'name': 'width_half', 'generator.channels': _scaled(g.channels, 0.5),
       'discriminator.channels': _scaled(d.channels, 0.5)},
      {'name': 'width_double', 'generator.channels': _scaled(g.channels, 2),
       'discriminator.channels': _scaled(d.channels, 2)},
  ]
