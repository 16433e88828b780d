"""Trains the attribute probe on `captioned_shapes` and reports held-out accuracy.

  python -m gigagan_jax.evaluate.train_probe --config=configs/probe_shapes.py \
      --workdir=runs/probe_32px

Builds the data when absent, trains (progress every config.log_every steps),
scores the held-out 'test' split, and saves an Orbax checkpoint plus
probe.json into --workdir. `python -m gigagan_jax.evaluate` then scores
generated images with it.
"""
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags
from ml_collections import config_flags

from gigagan_jax.data import pipeline
from gigagan_jax.evaluate import probe as probe_lib
from gigagan_jax import runtime


def load_split(config: ml_collections.ConfigDict, split: str, limit: int = 0):
  """`split` (its first `limit` examples; 0 = all) in memory:
  (uint8 images [N, R, R, 3], {attribute: class index [N]})."""
  source = pipeline.open_builder(ml_collections.ConfigDict(dict(
      builder='captioned_shapes', data_dir=config.data_dir, resolution=config.resolution,
      num_examples=config.num_examples))).as_data_source(split)
  records = source.__getitems__(range(min(limit or len(source), len(source))))
  images = np.stack([r['image'] for r in records])
  return images, probe_lib.to_targets({k: [r[k] for r in records] for k in probe_lib.ATTRIBUTES})


def train(config: ml_collections.ConfigDict, log=print):
  """Trains on the train split; returns (Probe, params, held-out metrics dict)."""
  images, targets = load_split(config, 'train')
  net = probe_lib.ProbeNet(tuple(config.widths), config.feature_dim)
  key = jax.random.PRNGKey(config.seed)
  params = net.init(key, jnp.zeros((1, config.resolution, config.resolution, 3)))['params']
  tx = optax.adamw(optax.cosine_decay_schedule(config.lr, config.steps), weight_decay=config.weight_decay)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y):
    (loss, accs), grads = jax.value_and_grad(probe_lib.loss_fn, has_aux=True)(
        params, net, x, y, config.resolution)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, accs

  rng = np.random.default_rng(config.seed)
  order, pos, start = rng.permutation(len(images)), 0, time.time()
  for i in range(1, config.steps + 1):
    if pos + config.batch_size > len(order):  # a new epoch, reshuffled
      order, pos = rng.permutation(len(images)), 0
    idx = np.sort(order[pos:pos + config.batch_size])
    pos += config.batch_size
    params, opt_state, loss, accs = step(params, opt_state, images[idx],
                                         {k: v[idx] for k, v in targets.items()})
    if i % config.log_every == 0 or i == config.steps:
      accs = ' '.join(f'{k} {float(v):.2f}' for k, v in accs.items())
      log(f'probe step {i}/{config.steps}  loss {float(loss):.4f}  batch acc: {accs}  '
          f'({time.time() - start:.0f} s)')

  probe = probe_lib.Probe(config, params)
  test_images, test_targets = load_split(config, 'test')
  metrics = {'heldout_accuracy': probe_lib.attribute_accuracy(probe(test_images)[1], test_targets),
             'heldout_examples': len(test_images), 'train_seconds': round(time.time() - start, 1)}
  return probe, params, metrics


def define_flags():
  """Flags of the CLI, defined only when run as a program (see sample.define_flags)."""
  config_flags.DEFINE_config_file('config', 'configs/probe_shapes.py', 'Probe config file.')
  flags.DEFINE_string('workdir', None, 'Where the probe is saved (Orbax params + probe.json).')
  flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  runtime.quiet_gc()
  config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
  probe, params, metrics = train(config)
  probe.save(workdir, params, metrics)
  acc = metrics['heldout_accuracy']
  print('held-out accuracy (%d images): ' % metrics['heldout_examples'] +
        ', '.join(f'{k} {acc[k]:.3f}' for k in probe_lib.ATTRIBUTES if acc[k] is not None) +
        f'; mean {acc["mean"]:.3f} (chance {acc["chance"]:.3f})')
  print(f'probe saved to {workdir}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
