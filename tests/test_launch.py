"""The launch scripts (launch/): derived process counts, coordinator logic and
the exact training commands, read back from --dry-run output and from runs
against stub `gcloud`, `scontrol`, `srun`, `sbatch` and `python` executables.
The slow test trains the micro config for 2 steps with 2 real CPU processes.
"""
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import tarfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, 'launch')


def launch(script, *args, env=None, timeout=60, input=None):
  """Runs launch/SCRIPT ARGS with bash; returns the CompletedProcess (text)."""
  return subprocess.run(['bash', os.path.join(LAUNCH, script), *args], cwd=REPO,
                        env=env or dict(os.environ), capture_output=True, text=True,
                        timeout=timeout, input=input)


def commands(stdout):
  """The '+ ' lines of a launch script's output, each split into its argv."""
  return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith('+ ')]


def info(stdout, key):
  """The value after '# KEY: ' in a launch script's output."""
  m = re.search(rf'^# {key}: (.*)$', stdout, re.M)
  assert m, f'no "# {key}:" line in:\n{stdout}'
  return m.group(1)


def write_exe(path, text):
  with open(path, 'w') as f:
    f.write(text)
  os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
  return str(path)


def train_argv(argv):
  """The part of a command from `python -m gigagan_jax.train` on, without the interpreter."""
  i = argv.index('gigagan_jax.train')
  assert argv[i - 1] == '-m', argv
  return argv[i + 1:]


@pytest.mark.parametrize('script', ['local.sh', 'slurm.sh', 'tpu_pod.sh'])
def test_every_flag_is_in_the_help_and_the_readme(script):
  with open(os.path.join(LAUNCH, script)) as f:
    flags = re.findall(r'^\s+(--[a-z-]+)\)', f.read(), re.M)
  with open(os.path.join(LAUNCH, 'README.md')) as f:
    readme = f.read()
  r = launch(script, '-h')
  assert r.returncode == 0 and len(flags) >= 10
  for flag in flags:
    assert re.search(rf'^\s+{flag}\b', r.stdout, re.M), (script, flag)
    assert f'`{flag}' in readme, (script, flag)


# ------------------------------------------------------------------ TPU pod

TPU = ['--name=pod', '--zone=us-central2-b', '--project=proj', '--config=configs/t2i_micro.py']


@pytest.mark.parametrize('accelerator,workers,version', [
    ('v4-8', 1, 'tpu-ubuntu2204-base'),        # 8 TensorCores = 4 chips = one host
    ('v4-16', 2, 'tpu-ubuntu2204-base'),
    ('v4-64', 8, 'tpu-ubuntu2204-base'),       # 32 chips, 4 per host
    ('v4-384', 48, 'tpu-ubuntu2204-base'),
    ('v5p-8', 1, 'v2-alpha-tpuv5'),
    ('v5p-128', 16, 'v2-alpha-tpuv5'),
    ('v3-32', 4, 'tpu-ubuntu2204-base'),
    ('v5litepod-8', 1, 'v2-alpha-tpuv5-lite'),  # N counts chips; 8 chips fit one host
    ('v5litepod-16', 4, 'v2-alpha-tpuv5-lite'),  # multi-host slices: 4 chips per host
    ('v5litepod-256', 64, 'v2-alpha-tpuv5-lite'),
    ('v6e-8', 1, 'v2-alpha-tpuv6e'),
    ('v6e-64', 16, 'v2-alpha-tpuv6e'),
])
def test_tpu_worker_count_and_runtime_from_accelerator(accelerator, workers, version):
  r = launch('tpu_pod.sh', *TPU, f'--accelerator={accelerator}', '--workdir=gs://b/run',
             '--dry-run')
  assert r.returncode == 0, r.stderr
  assert int(info(r.stdout, 'workers').split()[0]) == workers
  assert int(info(r.stdout, 'processes').split(',')[0]) == workers
  create = commands(r.stdout)[0]
  assert create[:5] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'create']
  assert f'--accelerator-type={accelerator}' in create and f'--version={version}' in create


def test_tpu_dry_run_commands_ship_install_and_train_on_all_workers_into_gcs():
  r = launch('tpu_pod.sh', *TPU, '--accelerator=v4-64', '--workdir=gs://bkt/runs/a',
             '--extra=--config.train.steps=7 --config.train.inject_nan_steps=(5,6)', '--dry-run')
  assert r.returncode == 0, r.stderr
  cmds = commands(r.stdout)
  kinds = [' '.join(c[:5]) if c[0] == 'gcloud' else ' '.join(c[:4]) for c in cmds]
  assert kinds == ['gcloud compute tpus tpu-vm create', f'git -C {REPO} archive',
                   'gcloud compute tpus tpu-vm scp'] + ['gcloud compute tpus tpu-vm ssh'] * 2
  head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=REPO, capture_output=True,
                        text=True, check=True).stdout.strip()
  assert cmds[1][-1] == head                       # ships exactly the HEAD commit
  tarball = cmds[1][cmds[1].index('-o') + 1]
  assert cmds[2][5:7] == [tarball, 'pod:gigagan_jax.tar.gz']
  for c in cmds:
    if c[0] == 'gcloud':
      assert '--zone=us-central2-b' in c and '--project=proj' in c, c
  for c in cmds[2:]:
    assert '--worker=all' in c, c

  remote = [next(a for a in c if a.startswith('--command='))[len('--command='):] for c in cmds[3:]]
  setup, train = remote
  assert "pip install -q -r requirements.txt -e . 'jax[tpu]'" in setup
  assert 'tar -xzf ~/gigagan_jax.tar.gz' in setup
  # The trainer writes the bucket itself: no gcsfuse mount for outputs (issue 16).
  assert not any('gcsfuse' in ' '.join(c) for c in cmds)
  argv = shlex.split(train)
  assert argv[:3] == ['cd', '~/gigagan_jax', '&&'] and argv[3] == '~/gigagan_jax_venv/bin/python'
  assert train_argv(argv) == ['--config=configs/t2i_micro.py', '--workdir=gs://bkt/runs/a',
                              '--distributed', '--config.train.steps=7',
                              '--config.train.inject_nan_steps=(5,6)']


def test_tpu_queued_reuse_detach_and_shared_filesystem_workdir():
  r = launch('tpu_pod.sh', *TPU, '--accelerator=v5litepod-16', '--workdir=/mnt/nfs/run',
             '--queued', '--spot', '--dry-run')
  assert r.returncode == 0, r.stderr
  cmds = commands(r.stdout)
  assert cmds[0] == ['gcloud', 'compute', 'tpus', 'queued-resources', 'create', 'pod',
                     '--node-id=pod', '--zone=us-central2-b', '--project=proj',
                     '--accelerator-type=v5litepod-16',
                     '--runtime-version=v2-alpha-tpuv5-lite', '--spot']
  assert cmds[1][3:5] == ['queued-resources', 'describe'] and '--format=value(state.state)' in cmds[1]
  assert not any(c[3:5] == ['tpu-vm', 'create'] for c in cmds)
  assert not any('gcsfuse' in ' '.join(c) for c in cmds)
  assert '--workdir=/mnt/nfs/run' in train_argv(shlex.split(cmds[-1][-1]))

  r = launch('tpu_pod.sh', *TPU, '--accelerator=v4-8', '--workdir=runs/local', '--reuse',
             '--detach', '--dry-run')
  assert r.returncode == 0, r.stderr  # one worker: a local workdir is fine
  cmds = commands(r.stdout)
  assert cmds[0][3:6] == ['tpu-vm', 'describe', 'pod']
  assert not any('create' in c for c in cmds)
  train = cmds[-1][-1]
  assert train.startswith('--command=cd ~/gigagan_jax && nohup ')
  assert train.endswith('>~/gigagan_jax_train.log 2>&1 </dev/null &')


def test_tpu_real_run_executes_exactly_the_dry_run_commands(tmp_path):
  """With a stub gcloud on PATH: the same gcloud calls as printed, and a tarball of the commit."""
  log = tmp_path / 'gcloud.jsonl'
  bindir = tmp_path / 'bin'
  bindir.mkdir()
  write_exe(bindir / 'gcloud', f"""#!{sys.executable}
import json, sys
with open({str(log)!r}, 'a') as f:
  f.write(json.dumps(sys.argv[1:]) + '\\n')
if sys.argv[4:5] == ['describe']:
  print('ACTIVE')
""")
  env = dict(os.environ, PATH=f'{bindir}:{os.environ["PATH"]}', TMPDIR=str(tmp_path))
  args = [*TPU, '--accelerator=v4-16', '--workdir=gs://bkt/r', '--queued', '--extra=--a=1 --b']
  dry = launch('tpu_pod.sh', *args, '--dry-run', env=env)
  assert dry.returncode == 0, dry.stderr
  assert not log.exists()  # --dry-run ran nothing
  real = launch('tpu_pod.sh', *args, env=env)
  assert real.returncode == 0, real.stderr
  called = [['gcloud', *json.loads(line)] for line in log.read_text().splitlines()]
  printed = commands(dry.stdout)
  assert called == [c for c in printed if c[0] == 'gcloud']
  assert commands(real.stdout) == printed
  tarball = next(c for c in printed if c[0] == 'git')[6]
  with tarfile.open(tarball) as t:
    names = t.getnames()
  assert 'configs/t2i_micro.py' in names and 'gigagan_jax/train/__main__.py' in names


@pytest.mark.parametrize('args,message', [
    (['--accelerator=v7-8', '--workdir=gs://b/r'], '--accelerator=v7-8: unknown TPU type'),
    (['--accelerator=v4-12', '--workdir=gs://b/r'], '--accelerator=v4-12: v4 slices come in sizes'),
    (['--accelerator=v5litepod-12', '--workdir=gs://b/r'], '--accelerator=v5litepod-12'),
    (['--accelerator=v5e-16', '--workdir=gs://b/r'], 'use --accelerator=v5litepod-16'),
    (['--accelerator=v4', '--workdir=gs://b/r'], '--accelerator=v4: expected TYPE-SIZE'),
    (['--workdir=gs://b/r'], '--accelerator is required'),
    (['--accelerator=v4-8'], '--workdir is required'),
    (['--accelerator=v4-16', '--workdir=runs/x'], '--workdir=runs/x: 2 workers need storage'),
    (['--accelerator=v4-8', '--workdir=gs://b/r', '--config=configs/missing.py'],
     '--config=configs/missing.py: not a file of HEAD'),
    (['--accelerator=v4-8', '--workdir=gs://b/r', '--ref=no-such-ref'], '--ref=no-such-ref'),
    (['--accelerator=v4-8', '--workdir=gs://b/r', '--zone'], '--zone needs a value'),
    (['--accelerator=v4-8', '--workdir=gs://b/r', '--bogus'], "unknown argument '--bogus'"),
])
def test_tpu_refuses_bad_or_missing_flags(args, message):
  r = launch('tpu_pod.sh', *TPU, *args, '--dry-run')
  assert r.returncode != 0
  assert message in r.stderr, r.stderr
  assert not commands(r.stdout)  # fails before printing any command


def test_tpu_zone_is_required():
  r = launch('tpu_pod.sh', '--name=pod', '--accelerator=v4-8', '--config=configs/t2i_micro.py',
             '--workdir=gs://b/r', '--dry-run')
  assert r.returncode != 0 and '--zone is required' in r.stderr


# ------------------------------------------------------------------ SLURM

def slurm_script(*args):
  """The batch script that launch/slurm.sh --dry-run prints."""
  r = launch('slurm.sh', *args, '--dry-run')
  assert r.returncode == 0, r.stderr
  m = re.search(r'^----- generated batch script -----\n(.*)^----- end of generated batch script -----$',
                r.stdout, re.M | re.S)
  assert m, r.stdout
  assert commands(r.stdout) == [['sbatch']]
  return r.stdout, m.group(1)


def sbatch_options(script):
  return dict(re.findall(r'^#SBATCH --([\w-]+)=(\S+)$', script, re.M))


def run_slurm_job(tmp_path, script, nodes, ntasks, hosts, **env):
  """Runs a generated batch script with stub scontrol/srun/python.

  srun starts SLURM_NTASKS tasks in turn (SLURM_PROCID, SLURM_LOCALID like
  block distribution); the stub python prints its argv and JAX_LOCAL_DEVICE_IDS
  as JSON. Returns (returncode, per-task records, stdout+stderr).
  """
  bindir = tmp_path / 'bin'
  bindir.mkdir(exist_ok=True)
  write_exe(bindir / 'scontrol', """#!/bin/bash
[ "$1 $2 $3" = "show hostnames $SLURM_JOB_NODELIST" ] || { echo "unexpected: $*" >&2; exit 1; }
printf '%s\\n' $FAKE_HOSTS
""")
  write_exe(bindir / 'srun', """#!/bin/bash
while [ "${1#--}" != "$1" ]; do echo "srun option $1" >&2; shift; done
per=$((SLURM_NTASKS / SLURM_JOB_NUM_NODES))
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$((i % per)) "$@" || exit $?
done
""")
  write_exe(bindir / 'fakepython', f"""#!{sys.executable}
import json, os, sys
print('TASK ' + json.dumps({{'argv': sys.argv[1:],
                             'local_ids': os.environ.get('JAX_LOCAL_DEVICE_IDS')}}))
""")
  path = tmp_path / 'job.sbatch'
  path.write_text(script)
  env = dict(os.environ, PATH=f'{bindir}:{os.environ["PATH"]}', SLURM_JOB_ID='1234',
             SLURM_JOB_NODELIST='gpu[017-018]', SLURM_JOB_NUM_NODES=str(nodes),
             SLURM_NTASKS=str(ntasks), FAKE_HOSTS=' '.join(hosts),
             GIGAGAN_PYTHON=str(bindir / 'fakepython'), **env)
  env.pop('JAX_LOCAL_DEVICE_IDS', None)
  r = subprocess.run(['bash', str(path)], env=env, capture_output=True, text=True, timeout=60)
  tasks = [json.loads(line[5:]) for line in r.stdout.splitlines() if line.startswith('TASK ')]
  return r.returncode, tasks, r.stdout + r.stderr


def test_slurm_one_process_per_gpu(tmp_path):
  out, script = slurm_script('--nodes=2', '--gpus-per-node=4', '--config=configs/t2i_micro.py',
                             '--workdir=/shared/runs/a', '--partition=gpu', '--time=2:00:00',
                             '--cpus-per-task=6', '--extra=--config.train.steps=5 --x=(1,2) --y=*')
  assert int(info(out, 'processes').split()[0]) == 8
  assert sbatch_options(script) == {
      'job-name': 'gigagan-a', 'nodes': '2', 'ntasks-per-node': '4', 'gpus-per-node': '4',
      'signal': 'TERM@300', 'partition': 'gpu', 'time': '2:00:00', 'cpus-per-task': '6'}
  assert 'job_hosts=$(scontrol show hostnames "$SLURM_JOB_NODELIST")' in script

  rc, tasks, log = run_slurm_job(tmp_path, script, nodes=2, ntasks=8, hosts=['gpu017', 'gpu018'],
                                 SLURM_CPUS_PER_TASK='6')
  assert rc == 0, log
  assert 'srun option --cpus-per-task=6' in log
  assert len(tasks) == 8
  for i, task in enumerate(tasks):
    assert train_argv(task['argv']) == [
        '--config=configs/t2i_micro.py', '--workdir=/shared/runs/a',
        '--coordinator_address=gpu017:62674',  # first host; port 61440 + 1234 % 4096
        '--num_processes=8', f'--process_id={i}',
        '--config.train.steps=5', '--x=(1,2)', '--y=*']  # split on spaces, not globbed
    assert task['local_ids'] == str(i % 4)  # each process drives the GPU of its local rank


def test_slurm_coordinator_is_first_hostname_and_port_override(tmp_path):
  _, script = slurm_script('--nodes=3', '--gpus-per-node=2', '--config=c.py', '--workdir=/w',
                           '--port=23456')
  rc, tasks, log = run_slurm_job(tmp_path, script, nodes=3, ntasks=6,
                                 hosts=['node-b1', 'node-a9', 'node-c3'])
  assert rc == 0, log
  assert {t['argv'][t['argv'].index('--config=c.py') + 2] for t in tasks} == {
      '--coordinator_address=node-b1:23456'}
  assert [t['argv'][-1] for t in tasks] == [f'--process_id={i}' for i in range(6)]


def test_slurm_site_binding_one_gpu_per_task(tmp_path):
  """Where SLURM gives each task a single GPU, that GPU is the task's device 0."""
  _, script = slurm_script('--nodes=1', '--gpus-per-node=2', '--config=c.py', '--workdir=/w')
  rc, tasks, log = run_slurm_job(tmp_path, script, nodes=1, ntasks=2, hosts=['n1'],
                                 CUDA_VISIBLE_DEVICES='1')
  assert rc == 0, log
  assert [t['local_ids'] for t in tasks] == ['0', '0']


def test_slurm_one_process_per_node(tmp_path):
  out, script = slurm_script('--nodes=2', '--gpus-per-node=8', '--per-node',
                             '--config=configs/t2i_micro.py', '--workdir=/shared/w')
  assert int(info(out, 'processes').split()[0]) == 2
  opts = sbatch_options(script)
  assert opts['ntasks-per-node'] == '1' and opts['gpus-per-node'] == '8'
  assert 'partition' not in opts and 'time' not in opts
  rc, tasks, log = run_slurm_job(tmp_path, script, nodes=2, ntasks=2, hosts=['a', 'b'])
  assert rc == 0, log
  assert [train_argv(t['argv'])[2:5] for t in tasks] == [
      ['--coordinator_address=a:62674', '--num_processes=2', f'--process_id={i}'] for i in (0, 1)]
  assert [t['local_ids'] for t in tasks] == ['0,1,2,3,4,5,6,7'] * 2  # all GPUs of the node


def test_slurm_job_refuses_a_task_count_that_does_not_match(tmp_path):
  _, script = slurm_script('--nodes=2', '--gpus-per-node=4', '--config=c.py', '--workdir=/w')
  rc, tasks, log = run_slurm_job(tmp_path, script, nodes=2, ntasks=3, hosts=['a', 'b'])
  assert rc != 0 and not tasks
  assert 'the job has 3 tasks; expected 2 nodes x 4' in log


def test_slurm_sh_pipes_the_generated_script_to_sbatch(tmp_path):
  bindir = tmp_path / 'bin'
  bindir.mkdir()
  write_exe(bindir / 'sbatch', f'#!/bin/bash\ncat > {tmp_path}/submitted; echo "Submitted batch job 7"\n')
  args = ['--nodes=2', '--gpus-per-node=4', '--config=c.py', '--workdir=/w', "--extra=--a='b c'"]
  _, script = slurm_script(*args)
  r = launch('slurm.sh', *args, env=dict(os.environ, PATH=f'{bindir}:{os.environ["PATH"]}'))
  assert r.returncode == 0, r.stderr
  assert 'Submitted batch job 7' in r.stdout
  assert (tmp_path / 'submitted').read_text() == script


@pytest.mark.parametrize('args,message', [
    (['--gpus-per-node=8', '--config=c', '--workdir=/w'], '--nodes is required'),
    (['--nodes=2', '--config=c', '--workdir=/w'], '--gpus-per-node is required'),
    (['--nodes=2', '--gpus-per-node=8', '--workdir=/w'], '--config is required'),
    (['--nodes=2', '--gpus-per-node=8', '--config=c'], '--workdir is required'),
    (['--nodes=0', '--gpus-per-node=8', '--config=c', '--workdir=/w'], '--nodes=0: expected a positive'),
    (['--nodes=2', '--gpus-per-node=x', '--config=c', '--workdir=/w'], '--gpus-per-node=x'),
    (['--nodes=2', '--gpus-per-node=8', '--config=c', '--workdir=/w', '--port=70000'], '--port=70000'),
])
def test_slurm_refuses_bad_or_missing_flags(args, message):
  r = launch('slurm.sh', *args, '--dry-run')
  assert r.returncode != 0 and message in r.stderr, r.stderr
  assert 'generated batch script' not in r.stdout


# ------------------------------------------------------------------ local

def test_local_dry_run_cpu_processes():
  r = launch('local.sh', '--config=configs/t2i_micro.py', '--workdir=runs/mp', '--nprocs=3',
             '--port=23456', '--extra=--config.train.steps=2', '--dry-run')
  assert r.returncode == 0, r.stderr
  cmds = commands(r.stdout)
  assert len(cmds) == 3
  for i, c in enumerate(cmds):
    assert c[:3] == ['env', 'JAX_PLATFORMS=cpu', 'python']
    assert train_argv(c) == ['--config=configs/t2i_micro.py', '--workdir=runs/mp',
                             '--coordinator_address=localhost:23456', '--num_processes=3',
                             f'--process_id={i}', '--cpu_collectives=gloo',
                             '--config.train.steps=2']


def test_local_dry_run_splits_gpus():
  r = launch('local.sh', '--config=c.py', '--workdir=w', '--nprocs=2', '--gpus=4', '--dry-run')
  assert r.returncode == 0, r.stderr
  cmds = commands(r.stdout)
  assert [c[1:3] for c in cmds] == [['CUDA_VISIBLE_DEVICES=0,1', 'JAX_LOCAL_DEVICE_IDS=0,1'],
                                    ['CUDA_VISIBLE_DEVICES=2,3', 'JAX_LOCAL_DEVICE_IDS=0,1']]
  assert all('--cpu_collectives=gloo' not in c and 'JAX_PLATFORMS=cpu' not in c for c in cmds)
  assert [train_argv(c)[2:5] for c in cmds] == [
      ['--coordinator_address=localhost:12355', '--num_processes=2', f'--process_id={i}']
      for i in (0, 1)]


def test_local_cpu_devices_per_process():
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  r = launch('local.sh', '--config=c.py', '--workdir=w', '--cpu-devices=4', '--dry-run', env=env)
  assert r.returncode == 0, r.stderr
  assert all(c[2] == 'XLA_FLAGS=--xla_force_host_platform_device_count=4'
             for c in commands(r.stdout))


@pytest.mark.parametrize('args,message', [
    (['--workdir=w'], '--config is required'),
    (['--config=c'], '--workdir is required'),
    (['--config=c', '--workdir=w', '--gpus=3'], '--gpus=3 does not split evenly over --nprocs=2'),
    (['--config=c', '--workdir=w', '--nprocs=0'], '--nprocs=0'),
    (['--config=c', '--workdir=w', '--port=0'], '--port=0'),
    (['--config', '--workdir=w'], '--config needs a value'),
])
def test_local_refuses_bad_or_missing_flags(args, message):
  r = launch('local.sh', *args, '--dry-run')
  assert r.returncode != 0 and message in r.stderr, r.stderr
  assert not commands(r.stdout)


STUB_TRAINER = """#!/bin/bash
# Stands in for python: records its argv, fails as process $FAIL_ID, else runs $SECONDS_TO_RUN s.
for a; do case $a in --process_id=*) id=${a#*=} ;; esac; done
echo "$*" > "$RECORD_DIR/process_$id"
trap 'echo "process $id: SIGTERM" >> "$RECORD_DIR/terminated"; exit 0' TERM
[ "$id" != "${FAIL_ID:-}" ] || { sleep 1; echo "process $id fails" >&2; exit 3; }
for ((s = 0; s < SECONDS_TO_RUN; s++)); do sleep 1; done
"""


def test_local_waits_for_all_processes(tmp_path):
  python = write_exe(tmp_path / 'python', STUB_TRAINER)
  env = dict(os.environ, RECORD_DIR=str(tmp_path), SECONDS_TO_RUN='1')
  r = launch('local.sh', '--config=c.py', f'--workdir={tmp_path}/w', '--nprocs=3',
             f'--python={python}', env=env)
  assert r.returncode == 0, r.stdout + r.stderr
  assert '# all 3 processes exited 0' in r.stdout
  for i in range(3):
    assert f'--process_id={i}' in (tmp_path / f'process_{i}').read_text()


def test_local_fails_fast_when_one_process_fails(tmp_path):
  python = write_exe(tmp_path / 'python', STUB_TRAINER)
  env = dict(os.environ, RECORD_DIR=str(tmp_path), SECONDS_TO_RUN='120', FAIL_ID='1')
  start = time.time()
  r = launch('local.sh', '--config=c.py', f'--workdir={tmp_path}/w', '--nprocs=3',
             f'--python={python}', env=env)
  assert r.returncode == 3
  assert time.time() - start < 30  # the others were stopped, not waited for
  assert 'process 1 exited with status 3' in r.stderr
  assert 'process 1 fails' in r.stderr  # the tail of its log
  assert sorted((tmp_path / 'terminated').read_text().split('\n')[:-1]) == [
      'process 0: SIGTERM', 'process 2: SIGTERM']


# launch/local.sh starting real training processes: tests/test_train.py
# (test_two_processes_launched_by_local_sh_match_one).
