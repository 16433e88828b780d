"""Test-session environment, set before anything imports jax.

- 8 fake CPU devices, so every sharding path runs without accelerators
  (DESIGN.md "Parallelism").
- XLA:CPU set to compile fast: the training tests are dominated by compile
  time. t2i_micro's train step, measured in one process: ~24 s at the default
  settings, 16-18 s with backend optimisation off, 9-13 s with XLA:CPU's
  older elemental emitters instead of its fusion emitters as well. Every
  test compares programs compiled with the same flags.
- A session-wide persistent compilation cache, inherited by the subprocesses
  that the multi-process, SIGKILL and SIGTERM tests start (and by pytest-xdist's
  workers), so the same train step is compiled once.
- Under pytest-xdist (`-n 2`, as README's test command runs) with
  `--dist loadgroup` (pyproject.toml): each test file runs whole on one
  worker, so its module fixtures are built once; the tests that use the
  trained probe or the straight micro run share one group, so each is built
  once; tests that compile the same step share one (pytest_collection_modifyitems).
"""
import os
import subprocess
import sys
import tempfile

import pytest

from gigagan_jax.runtime import quiet_gc


def xla_flags(devices: int = 8) -> str:
  """The one XLA_FLAGS string of the test process and of every subprocess it
  starts, but for the device count: the persistent compilation cache keys on
  the flags, so equal strings let a program compiled once serve them all."""
  return (f'--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0 '
          '--xla_cpu_use_fusion_emitters=false')


os.environ.setdefault('XLA_FLAGS', xla_flags(8))
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', tempfile.mkdtemp(prefix='gigagan_jax_cache_'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '1')
# As the command-line programs do (gigagan_jax/runtime.py): tracing is a third
# faster with the cyclic garbage collector running rarely.
quiet_gc()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALLOWED_SKIPS = os.path.join(REPO, 'tests', 'allowed_skips.txt')


def _allowed_skip_reasons() -> list[str]:
  with open(ALLOWED_SKIPS) as f:
    return [line.strip() for line in f if line.strip() and not line.startswith('#')]


_unallowed_skips = []


def pytest_runtest_logreport(report):
  """Collects skips and xfails (under xdist: on the controller, from every worker)."""
  if report.skipped:
    reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if hasattr(report, 'wasxfail'):
      reason = f'xfail: {report.wasxfail}'
    if not any(allowed in reason for allowed in _allowed_skip_reasons()):
      _unallowed_skips.append(f'{report.nodeid}: {reason}')


def pytest_terminal_summary(terminalreporter):
  if _unallowed_skips:
    terminalreporter.section('skips that fail the suite (tests/allowed_skips.txt)', red=True)
    for line in _unallowed_skips:
      terminalreporter.write_line(line)


def pytest_sessionfinish(session, exitstatus):
  if _unallowed_skips and exitstatus == 0:
    session.exitstatus = 1


# Groups that cost the most on 2 cores (seconds of worker time, --durations=0
# of CI in a fresh clone at 05ca9da), scheduled first: pytest-xdist hands
# groups out in collection order (pyproject.toml: --no-loadscope-reorder), so
# the longest go first and the two workers finish together.
HEAVIEST_FIRST = ('session_runs',              # 315: the probe, straight_run; SIGKILL,
                                               #   crash-during-save and gs:// resumes
                  'micro_programs',            # 200: t2i_micro steps, (1,1,1) and (2,4,1)
                  'test_preemption',           # 189: two-process runs
                  'sr_programs',               # 138: the SR steps of up_tiny and baselines
                  'test_train_frozen_losses',  #  96: CLIP + vision-aided steps
                  'train_faults', 'test_models', 'test_bench',
                  'test_tiny_recipe', 'test_whitening')  # ~40 each: sharded steps; a short run


# xdist reads the groups into node ids, which works with pytest 8 only
# (requirements-test.txt pins it); under pytest 9 every test is scheduled alone.
@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items):
  """Each test file is one xdist group (one worker builds its module fixtures),
  but for tests marked with a group of their own: tests that compile the same
  programs share one (the persistent cache then serves the later ones), a long
  file splits into independent parts, and the users of the session's probe and
  straight run share 'session_runs' (each is built once). Heaviest groups first."""
  def group(item):
    marker = item.get_closest_marker('xdist_group')
    if marker:
      return marker.args[0]
    session_runs = {'probe_dir', 'straight_run'} & set(item.fixturenames)
    name = 'session_runs' if session_runs else item.module.__name__
    item.add_marker(pytest.mark.xdist_group(name))
    return name
  rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}
  items.sort(key=lambda item: rank.get(group(item), len(rank)))  # stable: files keep their order


@pytest.fixture(scope='session')
def probe_dir(tmp_path_factory):
  """A probe trained by the CLI with configs/probe_shapes.py (test_probe, test_evaluate).

  Runs in a subprocess with XLA's default optimisation level: the level 0 set
  above saves compile time but would make this training loop slow.
  """
  root = tmp_path_factory.mktemp('probe')
  workdir, data_dir = str(root / 'probe'), str(root / 'data')
  env = dict(os.environ, XLA_FLAGS='')
  subprocess.run([sys.executable, '-m', 'gigagan_jax.evaluate.train_probe',
                  f'--workdir={workdir}', f'--config.data_dir={data_dir}'],
                 cwd=REPO, env=env, check=True, timeout=900)
  return workdir


def micro_config(data_dir: str = ''):
  """configs/t2i_micro.py, validated, reading captioned_shapes from `data_dir`."""
  from gigagan_jax.config_utils import load_config, validate
  config = load_config(os.path.join(REPO, 'configs/t2i_micro.py'))
  if data_dir:
    config.data.data_dir = data_dir
  return validate(config)


@pytest.fixture(scope='session')
def micro_data_dir(tmp_path_factory):
  """captioned_shapes prepared as configs/t2i_micro.py reads it (both splits), once per
  worker. Tests read it; none writes into it."""
  from gigagan_jax.data.pipeline import ensure_dataset
  path = str(tmp_path_factory.mktemp('micro_data'))
  ensure_dataset(micro_config(path).data)
  return path


@pytest.fixture(scope='session')
def micro_step(micro_data_dir):
  """(config, mesh, parts, step): t2i_micro's jitted train step on one device of
  this process, built once per worker for test_train.py's sharded test and
  test_train_step.py (both in the 'micro_programs' group): each compiled
  variant is then traced and loaded once, not once per user."""
  import jax
  from gigagan_jax import parallel
  from gigagan_jax.text.tokenizer import make_tokenizer
  from gigagan_jax.train import state as state_lib
  from gigagan_jax.train.step import jit_train_step, make_train_step
  config = micro_config(micro_data_dir)
  mesh = parallel.make_mesh(config.mesh, jax.devices()[:1])
  parts = state_lib.build(config, mesh, make_tokenizer(config.text).vocab_size, 0)
  step = jit_train_step(make_train_step(parts.g, parts.d, parts.g_tx, parts.d_tx, config),
                        parts.shardings, mesh)
  return config, mesh, parts, step


@pytest.fixture(scope='session')
def straight_run(micro_data_dir, tmp_path_factory):
  """Six uninterrupted steps of the training CLI on micro_data_dir, one device,
  checkpoints at 3 and 6: what the SIGKILL, crash-during-save and gs:// runs
  must equal after their resume.

  A subprocess like the runs it is compared with: XLA:CPU programs are bitwise
  reproducible in the same process setup (here: one CPU device), not across
  setups (the test process has 8 fake devices).
  """
  import cloud  # pylint: disable=g-import-not-at-top  (it imports this module)
  workdir = str(tmp_path_factory.mktemp('straight'))
  rc, out = cloud.finish(cloud.start(cloud.train_cmd(workdir, micro_data_dir)))
  assert rc == 0, out
  return workdir


@pytest.fixture(scope='session')
def micro_run(tmp_path_factory, micro_data_dir):
  """A workdir with checkpoints 0 (freshly initialised) and 5 (G_ema perturbed, so
  the two differ) of the micro config on micro_data_dir; no step is compiled.
  Shared by the sampling, evaluation and upsampler-chaining tests; they write
  their outputs elsewhere, except evaluate's WORKDIR/eval/."""
  import jax
  from gigagan_jax import parallel
  from gigagan_jax.text.tokenizer import make_tokenizer
  from gigagan_jax.train import state as state_lib
  from gigagan_jax.train.checkpoint import Checkpointer
  workdir = str(tmp_path_factory.mktemp('micro_run'))
  config = micro_config(micro_data_dir)
  mesh = parallel.make_mesh(config.mesh, jax.devices()[:1])
  state = state_lib.build(config, mesh, make_tokenizer(config.text).vocab_size, 0).init(config)
  ckpt = Checkpointer(workdir, config.train)
  ckpt.save(0, state, None, config, force=True)
  keys = iter(jax.random.split(jax.random.PRNGKey(1), 1000))
  state['ema'] = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(next(keys), x.shape),
                              state['ema'])
  ckpt.save(5, state, None, config, force=True)
  ckpt.wait()
  ckpt.close()
  return workdir


# A tiny random Hugging Face CLIP, for the converter-parity tests of the CLIP towers.
CLIP_VOCAB, CLIP_EOS = 99, 98


def save_tiny_hf_clip(directory, **vision_config):
  """A random transformers.CLIPModel with a small fixed text tower and the given
  vision tower, its LayerNorms perturbed (so a skipped or misplaced LN shows),
  saved in `directory` as config.json + model.safetensors. Returns the model."""
  import torch
  import transformers
  torch.manual_seed(0)
  cfg = transformers.CLIPConfig(
      text_config=dict(vocab_size=CLIP_VOCAB, hidden_size=32, intermediate_size=37,
                       num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=16,
                       bos_token_id=97, eos_token_id=CLIP_EOS, pad_token_id=0),
      vision_config=vision_config, projection_dim=24)
  model = transformers.CLIPModel(cfg).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if 'norm' in name or 'layrnorm' in name:
        noise = 0.3 * torch.randn_like(p)
        p.copy_(1.0 + noise if name.endswith('weight') else noise)
  model.save_pretrained(directory, safe_serialization=True)
  return model

