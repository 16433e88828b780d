"""Evaluation: Inception-v3 for FID, metrics and reports.

The frozen networks shared with the training losses (CLIP towers, LPIPS-VGG)
live in `gigagan_jax.frozen`.

Feature networks and metric cores:
  inception.py    Flax Inception-v3 exactly as used for FID + converter from the
                  standard FID weight file (pt_inception-2015-12-05-6726825d.pth).
  fid.py          Frechet distance, KID, streaming feature statistics + npz cache.
  clip_score.py   CLIP score (cosine similarity, "A photo depicts " prefix).
  preprocess.py   The GigaGAN authors' protocol: centre crop + PIL Lanczos resize,
                  then clean-fid's resize to 299 for Inception.
  probe.py        The attribute probe of `captioned_shapes` images (accuracy
                  against prompts, features for a Frechet distance);
                  train_probe.py trains it.

Checkpoint evaluation (`python -m gigagan_jax.evaluate`, see __main__.py):
  evaluator.py    Generates from each checkpoint and computes the metrics.
  report.py       metrics.json, TensorBoard scalars, report.html.
"""
