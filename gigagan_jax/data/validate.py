"""Checks of the `config.data` block that need no files (field ranges, names).

`pipeline.ensure_dataset` adds the checks that look at data_dir (missing or
mis-sized data). Errors are `ConfigError`s naming the field and the fix.
"""
import ml_collections

from gigagan_jax.config_utils import ConfigError

SHIPPED_BUILDERS = ('captioned_shapes', 'image_folder')


def _require(cond, field, message):
  if not cond:
    raise ConfigError(f'config.data.{field}: {message}')


def check_data_config(data_cfg: ml_collections.ConfigDict, process_count: int = 1):
  """Raises ConfigError for a data config that cannot work; returns it otherwise."""
  d = data_cfg
  _require(isinstance(d.builder, str) and d.builder.strip(), 'builder',
           f"must name a dataset: one of {SHIPPED_BUILDERS} or a prepared TFDS name, "
           f'got {d.builder!r}')
  _require(bool(d.data_dir), 'data_dir', 'must be a directory for prepared datasets '
           '(e.g. --config.data.data_dir=runs/data)')
  # array_record files are read through local file handles, not object-store
  # clients; the supported way is a copy on each host's disk (README "Training").
  _require('://' not in d.data_dir, 'data_dir',
           f'{d.data_dir!r} is in object storage; the data is read from local disk. Copy it '
           f'there first (e.g. gcloud storage cp -r {d.data_dir} /data) and set '
           '--config.data.data_dir=/data. Run directories (--workdir) may be gs://.')
  r = d.resolution
  _require(isinstance(r, int) and r >= 8 and r & (r - 1) == 0, 'resolution',
           f'must be a power of two >= 8, got {r!r}')
  _require(d.num_examples >= 0, 'num_examples', f'must be >= 0 (0 = default), got {d.num_examples}')
  _require(d.batch_size >= 1, 'batch_size', f'must be >= 1, got {d.batch_size}')
  _require(d.batch_size % process_count == 0, 'batch_size',
           f'the global batch {d.batch_size} must divide evenly over {process_count} '
           f'processes; use a multiple of {process_count}')
  _require(d.num_workers >= 0, 'num_workers', f'must be >= 0 (0 = in-process), got {d.num_workers}')
  _require(d.prefetch >= 1, 'prefetch', f'must be >= 1 batch, got {d.prefetch}')
  _require(d.read_threads >= 1, 'read_threads', f'must be >= 1, got {d.read_threads}')
  _require(0.0 <= d.caption_dropout <= 1.0, 'caption_dropout',
           f'is a probability in [0, 1], got {d.caption_dropout}')
  swap = d.get('caption_swap', 0.0)
  _require(0.0 <= swap <= 1.0, 'caption_swap', f'is a probability in [0, 1], got {swap}')
  words = d.get('word_dropout', 0.0)
  _require(0.0 <= words < 1.0, 'word_dropout', f'is a probability in [0, 1), got {words}')
  _require('{}' in d.caption_template, 'caption_template',
           f"must contain '{{}}' where the class name goes, got {d.caption_template!r}")
  return data_cfg
