"""Checkpoint evaluation on the embedded `captioned_shapes` data (no downloads).

  python -m gigagan_jax.evaluate --workdir=runs/tiny --all

Generates one image per caption of the run's held-out split (cycled to
num_samples) and scores them with the attribute probe (configs/probe_shapes.py;
trained into probe_dir on first use): attribute accuracy against the prompts
and a Frechet distance on probe features to the real held-out images.
"""
import ml_collections


def get_config(arg=None):
  del arg
  c = ml_collections.ConfigDict()
  c.name = 'shapes'
  c.seed = 0                         # latent seeds are seed, seed + 1, ...
  # 'attribute_accuracy', 'probe_fd' (embedded data only), 'fid', 'kid'
  # (need inception_path), 'clip_score' (needs clip_dir), 'prompt_diversity'
  # (any data; gigagan_jax/evaluate/evaluator.py).
  c.metrics = ('attribute_accuracy', 'probe_fd', 'prompt_diversity')
  # Captions and real images: `split` of `dataset` ('' = the run's
  # config.data.builder, read from its data_dir at the run's resolution).
  c.dataset = ''
  c.split = 'test'
  # captioned_shapes build whose split is read: -1 = the run's
  # data.num_examples, 0 = the builder's default (20,000), N = the N-example
  # build. Its test split is a tenth of it, so runs trained on different
  # builds are scored on the same captions only when this is set.
  c.num_examples = -1
  c.image_key = ''                   # '' = the run's config.data.image_key
  c.caption_key = ''                 # '' = the run's; 'a/b' reads a nested feature (first entry)
  c.num_samples = 1000               # generated images per checkpoint
  c.num_real = 0                     # real images for reference statistics; 0 = whole split
  c.batch_size = 64                  # per generator / feature-network call, over all devices
  c.psi = 1.0                        # truncation of the generated images
  # prompt_diversity: this many latents (seeds seed, seed + 1, ...) for each of
  # the first diversity_prompts distinct captions of the split. Real images
  # of one caption vary by about 0.33 here (ABLATION.md, 2026-12-05).
  c.diversity_prompts = 16
  c.diversity_seeds = 8
  c.resolution = 0                   # FID/CLIP evaluation side; 0 = the generator's
  c.probe_dir = 'runs/probe_32px'
  c.probe_config = 'configs/probe_shapes.py'   # trains the probe when probe_dir has none
  c.inception_path = ''              # pt_inception-2015-12-05-6726825d.pth (pytorch-fid's file)
  c.clip_dir = ''                    # Hugging Face CLIPModel directory (OpenAI ViT-B/32)
  c.clip_prefix = 'A photo depicts '
  c.kid_subsets = 100
  c.kid_subset_size = 1000
  c.cache_dir = 'runs/eval_cache'    # reference statistics (npz)
  c.grid_size = 16                   # images per checkpoint in the HTML report
  return c
