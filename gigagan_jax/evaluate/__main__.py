"""Evaluates the checkpoints of a training run.

  python -m gigagan_jax.evaluate --workdir=runs/tiny --all
  python -m gigagan_jax.evaluate --workdir=runs/tiny --step=300
  python -m gigagan_jax.evaluate --workdir=runs/t2i --all \
      --eval_config=configs/eval_coco2014_30k.py --eval_config.inception_path=...

Writes WORKDIR/eval/NAME/{metrics.json, report.html, plots, sample grids} and
TensorBoard scalars there (see gigagan_jax/evaluate/report.py). Generation
and feature networks run data-parallel over every local device. Checkpoints
already in metrics.json are skipped; --overwrite starts it afresh (and is
needed when the evaluation settings changed).

Super-resolution runs (config.task = 'sr'): `--task=sr`, with one or more
--workdir (compared side by side against bicubic), see gigagan_jax/evaluate/sr.py:
  python -m gigagan_jax.evaluate --task=sr --workdir=runs/up_tiny --workdir=runs/srcnn \
      [--step=N] [--out=DIR] [--num_images=N] [--lpips_path=lpips_vgg.npz]

On Linux it first re-executes itself with glibc.malloc.hugetlb=1 added to
GLIBC_TUNABLES, as training does (runtime.reexec_with_huge_pages): a
t2i_tiny.py:long checkpoint's evaluation took 30 instead of 35 s, with the
same figures.
"""
import json
import sys

from gigagan_jax import runtime

if __name__ == '__main__':
  runtime.reexec_with_huge_pages()  # before jax allocates anything

# pylint: disable=g-import-not-at-top
from absl import app, flags, logging
from ml_collections import config_flags

from gigagan_jax.evaluate import report
from gigagan_jax.evaluate import sr
from gigagan_jax.evaluate.evaluator import Evaluator
from gigagan_jax import storage
from gigagan_jax.inference import NoCheckpointError, checkpoint_steps
from gigagan_jax.train.writers import TensorBoardWriter

config_flags.DEFINE_config_file('eval_config', 'configs/eval_shapes.py',
                                'Evaluation config (metrics, sample count, weights).')
flags.DEFINE_enum('task', 't2i', ['t2i', 'sr'], "t2i: text-to-image metrics (FID, CLIP score, "
                  "...) of one run; sr: PSNR/SSIM/LPIPS of super-resolution runs vs bicubic.")
flags.DEFINE_multi_string('workdir', None, 'Training run directory (its checkpoints/); '
                          '--task=sr accepts several, compared in one table.')
flags.DEFINE_integer('step', None, 'Checkpoint to evaluate; default: the latest.')
flags.DEFINE_bool('all', False, 'Evaluate every checkpoint of the run.')
flags.DEFINE_bool('overwrite', False, 'Start metrics.json afresh (e.g. after changing settings).')
sr.define_flags(flags)
flags.mark_flags_as_required(['workdir'])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  runtime.quiet_gc()
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  if FLAGS.task == 'sr':
    if FLAGS.all:
      raise app.UsageError('--task=sr evaluates one checkpoint per run (--step or the latest)')
    try:
      sr.main(FLAGS)
    except (sr.IncompatibleRunsError, FileNotFoundError, ValueError) as e:
      sys.exit(f'evaluate: error: {e}')
    return
  if len(FLAGS.workdir) != 1:
    raise app.UsageError('--task=t2i evaluates one --workdir at a time')
  workdir = FLAGS.workdir[0]
  if FLAGS.all and FLAGS.step is not None:
    raise app.UsageError('give --step=N or --all, not both')
  ev = FLAGS.eval_config
  try:
    available = checkpoint_steps(workdir)
  except NoCheckpointError as e:  # no run there, or one without a complete checkpoint
    sys.exit(f'evaluate: error: {e}')
  steps = available if FLAGS.all else [FLAGS.step if FLAGS.step is not None else available[-1]]
  missing = sorted(set(steps) - set(available))
  if missing:
    raise app.UsageError(f'no checkpoint {missing} in {workdir}; there are {available}')
  out_dir = storage.run_path(workdir) / 'eval' / ev.name
  record = report.load_metrics(out_dir)
  settings = json.loads(json.dumps(ev.to_dict()))  # as metrics.json holds them (lists, not tuples)
  # metrics.json written before eval_config.num_examples existed used the run's build.
  stored = record.get('eval_config') and {'num_examples': -1, **record['eval_config']}
  if record['steps'] and stored != settings and not FLAGS.overwrite:
    # Numbers made with other settings (sample count, psi, ...) must not share a table.
    raise app.UsageError(f'{out_dir}/metrics.json was made with other eval_config settings; '
                         '--overwrite replaces it, or set --eval_config.name=OTHER')
  if FLAGS.overwrite:
    record = {'steps': {}}
  for step in steps:
    if str(step) in record['steps']:
      print(f'evaluate: step {step} already in {out_dir}/metrics.json (--overwrite to redo)')
  todo = [step for step in steps if str(step) not in record['steps']]
  if not todo:  # nothing to compute: no networks to build, no probe to load
    print(f'evaluate: nothing new; report: {out_dir / "report.html"}')
    return
  evaluator = Evaluator(workdir, ev)  # names a missing weight file or probe
  record.update(eval_config=settings, protocol=evaluator.protocol())
  events = storage.StagedDir(out_dir)  # TensorBoard appends; object stores cannot
  writer = TensorBoardWriter(events.path(''))
  for step in todo:
    metrics, images = evaluator.evaluate(step)
    record['steps'][str(step)] = metrics
    record.setdefault('sample_prompts', {})[str(step)] = report.save_samples(
        out_dir, step, images, evaluator.prompts, ev.grid_size)
    writer.write_scalars(step, {f'eval/{k}': v for k, v in metrics.items()})
    writer.flush()
    events.sync()
    report.save_metrics(out_dir, record)  # after every step: an interruption keeps the rest
  writer.close()
  events.close()
  path = report.write_html(out_dir, record, evaluator.run_config.to_dict(),
                           f'{workdir}: {ev.name} evaluation')
  print(f'evaluate: {len(record["steps"])} checkpoint(s) in {out_dir}/metrics.json\n'
        f'  report: {path}\n  tensorboard --logdir {workdir}')


if __name__ == '__main__':
  app.run(main)
