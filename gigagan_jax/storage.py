"""Run directories on local disk or in object storage (gs://, any etils.epath scheme).

Every path a run reads or writes goes through `etils.epath`; Orbax writes
checkpoints to the same URLs itself (arrays through tensorstore). What this
module adds:

- `use_emulator_from_env()`: STORAGE_EMULATOR_HOST (the variable Google's
  client libraries read) points every layer at a local GCS emulator: gcsfs
  (behind epath) reads it already; tensorstore has its own endpoint variable
  and needs a token, and gcsfs must not probe the emulator over gRPC.
- `check_writable()`: a missing bucket or one without write access fails at
  start-up with an error naming it, not in the middle of the first save.
- `StagedDir`: files that grow by appends (metrics.jsonl, TensorBoard events)
  in a directory that may be an object store, which cannot append.
"""
import io
import os
import shutil
import tempfile

from etils import epath


class StorageError(RuntimeError):
  """A run directory that cannot be used (missing bucket, no write access)."""


def is_remote(path) -> bool:
  """True for URLs (gs://...), False for local paths."""
  return '://' in os.fspath(path)


def run_path(path) -> epath.Path:
  """`path` as an epath.Path; local paths made absolute (messages name where files are)."""
  return epath.Path(path) if is_remote(path) else epath.Path(os.path.abspath(os.fspath(path)))


def use_emulator_from_env(environ=os.environ):
  """Points tensorstore and gcsfs at STORAGE_EMULATOR_HOST when it is set.

  Only defaults are set, so any variable given explicitly wins. Must run before
  the first gs:// access (gcsfs reads its switch at import); this module runs
  it when imported, and every module that touches run paths imports it.
  """
  host = environ.get('STORAGE_EMULATOR_HOST')
  if not host:
    return
  if not host.startswith(('http://', 'https://')):
    host = 'http://' + host
  environ.setdefault('TENSORSTORE_GCS_HTTP_URL', host)  # tensorstore's GCS endpoint
  # tensorstore asks Google auth for a token first; an emulator accepts any.
  environ.setdefault('GOOGLE_AUTH_TOKEN_FOR_TESTING', 'emulator')
  environ.setdefault('FSSPEC_GCS_TOKEN', 'anon')  # gcsfs: no credential lookup
  # gcsfs would ask each bucket's type over gRPC, which an emulator does not
  # serve (a 60 s timeout per bucket).
  environ.setdefault('GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT', 'false')
  try:  # fsspec read its FSSPEC_* variables when it was imported
    import fsspec.config  # pylint: disable=g-import-not-at-top
    for protocol in ('gs', 'gcs'):
      fsspec.config.conf.setdefault(protocol, {}).setdefault('token', environ['FSSPEC_GCS_TOKEN'])
  except ImportError:
    pass


def _no_listing_cache():
  """gcsfs caches directory listings for the life of the process: a listing
  taken before another process (another host, a later run) wrote a checkpoint
  would hide it. Every listing asks the store."""
  try:
    import fsspec.config  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  for protocol in ('gs', 'gcs'):
    fsspec.config.conf.setdefault(protocol, {}).setdefault('use_listings_cache', False)


_no_listing_cache()
use_emulator_from_env()


def check_writable(directory, probe: str = '.write_check') -> epath.Path:
  """Creates `directory` and writes (then removes) the file `probe` there (one
  name per process: processes that share a directory must not remove each
  other's probe).

  Raises StorageError naming the directory (and the bucket, for an object
  store) when it cannot be written. Returns the directory as an epath.Path.
  """
  path = run_path(directory)
  probe = path / probe
  try:
    if not is_remote(path):  # object stores have no directories; gcsfs's mkdir
      path.mkdir(parents=True, exist_ok=True)  # would even create a missing bucket
    probe.write_text('gigagan_jax checks that this directory is writable\n')
    probe.unlink()
  except Exception as e:  # pylint: disable=broad-except
    # gcsfs/fsspec/OS errors differ by backend; what matters is where and why.
    where = f'{path}'
    if is_remote(path):
      bucket = os.fspath(path).split('://', 1)[1].split('/', 1)[0]
      where += (f' (bucket {bucket!r} does not exist or these credentials cannot see it)'
                if isinstance(e, FileNotFoundError) else f' (bucket {bucket!r})')
    raise StorageError(f'cannot write to {where}: {type(e).__name__}: {e}') from None
  return path


def write_bytes(path, data: bytes):
  """Writes a whole file, creating its parent directory."""
  path = epath.Path(path)
  if not is_remote(path):
    path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data)


def write_atomic(path, data: bytes):
  """Writes a whole file that readers see complete or not at all, even if the
  writer dies: locally through a temporary file and a rename; an object
  store's upload is already all-or-nothing."""
  path = epath.Path(path)
  if is_remote(path):
    path.write_bytes(data)
    return
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_bytes(data)
  os.replace(tmp, path)


def save_image(image, path, **save_kwargs):
  """Saves a PIL image to a local or object-store path (format from the suffix)."""
  buf = io.BytesIO()
  fmt = {'.png': 'PNG', '.gif': 'GIF', '.jpg': 'JPEG', '.jpeg': 'JPEG'}.get(
      epath.Path(path).suffix.lower(), 'PNG')
  image.save(buf, format=fmt, **save_kwargs)
  write_bytes(path, buf.getvalue())


class StagedDir:
  """A directory whose files grow by appends, on local disk or in an object store.

  Object stores have no append (gcsfs silently overwrites): files are written
  in a local staging directory and `sync()` uploads each changed one whole.
  For a local directory the files are written in place and `sync()` does
  nothing. `fetch` names files to download first, to continue appending to
  them (metrics.jsonl of a resumed run).
  """

  def __init__(self, directory, fetch=()):
    self.directory = run_path(directory)
    self.remote = is_remote(self.directory)
    self._synced = {}
    if not self.remote:
      self.directory.mkdir(parents=True, exist_ok=True)
      self.local = self.directory
      return
    self.local = epath.Path(tempfile.mkdtemp(prefix='gigagan_jax_staged_'))
    for name in fetch:
      src = self.directory / name
      if src.exists():
        data = src.read_bytes()
        (self.local / name).write_bytes(data)
        self._synced[name] = len(data)

  def path(self, name: str) -> str:
    """Local path to write `name` to (a real file path: any writer can open it)."""
    return os.fspath(self.local / name)

  def sync(self):
    """Uploads the files that changed since the last sync (object stores only)."""
    if not self.remote:
      return
    for f in self.local.iterdir():
      size = os.path.getsize(f)
      if self._synced.get(f.name) != size:
        (self.directory / f.name).write_bytes(f.read_bytes())
        self._synced[f.name] = size

  def close(self):
    self.sync()
    if self.remote:
      shutil.rmtree(self.local, ignore_errors=True)
