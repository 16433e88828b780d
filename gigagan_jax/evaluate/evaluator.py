"""Scores the checkpoints of a training run.

For each checkpoint: G_ema draws one image per held-out caption (latent seed
eval.seed + i for caption i), and every metric in eval.metrics is computed
against the real held-out images, whose reference statistics are computed
once per run (and cached to npz for FID).

  attribute_accuracy  probe predictions vs what each prompt names (probe.py)
  probe_fd            Frechet distance on probe features, generated vs real
  fid, kid            Inception-v3 pool features, the authors' protocol:
                      centre crop + PIL Lanczos resize to eval.resolution
                      (real images straight from their stored size), then
                      clean-fid's bicubic resize to 299
  clip_score          CLIP cosine of image and "A photo depicts " + caption
  prompt_diversity    how much the images of one caption vary with z: the
                      per-pixel standard deviation over eval.diversity_seeds
                      latents (pixels in [0, 1]), averaged over pixels and the
                      first eval.diversity_prompts distinct held-out captions;
                      0 = G ignores z (a GAN collapsed onto one image per
                      caption, which FID and accuracy only hint at)
"""
import hashlib
import json
import os
import sys
import time

import jax
import ml_collections
import numpy as np

from gigagan_jax import parallel
from gigagan_jax.config_utils import load_config
from gigagan_jax.data import pipeline
from gigagan_jax.evaluate import fid as fid_lib
from gigagan_jax.evaluate import inception, preprocess
from gigagan_jax.evaluate import probe as probe_lib
from gigagan_jax.inference import load_run, run_config
from gigagan_jax.sample import Sampler
from gigagan_jax.text.tokenizer import make_tokenizer

METRICS = ('attribute_accuracy', 'probe_fd', 'fid', 'kid', 'clip_score', 'prompt_diversity')
PROBE_METRICS = ('attribute_accuracy', 'probe_fd')


def check_eval_config(ev: ml_collections.ConfigDict, run_config: ml_collections.ConfigDict):
  """Raises ValueError naming the eval_config field that cannot work."""
  if ev.num_examples < -1:
    raise ValueError(f'eval_config.num_examples={ev.num_examples}: -1 (the run\'s build), '
                     '0 (the default build) or a build size')
  bad = set(ev.metrics) - set(METRICS)
  if bad:
    raise ValueError(f'eval_config.metrics: unknown {sorted(bad)}; choose from {METRICS}')
  dataset = ev.dataset or run_config.data.builder
  if set(ev.metrics) & set(PROBE_METRICS) and dataset != 'captioned_shapes':
    raise ValueError(f'eval_config.metrics: {PROBE_METRICS} need labelled captioned_shapes data, '
                     f'but the evaluation data is {dataset!r}; use fid/kid/clip_score')
  if set(ev.metrics) & {'fid', 'kid'} and not ev.inception_path:
    raise ValueError('eval_config.inception_path: fid/kid need the FID Inception weights '
                     '(pt_inception-2015-12-05-6726825d.pth, the file pytorch-fid downloads)')
  if 'clip_score' in ev.metrics and not ev.clip_dir:
    raise ValueError('eval_config.clip_dir: clip_score needs a Hugging Face CLIPModel directory '
                     '(openai/clip-vit-base-patch32)')
  if 'prompt_diversity' in ev.metrics and (ev.diversity_seeds < 2 or ev.diversity_prompts < 1):
    raise ValueError('eval_config.diversity_seeds / diversity_prompts: prompt_diversity needs '
                     f'at least 2 seeds and 1 prompt, got {ev.diversity_seeds} and '
                     f'{ev.diversity_prompts}')
  devices = jax.device_count()
  if ev.batch_size % devices:
    raise ValueError(f'eval_config.batch_size={ev.batch_size} must be a multiple of the '
                     f'{devices} devices it is split over')


def _caption(record, key: str) -> str:
  """Caption feature `key` of a record; 'a/b' is nested, a sequence gives its first entry."""
  value = record
  for part in key.split('/'):
    value = value[part]
  if isinstance(value, (list, tuple, np.ndarray)) and not isinstance(value, (str, bytes)):
    value = value[0]
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def held_out(run_config, ev) -> tuple:
  """(TFDS builder, data source of ev.split, number of examples used, image key,
  caption key) of the evaluation data: `ev.dataset` or the run's, read from the
  run's data_dir (built there first if missing), of `ev.num_examples` examples
  or the run's."""
  data_cfg = ml_collections.ConfigDict(run_config.data.to_dict())
  data_cfg.split = ev.split
  data_cfg.builder = ev.dataset or data_cfg.builder
  if ev.num_examples >= 0:
    data_cfg.num_examples = ev.num_examples
  image_key = ev.image_key or data_cfg.get('image_key', 'image')
  caption_key = ev.caption_key or data_cfg.get('caption_key', 'caption')
  data_cfg.image_key, data_cfg.caption_key = image_key, caption_key.split('/')[0]
  builder = pipeline.ensure_dataset(data_cfg)
  source = builder.as_data_source(ev.split)
  return builder, source, min(len(source), ev.num_real or len(source)), image_key, caption_key


def real_batches(run_config, ev):
  """Yields (uint8 images as stored, of any size, captions), ev.batch_size at a
  time: the held-out split read once, without holding all of it in memory."""
  _, source, n, image_key, caption_key = held_out(run_config, ev)
  for i in range(0, n, ev.batch_size):
    records = source.__getitems__(range(i, min(i + ev.batch_size, n)))
    yield [np.asarray(x[image_key]) for x in records], [_caption(x, caption_key) for x in records]


def real_examples(run_config, ev) -> tuple[np.ndarray, list[str]]:
  """The held-out split: (uint8 images [N, R, R, 3] at the generator's resolution
  R, as the probe compares them with generated images; N captions)."""
  r = run_config.generator.resolution
  images, captions = [], []
  for batch, batch_captions in real_batches(run_config, ev):
    images += [pipeline.center_crop_resize(x, r) for x in batch]
    captions += batch_captions
  return np.stack(images), captions


def reference_name(run_config, ev, resolution: int) -> str:
  """The cache name of the real images' Inception statistics: readable, plus a
  hash of everything that changes them (the prepared data version, split,
  count, image feature, evaluation side, preprocessing, Inception weights).
  The generator's resolution is not among them: real images go from the
  dataset's resolution straight to `resolution`."""
  builder, _, n, image_key, _ = held_out(run_config, ev)
  pins = [str(builder.data_dir), ev.split, n, image_key, resolution, preprocess.PROTOCOL,
          os.path.abspath(ev.inception_path)]
  digest = hashlib.sha256(json.dumps(pins).encode()).hexdigest()[:12]
  return (f'{builder.name}_{ev.split}_{n}_{resolution}px_lanczos_clean299_'
          f'inception-2015-12-05_{digest}')


def load_probe(ev, mesh) -> probe_lib.Probe:
  """The probe in ev.probe_dir, trained there first (about a minute) when absent."""
  if not os.path.exists(os.path.join(ev.probe_dir, 'probe.json')):
    from gigagan_jax.evaluate import train_probe  # only when needed
    print(f'evaluate: no probe in {ev.probe_dir}; training one ({ev.probe_config}) ...',
          file=sys.stderr, flush=True)
    probe, params, metrics = train_probe.train(load_config(ev.probe_config))
    probe.save(ev.probe_dir, params, metrics)
  return probe_lib.Probe.load(ev.probe_dir, batch_size=ev.batch_size, mesh=mesh)


class Evaluator:
  """Metrics of generated images against one run's held-out data."""

  def __init__(self, workdir: str, ev: ml_collections.ConfigDict, log=print):
    self.workdir, self.ev, self.log = workdir, ev, log
    self.run_config, _ = run_config(workdir)
    check_eval_config(ev, self.run_config)
    self.mesh = jax.make_mesh((jax.device_count(), 1, 1), parallel.MESH_AXES)
    # Params come with each evaluated checkpoint (generate).
    self.sampler = Sampler(self.run_config, None, psi=ev.psi, batch_size=ev.batch_size,
                           seed=ev.seed, mesh=self.mesh)
    self.real_images, captions = real_examples(self.run_config, ev)
    reps = -(-ev.num_samples // len(captions))
    self.prompts = (captions * reps)[:ev.num_samples]
    self.seeds = [ev.seed + i for i in range(ev.num_samples)]
    self.resolution = ev.resolution or self.run_config.generator.resolution
    if 'prompt_diversity' in ev.metrics:
      distinct = list(dict.fromkeys(captions))[:ev.diversity_prompts]
      self.diversity_prompts = [p for p in distinct for _ in range(ev.diversity_seeds)]
      self.diversity_seeds = [ev.seed + j for _ in distinct for j in range(ev.diversity_seeds)]
    log(f'evaluate: {len(self.prompts)} generated vs {len(self.real_images)} real images '
        f'({ev.dataset or self.run_config.data.builder} {ev.split}), metrics {list(ev.metrics)}')
    self.probe = self.inception = self.clip = None
    self.reference = {}
    if set(ev.metrics) & set(PROBE_METRICS):
      self.probe = load_probe(ev, self.mesh)
      self.reference['probe'] = fid_lib.FeatureStats().update(self.probe.features(self.real_images))
    if set(ev.metrics) & {'fid', 'kid'}:
      self.inception = jax.device_put(inception.load_fid_inception(ev.inception_path),
                                      parallel.replicated(self.mesh))
      self.reference['inception'] = fid_lib.cached_stats(
          ev.cache_dir, reference_name(self.run_config, ev, self.resolution),
          lambda: self._inception_stats(
              (images for images, _ in real_batches(self.run_config, ev)),
              len(self.real_images)),
          protocol=self.protocol())
    if 'clip_score' in ev.metrics:
      from gigagan_jax.frozen import clip_model
      self.clip = clip_model.load_clip(ev.clip_dir)
      # CLIP's own BPE and context length, from the same directory.
      self.clip_tokenize = make_tokenizer(ml_collections.ConfigDict(
          {'tokenizer': 'clip', 'backbone_path': ev.clip_dir, 'max_len': 77}))

  def protocol(self) -> dict:
    """Every choice that shapes the numbers, recorded next to them."""
    ev = self.ev
    return {'dataset': ev.dataset or self.run_config.data.builder, 'split': ev.split,
            'num_generated': len(self.prompts), 'num_real': len(self.real_images),
            'psi': ev.psi, 'seeds': f'{ev.seed}..{ev.seed + len(self.seeds) - 1}',
            'resolution': self.resolution,
            'resize': 'centre crop to the short side + PIL Lanczos to resolution (real images '
                      'from their stored size, generated from the generator\'s); clean-fid '
                      'bicubic float resize to 299 for Inception',
            'clip_prefix': ev.clip_prefix,
            'diversity': (f'{ev.diversity_seeds} seeds ({ev.seed}..) x the first '
                          f'{ev.diversity_prompts} distinct captions'
                          if 'prompt_diversity' in ev.metrics else None),
            'probe': probe_lib.meta(ev.probe_dir) if self.probe is not None else None}

  def _inception_stats(self, batches, count: int) -> fid_lib.FeatureStats:
    """Inception pool features of `count` uint8 images, given in batches (lists of
    images of any sizes), preprocessed on the host batch by batch (a whole set at
    299 px would not fit in memory) and split over the mesh. All features are kept
    (KID)."""
    features = jax.jit(lambda x: inception.pool_features(self.inception, x, resize=False,
                                                         input_norm='clean_fid'))
    stats = fid_lib.FeatureStats(max_keep=count)
    for images in batches:
      batch = preprocess.clean_resize(preprocess.eval_preprocess(images, self.resolution))
      stats.update(parallel.map_batches(features, (batch,), self.ev.batch_size, self.mesh))
    return stats

  def generate(self, params) -> np.ndarray:
    """uint8 [num_samples, R, R, 3]: one image per (seed, prompt) from G_ema `params`."""
    self.sampler.set_params(params)
    return self.sampler.images(self.seeds, self.prompts)

  def prompt_diversity(self) -> float:
    """The 'prompt_diversity' metric of the sampler's current params."""
    images = self.sampler.images(self.diversity_seeds, self.diversity_prompts)
    per_prompt = images.reshape((-1, self.ev.diversity_seeds) + images.shape[1:])
    return float((per_prompt.astype(np.float64) / 255).std(axis=1).mean())

  def score(self, images: np.ndarray) -> dict:
    """{metric: value} of generated `images` (aligned with self.prompts)."""
    ev, out = self.ev, {}
    if self.probe is not None:
      feats, pred = self.probe(images)
      if 'attribute_accuracy' in ev.metrics:
        acc = probe_lib.attribute_accuracy(pred, probe_lib.prompt_targets(self.prompts))
        out['attribute_accuracy'] = acc['mean']
        out['attribute_chance'] = acc['chance']
        out.update({f'attribute_accuracy/{k}': acc[k] for k in probe_lib.ATTRIBUTES
                    if acc[k] is not None})
      if 'probe_fd' in ev.metrics:
        out['probe_fd'] = fid_lib.FeatureStats().update(feats).frechet_distance(
            self.reference['probe'])
    if self.inception is not None:
      b = ev.batch_size
      gen = self._inception_stats((images[i:i + b] for i in range(0, len(images), b)),
                                  len(images))
      ref = self.reference['inception']
      if 'fid' in ev.metrics:
        out['fid'] = gen.frechet_distance(ref)
      if 'kid' in ev.metrics:
        out['kid'] = fid_lib.kid(gen.features, ref.features, ev.kid_subsets,
                                 min(ev.kid_subset_size, len(images), len(self.real_images)))
    if self.clip is not None:
      from gigagan_jax.evaluate import clip_score
      batches = ((preprocess.eval_preprocess(images[i:i + ev.batch_size], self.resolution)
                  .astype(np.float32) / 255, self.prompts[i:i + ev.batch_size])
                 for i in range(0, len(images), ev.batch_size))
      out['clip_score'] = clip_score.clip_score(self.clip, batches, self.clip_tokenize,
                                                ev.clip_prefix)['clip_score']
    return out

  def evaluate(self, step: int):
    """(metrics dict, generated images) of checkpoint `step`."""
    start = time.time()
    _, _, params = load_run(self.workdir, step)
    images = self.generate(params)
    metrics = self.score(images)
    if 'prompt_diversity' in self.ev.metrics:
      metrics['prompt_diversity'] = self.prompt_diversity()
    self.log(f'evaluate: step {step}: ' + ', '.join(
        f'{k} {v:.4f}' for k, v in metrics.items() if '/' not in k) +
        f'  ({time.time() - start:.1f} s)')
    return metrics, images
