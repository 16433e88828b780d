"""Memory planner: does a config's train step fit a mesh of accelerators?

  python -m gigagan_jax.plan --config=configs/t2i_paper.py \
      --mesh=data:4,fsdp:16,tensor:1 --device_memory=95GiB [--batch_size=256] [--json]

Compiles the real train step (the one `python -m gigagan_jax.train` runs)
for the requested mesh on fake CPU devices, so no accelerator is needed, and
reports per device:
  - the bytes of every part of the train state (G, D, G_ema, both optimiser
    states) as sharded by the logical-axis rules, and the frozen params: text
    backbone, CLIP towers (CLIP loss) and vision-aided tower, replicated, in
    the dtype the step gets them; the vision-aided heads are part of D;
  - XLA's memory analysis of the compiled step: arguments, outputs, aliased
    (donated) buffers and temporaries (activations, gradients);
  - the peak estimate (arguments + outputs - aliased + temporaries), whether
    it fits --device_memory, and the largest contributors.
--json prints the same as one JSON object (plan()'s dict, byte figures in
bytes), for scripts and sweeps that compare plans.
XLA:CPU's buffer assignment is not the GPU's or TPU's, so temporaries are an
estimate (fusion differs); parameter and optimiser bytes are exact.
Without backbone weights (paper config) the frozen CLIP text tower is planned
from its shapes (ViT-L/14 text: 12 layers, width config.text.feature_dim);
without loss.clip_dir the CLIP of the losses is OpenAI ViT-B/32's shapes.
"""
import json
import math
import os
import re
import sys

import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

from gigagan_jax import parallel
from gigagan_jax import runtime
from gigagan_jax.config_utils import validate
from gigagan_jax.models.build import example_g_inputs
from gigagan_jax.nn.conv import auto_backend
from gigagan_jax.nn.modulated_conv import chosen_impls
from gigagan_jax.text import backbone as backbone_lib
from gigagan_jax.text import clip
from gigagan_jax.text.tokenizer import make_tokenizer
from gigagan_jax.train import state as state_lib
from gigagan_jax.train import frozen_losses
from gigagan_jax.train.step import batch_ndims, feature_cache_on, jit_train_step, make_train_step

UNITS = {'': 1, 'b': 1, 'kib': 2**10, 'mib': 2**20, 'gib': 2**30, 'tib': 2**40,
         'kb': 10**3, 'mb': 10**6, 'gb': 10**9, 'tb': 10**12}


def parse_bytes(text: str) -> int:
  """'16GiB' -> 17179869184; '80GB' -> 80e9 (binary units need the 'i')."""
  m = re.fullmatch(r'\s*([\d.]+)\s*([a-zA-Z]*)\s*', text)
  if not m or m.group(2).lower() not in UNITS:
    raise ValueError(f'--device_memory: cannot read {text!r}; write e.g. 16GiB, 80GB, 95GiB')
  return int(float(m.group(1)) * UNITS[m.group(2).lower()])


def parse_mesh(text: str) -> dict:
  """'data:2,fsdp:16,tensor:1' -> {'data': 2, 'fsdp': 16, 'tensor': 1} (missing axes = 1)."""
  out = {'data': 1, 'fsdp': 1, 'tensor': 1}
  for part in text.split(','):
    name, _, size = part.partition(':')
    if name.strip() not in out or not size.strip().isdigit() or int(size) < 1:
      raise ValueError(f'--mesh: cannot read {part!r} in {text!r}; write e.g. '
                       'data:2,fsdp:16,tensor:1')
    out[name.strip()] = int(size)
  return out


def human(n: float) -> str:
  """Bytes in the largest binary unit that keeps the number >= 1, fixed width."""
  for unit, size in (('GiB', 2**30), ('MiB', 2**20), ('KiB', 2**10)):
    if abs(n) >= size:
      return f'{n / size:8.2f} {unit}'
  return f'{n:8.0f} B  '


def _ensure_devices(n: int):
  """Re-runs this program with n fake CPU devices when fewer are visible.

  XLA reads the device count once, at start-up, from XLA_FLAGS. The step is
  compiled, never run, so LLVM's optimisation (most of XLA:CPU's compile
  time) is switched off; buffer assignment, which the figures come from,
  happens before it.
  """
  if jax.device_count() >= n:
    return
  if os.environ.get('_GIGAGAN_PLAN_CHILD'):
    raise RuntimeError(f'needed {n} devices, have {jax.device_count()}')
  flags_ = re.sub(r'--xla_force_host_platform_device_count=\d+', '',
                  os.environ.get('XLA_FLAGS', ''))
  env = dict(os.environ, JAX_PLATFORMS='cpu', _GIGAGAN_PLAN_CHILD='1',
             XLA_FLAGS=f'{flags_} --xla_force_host_platform_device_count={n} '
                       '--xla_backend_optimization_level=0'.strip())
  sys.stdout.flush()
  os.execve(sys.executable, [sys.executable, '-m', 'gigagan_jax.plan'] + sys.argv[1:], env)


def abstract_backbone(text_cfg):
  """The frozen backbone with abstract params (shapes only) when its weights are absent."""
  if text_cfg.backbone == 'none':
    return None
  if text_cfg.backbone != 'clip' or text_cfg.backbone_path:
    return backbone_lib.make_backbone(text_cfg)
  cfg = clip.CLIPTextConfig(hidden_size=text_cfg.feature_dim,
                            intermediate_size=4 * text_cfg.feature_dim,
                            num_attention_heads=text_cfg.feature_dim // 64)
  module = clip.CLIPTextTransformer(cfg)
  tokens = jnp.zeros((1, cfg.max_position_embeddings), jnp.int32)
  params = jax.eval_shape(module.init, jax.random.PRNGKey(0), tokens)['params']
  layer = int(text_cfg.backbone_layer)
  return backbone_lib.FrozenBackbone(
      'clip', module, params, cfg.hidden_size, cfg.max_position_embeddings,
      lambda m, p, t, e: backbone_lib.clip_layer_features(m, p, t, e, layer))


def _leaf_bytes(x) -> int:
  """Bytes of one device's shard of an abstract array carrying a sharding."""
  shape = x.sharding.shard_shape(x.shape) if getattr(x, 'sharding', None) is not None else x.shape
  return math.prod(shape) * x.dtype.itemsize


def plan(config, mesh_axes: dict, device_memory: int | None = None,
         compile_step: bool = True) -> dict:
  """Per-device memory of config's train step on a mesh of these axis sizes
  (see _plan), with conv_impl='auto' choosing as on an accelerator: the plan
  is for one, though it compiles on CPU."""
  with auto_backend('gpu'):
    return _plan(config, mesh_axes, device_memory, compile_step)


def _plan(config, mesh_axes: dict, device_memory: int | None, compile_step: bool) -> dict:
  """Returns {'devices', 'batch_size', 'state': {part: bytes}, 'backbone',
  'frozen': {'clip'?, 'vision_aided'?: bytes}, 'vision_aided_heads' (bytes, within D),
  'largest': [(leaf path, bytes)], 'conv_impl': {G layer: 'fused' | 'grouped'},
  'remat': {'generator', 'discriminator': policy}, 'conv_weights' (the mesh's
  policy, nn/stationary.py), and when compiled 'xla':
  {...}, 'flops' (XLA's count for one step), 'peak', 'fits' (None without
  device_memory)}; every byte and FLOP figure is per device.
  """
  n = math.prod(mesh_axes.values())
  config = config.copy_and_resolve_references()
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = (mesh_axes[a] for a in parallel.MESH_AXES)
  config = validate(config)
  batch = config.data.batch_size
  if batch % (mesh_axes['data'] * mesh_axes['fsdp']):
    raise ValueError(f'config.data.batch_size={batch} is not divisible by data x fsdp = '
                     f'{mesh_axes["data"] * mesh_axes["fsdp"]}')
  mesh = parallel.make_mesh(config.mesh, jax.devices()[:n])
  backbone = abstract_backbone(config.text)
  feature_dim = backbone.dim if backbone is not None else 0
  vocab = make_tokenizer(config.text).vocab_size if backbone is None else 0
  parts = state_lib.build(config, mesh, vocab, feature_dim)

  state = {}
  leaves = []
  for path, x in jax.tree_util.tree_leaves_with_path(parts.abstract):
    part = str(getattr(path[0], 'key', path[0]))
    b = _leaf_bytes(x)
    state[part] = state.get(part, 0) + b
    leaves.append((jax.tree_util.keystr(path), b))
  rep = parallel.replicated(mesh)
  with_rep = lambda tree: jax.tree.map(
      lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=rep), tree)
  # Frozen params, replicated: the text backbone and, when their losses are on,
  # CLIP (both towers, CLIP loss) and the vision-aided tower + fixed projection,
  # in the dtype the step gets them (frozen_losses: the network's compute dtype).
  clip_on, va_on = frozen_losses.clip_on(config.loss), frozen_losses.va_on(config.loss)
  clip_cfg = frozen_losses.clip_config(config) if clip_on or va_on else None
  # With text.feature_cache the backbone runs on the host, not in the step.
  cached = feature_cache_on(config.text)
  frozen_abs = {'backbone': {} if backbone is None or cached else with_rep(backbone.params)}
  if clip_cfg is not None:
    frozen_abs.update(with_rep(frozen_losses.abstract_frozen(config, clip_cfg)))
  va_heads = sum(b for name, b in leaves if name.startswith(f"['d']['{frozen_losses.VA_KEY}']"))
  out = {'devices': n, 'mesh': dict(mesh_axes), 'batch_size': batch, 'state': state,
         'backbone': sum(_leaf_bytes(x) for x in jax.tree.leaves(frozen_abs['backbone'])),
         'frozen': {k: sum(_leaf_bytes(x) for x in jax.tree.leaves(v))
                    for k, v in frozen_abs.items() if k != 'backbone'},
         'clip_name': clip_cfg.name if clip_cfg is not None else '',
         'vision_aided_heads': va_heads,
         'largest': sorted(leaves, key=lambda kv: -kv[1])[:8],
         'conv_impl': chosen_impls(parts.g.init, jax.random.key(0),
                                   *example_g_inputs(config, 2, feature_dim)),
         'remat': {k: config[k].get('remat', 'none') for k in ('generator', 'discriminator')},
         'conv_weights': config.mesh.get('conv_weights', 'auto')}
  if not compile_step:
    return out

  r, length = config.generator.resolution, config.text.max_len
  shapes = {'image': ((batch, r, r, 3), 'uint8'), 'tokens': ((batch, length), 'int32'),
            'eot': ((batch,), 'int32')}
  if cached:
    shapes['features'] = ((batch, length, feature_dim), 'float32')
  if clip_on:
    shapes.update(clip_tokens=((batch, clip_cfg.text.max_position_embeddings), 'int32'),
                  clip_eot=((batch,), 'int32'))
  ndims = batch_ndims(config)
  batch_abs = {k: jax.ShapeDtypeStruct(s, d, sharding=parallel.batch_sharding(mesh, ndims[k]))
               for k, (s, d) in shapes.items()}
  step = jit_train_step(make_train_step(parts.g, parts.d, parts.g_tx, parts.d_tx, config, backbone,
                                        clip_cfg), parts.shardings, mesh, ndims)
  compiled = step.lower(parts.abstract, batch_abs, frozen_abs).compile()
  xla = xla_memory(compiled)
  peak = xla['argument'] + xla['output'] - xla['alias'] + xla['temp']
  out.update(xla=xla, flops=xla_flops(compiled), peak=peak, device_memory=device_memory,
             fits=None if device_memory is None else peak <= device_memory)
  return out


def xla_memory(compiled) -> dict:
  """Bytes of one device's compiled program by kind, from XLA's memory analysis."""
  mem = compiled.memory_analysis()
  return {k: int(getattr(mem, f'{k}_size_in_bytes')) for k in
          ('argument', 'output', 'alias', 'temp', 'generated_code')}


def xla_flops(compiled) -> float:
  """FLOPs of one device's compiled program, from XLA's cost analysis (0 where it has none)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get('flops', 0.0)) if cost else 0.0


def format_plan(p: dict) -> str:
  lines = [f'mesh {p["mesh"]} = {p["devices"]} devices, global batch {p["batch_size"]} '
           f'({p["batch_size"] // (p["mesh"]["data"] * p["mesh"]["fsdp"])} per batch shard)',
           '', 'train state per device (sharded by the logical-axis rules):']
  names = {'g': 'G params', 'd': 'D params', 'ema': 'G_ema params', 'g_opt': 'G optimiser',
           'd_opt': 'D optimiser'}
  for part, b in sorted(p['state'].items(), key=lambda kv: -kv[1]):
    lines.append(f'  {names.get(part, part):<22}{human(b)}')
  lines.append(f'  {"total state":<22}{human(sum(p["state"].values()))}')
  lines.append(f'  {"frozen text backbone":<22}{human(p["backbone"])}  (replicated)')
  frozen_names = {'clip': 'frozen CLIP towers', 'vision_aided': 'frozen vision-aided'}
  uses = {'clip': 'both towers, CLIP loss', 'vision_aided': 'ViT to the last tap + projection'}
  for key, b in p.get('frozen', {}).items():
    lines.append(f'  {frozen_names[key]:<22}{human(b)}  (replicated; {p["clip_name"]}, '
                 f'{uses[key]})')
  if p.get('vision_aided_heads'):
    lines.append(f'  {"vision-aided heads":<22}{human(p["vision_aided_heads"])}  '
                 '(trainable, part of D params above)')
  if 'xla' in p:
    x = p['xla']
    lines += ['', "XLA memory analysis of the compiled step (per device):",
              f'  {"arguments":<22}{human(x["argument"])}',
              f'  {"outputs":<22}{human(x["output"])}',
              f'  {"aliased (donated)":<22}{human(-x["alias"])}',
              f'  {"temporaries":<22}{human(x["temp"])}  (activations, gradients, workspace)',
              f'  {"peak estimate":<22}{human(p["peak"])}']
    if p['fits'] is not None:
      lines[-1] += (f'  of {human(p["device_memory"]).strip()}: ' +
                    ('FITS' if p['fits'] else 'DOES NOT FIT') +
                    f' ({100 * p["peak"] / p["device_memory"]:.0f}%)')
  impls = list(p['conv_impl'].values())
  lines += ['', f'modulated convs of G: {impls.count("fused")} fused, {impls.count("grouped")} '
            f'grouped; remat: G {p["remat"]["generator"]}, D {p["remat"]["discriminator"]}; '
            f'conv weights: {p["conv_weights"]}']
  if 'flops' in p:
    lines[-1] += f'; {p["flops"] / 1e12:.3f} TFLOP per step per device (XLA)'
  lines += ['', 'largest state arrays per device:']
  lines += [f'  {human(b)}  {name}' for name, b in p['largest']]
  return '\n'.join(lines)


def define_flags():
  """Flags of the CLI, defined only when run as a program (see sample.define_flags)."""
  config_flags.DEFINE_config_file('config', None, 'Experiment config file.')
  flags.DEFINE_string('mesh', 'data:1,fsdp:8,tensor:1', 'Mesh axis sizes, e.g. data:2,fsdp:16,tensor:1.')
  flags.DEFINE_string('device_memory', '80GB', 'Memory of one accelerator, e.g. 16GiB, 80GB.')
  flags.DEFINE_integer('batch_size', None, 'Global batch; default: the config\'s data.batch_size.')
  flags.DEFINE_bool('compile', True, 'Compile the step for XLA\'s memory analysis (slow for big '
                    'models); --nocompile reports the state bytes only.')
  flags.DEFINE_bool('json', False, 'Print the plan as one JSON object (bytes per device) '
                    'instead of the table; progress goes to stderr.')
  flags.mark_flags_as_required(['config'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  runtime.quiet_gc()
  f = flags.FLAGS
  try:
    mesh_axes, device_memory = parse_mesh(f.mesh), parse_bytes(f.device_memory)
  except ValueError as e:
    raise app.UsageError(str(e))
  _ensure_devices(math.prod(mesh_axes.values()))
  config = f.config
  if f.batch_size:
    config.data.batch_size = f.batch_size
  if f.compile:
    print(f'compiling the train step for {mesh_axes} on fake CPU devices '
          '(large models take minutes) ...', file=sys.stderr if f.json else sys.stdout,
          flush=True)
  p = plan(config, mesh_axes, device_memory, compile_step=f.compile)
  print(json.dumps(p) if f.json else format_plan(p))


if __name__ == '__main__':
  define_flags()
  app.run(main)
