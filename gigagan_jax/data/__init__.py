"""Data: TFDS builders (captioned_shapes, image_folder), the grain pipeline, SR degradations.

  pipeline.make_dataset(config.data, tokenize=..., seed=...)  -> per-process batches
  pipeline.ensure_dataset(config.data)                        -> prepared TFDS builder
  captioned_shapes.parse_caption(text)                        -> attribute labels
  degrade.make_pair(img, degrade.degradation_config(), seed=) -> (lr, hr)
  python -m gigagan_jax.data.prepare --builder=... --src=... --out=...

Submodules are imported explicitly (`from gigagan_jax.data import pipeline`):
importing this package stays cheap.
"""
