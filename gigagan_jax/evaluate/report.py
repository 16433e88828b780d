"""Evaluation outputs: metrics.json, TensorBoard scalars and an HTML report.

Everything lands in WORKDIR/eval/NAME/ (NAME = the eval config's name):
  metrics.json     {'steps': {step: {metric: value}}, 'protocol': ..., 'eval_config': ...};
                   later evaluations of other steps are merged in
  report.html      metric-vs-step plots, a sample grid per step with its
                   prompts, the protocol and the run's config; opens from disk
  plot_*.png, samples_<step>.png   the images the report shows
TensorBoard events go to the same folder, so `tensorboard --logdir WORKDIR`
shows training and evaluation side by side.
"""
import html
import io
import json

import matplotlib
matplotlib.use('Agg')  # files only; no display on clusters
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gigagan_jax import storage  # noqa: E402
from gigagan_jax.train.samples import grid, save_png  # noqa: E402


def load_metrics(out_dir) -> dict:
  path = storage.run_path(out_dir) / 'metrics.json'
  if not path.exists():
    return {'steps': {}}
  return json.loads(path.read_text())


def save_metrics(out_dir, record: dict):
  # A crash never leaves half a file.
  storage.write_atomic(storage.run_path(out_dir) / 'metrics.json',
                       json.dumps(record, indent=1, sort_keys=True).encode())


def save_samples(out_dir: str, step: int, images: np.ndarray, prompts, n: int):
  """The first n generated images as samples_<step>.png (4 columns) + their prompts."""
  n = min(n, len(images))
  upscale = max(1, 128 // images.shape[1])
  save_png(grid(images[:n], rows=-(-n // 4)), storage.run_path(out_dir) / f'samples_{step}.png', upscale)
  return list(prompts[:n])


def _plot(out_dir: str, name: str, steps: list, series: dict) -> str:
  """One PNG of every series in `series` ({label: values per step}) against step."""
  fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
  for label, values in series.items():
    ax.plot(steps, values, marker='o', label=label)
  ax.set_xlabel('training step')
  ax.set_title(name)
  ax.grid(alpha=0.3)
  if len(series) > 1:
    ax.legend(fontsize=7, loc='center left', bbox_to_anchor=(1.01, 0.5))
  fig.tight_layout()
  filename = 'plot_' + name.replace('/', '_') + '.png'
  buf = io.BytesIO()
  fig.savefig(buf, format='png')
  storage.write_bytes(storage.run_path(out_dir) / filename, buf.getvalue())
  plt.close(fig)
  return filename


def write_html(out_dir: str, record: dict, run_config: dict, title: str) -> str:
  """report.html from `record` (see load_metrics); returns its path."""
  steps = sorted(record['steps'], key=int)
  rows = [record['steps'][s] for s in steps]
  x = [int(s) for s in steps]
  names = sorted({k for r in rows for k in r})
  # Per-attribute accuracies share one plot with their mean; the rest one each.
  groups = {}
  for k in names:
    head = k.split('/')[0]
    label = k.split('/')[1] if '/' in k else {'attribute_chance': 'chance',
                                              'attribute_accuracy': 'mean'}.get(k, head)
    groups.setdefault('attribute_accuracy' if k == 'attribute_chance' else head, {})[label] = [
        r.get(k, np.nan) for r in rows]
  plots = [_plot(out_dir, name, x, series) for name, series in groups.items()]

  esc = html.escape
  table = ['<tr><th>step</th>' + ''.join(f'<th>{esc(k)}</th>' for k in names) + '</tr>']
  for s, r in zip(steps, rows):
    table.append(f'<tr><td>{s}</td>' + ''.join(
        f'<td>{r[k]:.4f}</td>' if k in r else '<td></td>' for k in names) + '</tr>')
  samples = []
  for s in reversed(steps):
    prompts = record.get('sample_prompts', {}).get(s, [])
    samples.append(f'<h3>step {s}</h3><img src="samples_{s}.png" alt="samples of step {s}">'
                   f'<ol class="prompts">' + ''.join(f'<li>{esc(p)}</li>' for p in prompts) +
                   '</ol>')
  page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1100px; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
img {{ image-rendering: pixelated; margin: 4px; }}
ol.prompts {{ columns: 2; font-size: 0.8em; }}
pre {{ background: #f6f6f6; padding: 1em; font-size: 0.8em; overflow: auto; }}
</style></head><body>
<h1>{esc(title)}</h1>
<h2>Metrics</h2>
<table>{''.join(table)}</table>
{''.join(f'<img src="{p}" alt="{esc(p)}">' for p in plots)}
<h2>Samples (G_ema; images in row-major order, prompts below)</h2>
{''.join(samples)}
<h2>Protocol</h2>
<pre>{esc(json.dumps(record.get('protocol', {}), indent=1, sort_keys=True))}</pre>
<h2>Evaluation config</h2>
<pre>{esc(json.dumps(record.get('eval_config', {}), indent=1, sort_keys=True))}</pre>
<h2>Run config</h2>
<pre>{esc(json.dumps(run_config, indent=1, sort_keys=True))}</pre>
</body></html>
"""
  path = storage.run_path(out_dir) / 'report.html'
  storage.write_atomic(path, page.encode())
  return str(path)
