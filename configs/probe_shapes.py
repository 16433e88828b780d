"""The attribute probe: a small classifier of `captioned_shapes` images.

It gives every run on the embedded data metrics that need no downloaded
weights: attribute accuracy of generated images against their prompts and a
Frechet distance on its features (issue 6).

  python -m gigagan_jax.evaluate.train_probe --config=configs/probe_shapes.py \
      --workdir=runs/probe_32px

Trains in about a minute on 2 CPU cores (plus ~20 s to build the data once);
held-out accuracy 0.985 (shape 0.935, the hardest, at 32 px). Images of another resolution are
resized to `resolution` before they are scored, so one probe serves runs at
32 and 64 px.
"""
import ml_collections


def get_config(arg=None):
  del arg
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.resolution = 32                  # probe input side; the tiny G's resolution
  # Training data: the default captioned_shapes build at `resolution` (20k
  # train / 1k test examples; ~20 s to build at 32 px). Held-out = 'test'.
  c.data_dir = 'runs/data'
  c.num_examples = 0
  c.widths = (16, 32, 64)            # conv stages, each halving the side
  c.feature_dim = 128                # penultimate layer: Frechet-distance features
  c.batch_size = 32
  c.steps = 2000
  c.lr = 2e-3
  c.weight_decay = 1e-4
  c.log_every = 250
  return c
