"""The attribute probe: a classifier of `captioned_shapes` images.

Reads shape, colour, object count, size, position and background off an
image. Generated images are scored against the labels their prompts name
(`captioned_shapes.parse_caption`): "does the red circle come out red and
round?". Its penultimate layer gives features for a Frechet distance between
generated and real images. Neither needs downloaded weights.

Train it with `python -m gigagan_jax.evaluate.train_probe` (configs/probe_shapes.py);
the result is an Orbax checkpoint plus probe.json (config and held-out accuracy).
"""
import json
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import linen as nn

from gigagan_jax import parallel
from gigagan_jax.data import captioned_shapes as cs

# Attribute -> number of classes. Labels are indices (count: 1..3 -> 0..2);
# -1 = not labelled (position of several objects, or not named in a prompt).
ATTRIBUTES = {'shape': len(cs.SHAPES), 'color': len(cs.COLORS), 'count': len(cs.COUNTS),
              'size': len(cs.SIZES), 'position': len(cs.POSITIONS),
              'background': len(cs.COLORS)}


def to_targets(labels: dict) -> dict:
  """captioned_shapes labels (count 1..3) -> class indices (count 0..2); -1 stays -1."""
  out = {k: np.asarray(labels[k], np.int32) for k in ATTRIBUTES}
  out['count'] = np.where(out['count'] > 0, out['count'] - 1, -1).astype(np.int32)
  return out


class ProbeNet(nn.Module):
  """Conv stages (each halving the side) -> flatten -> features -> one head per attribute.

  Flattening (not pooling) keeps where things are, which position needs.
  """
  widths: Sequence[int]
  feature_dim: int

  @nn.compact
  def __call__(self, x):
    """x: float [B, R, R, 3] in [-1, 1] -> (features [B, F], {attribute: logits [B, K]})."""
    for width in self.widths:
      x = nn.relu(nn.GroupNorm(num_groups=8)(nn.Conv(width, (3, 3))(x)))
      x = nn.relu(nn.Conv(width, (3, 3), strides=(2, 2))(x))
    x = x.reshape((x.shape[0], -1))
    # Features are taken before the ReLU: units a ReLU leaves dead would give
    # the covariance of the Frechet distance zero rows.
    feats = nn.Dense(self.feature_dim)(x)
    hidden = nn.relu(feats)
    return feats, {k: nn.Dense(n, name=f'head_{k}')(hidden) for k, n in ATTRIBUTES.items()}


def _normalize(images, resolution: int):
  """uint8 [B, H, W, 3] -> float32 [B, R, R, 3] in [-1, 1], resized with antialiasing."""
  x = images.astype(jnp.float32) / 127.5 - 1
  if x.shape[1:3] != (resolution, resolution):
    x = jax.image.resize(x, (x.shape[0], resolution, resolution, 3), 'linear', antialias=True)
  return x


def loss_fn(params, net: ProbeNet, images, targets: dict, resolution: int):
  """Mean over attributes of the cross-entropy on labelled entries; (loss, accuracies)."""
  _, logits = net.apply({'params': params}, _normalize(images, resolution))
  losses, accs = [], {}
  for k in ATTRIBUTES:
    y = targets[k]
    valid = (y >= 0).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits[k], jnp.maximum(y, 0))
    losses.append(jnp.sum(ce * valid) / jnp.maximum(valid.sum(), 1))
    accs[k] = jnp.sum((logits[k].argmax(-1) == y) * valid) / jnp.maximum(valid.sum(), 1)
  return jnp.mean(jnp.stack(losses)), accs


def attribute_accuracy(pred: dict, targets: dict) -> dict:
  """Accuracy of predicted vs target class indices where the target is labelled.

  Returns {attribute: accuracy or None when never labelled, 'mean': over every
  labelled (image, attribute) pair, 'chance': the mean a uniform guess scores,
  'labelled': number of pairs}.
  """
  out, hits, chance, total = {}, 0.0, 0.0, 0
  for k, n in ATTRIBUTES.items():
    y = np.asarray(targets[k])
    valid = y >= 0
    m = int(valid.sum())
    correct = int((np.asarray(pred[k])[valid] == y[valid]).sum())
    out[k] = correct / m if m else None
    hits, chance, total = hits + correct, chance + m / n, total + m
  out.update(mean=hits / max(total, 1), chance=chance / max(total, 1), labelled=total)
  return out


def prompt_targets(prompts: Sequence[str]) -> dict:
  """Class indices that each prompt names ({attribute: int [N]}, -1 = not named)."""
  parsed = [cs.parse_caption(p) for p in prompts]
  return to_targets({k: [p[k] for p in parsed] for k in ATTRIBUTES})


class Probe:
  """A trained probe: predictions, features and attribute accuracy of uint8 images."""

  def __init__(self, config: ml_collections.ConfigDict, params, *, batch_size: int = 256,
               mesh=None):
    self.config, self.batch_size, self.mesh = config, batch_size, mesh
    net = ProbeNet(tuple(config.widths), config.feature_dim)
    if mesh is not None:
      params = jax.device_put(params, parallel.replicated(mesh))

    @jax.jit
    def apply(images):
      feats, logits = net.apply({'params': params}, _normalize(images, config.resolution))
      return feats, {k: v.argmax(-1) for k, v in logits.items()}
    self._apply = apply

  def __call__(self, images: np.ndarray):
    """uint8 [N, H, W, 3] -> (features float32 [N, F], {attribute: class index [N]})."""
    return parallel.map_batches(self._apply, (images,), self.batch_size, self.mesh)

  def features(self, images: np.ndarray) -> np.ndarray:
    return self(images)[0]

  def accuracy(self, images: np.ndarray, prompts: Sequence[str]) -> dict:
    """attribute_accuracy of `images` against what each of `prompts` names."""
    return attribute_accuracy(self(images)[1], prompt_targets(prompts))

  # ------------------------------------------------------------ persistence

  def save(self, workdir: str, params, metrics: dict):
    """Orbax checkpoint of params in WORKDIR/params + probe.json (config, metrics)."""
    os.makedirs(workdir, exist_ok=True)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(os.path.abspath(os.path.join(workdir, 'params')), params, force=True)
    ckptr.wait_until_finished()
    with open(os.path.join(workdir, 'probe.json'), 'w') as f:
      json.dump({'config': self.config.to_dict(), 'metrics': metrics}, f, indent=1)

  @classmethod
  def load(cls, workdir: str, **kwargs) -> 'Probe':
    meta_path = os.path.join(workdir, 'probe.json')
    if not os.path.exists(meta_path):
      raise FileNotFoundError(
          f'no trained probe in {workdir} (probe.json missing). Train one with:\n  python -m '
          f'gigagan_jax.evaluate.train_probe --config=configs/probe_shapes.py --workdir={workdir}')
    with open(meta_path) as f:
      config = ml_collections.ConfigDict(json.load(f)['config'])
    params = ocp.StandardCheckpointer().restore(os.path.abspath(os.path.join(workdir, 'params')))
    return cls(config, params, **kwargs)


def meta(workdir: str) -> dict:
  """probe.json of a trained probe: {'config': ..., 'metrics': ...}."""
  with open(os.path.join(workdir, 'probe.json')) as f:
    return json.load(f)
