"""Weight-stationary convs: under FSDP, move a layer's activations, not its kernel.

FSDP shards every conv kernel over its input channels ('conv_in' -> 'fsdp').
Left to itself, XLA all-gathers the whole kernel onto every device for the
forward pass and keeps it for the backward one. At low resolution and a few
images per device the kernel is by far the larger buffer: a 16 px layer of
t2i_paper's G holds a [3, 3, 1024, 8 * 1024] bank (288 MiB in f32) against a
[1, 16, 16, 1024] input per device (1 MiB in bf16), and the gathered banks
of G's 4-16 px layers were most of the step's batch-independent temporaries
(BENCHMARKS.md, memory planner).

The weight-stationary form keeps each device on its own kernel shard:
  1. all_to_all over 'fsdp': each device trades its samples' channel slices
     for its channel slice of every sample of its data group,
     [b, H, W, Cin] -> [b * fsdp, H, W, Cin / fsdp];
  2. the conv of that slice with the local kernel shard: a partial sum over
     this device's input channels, [b * fsdp, H, W, Cout];
  3. psum_scatter over 'fsdp': the partial sums are added and each device
     keeps its own samples again, [b, H, W, Cout].
The backward pass is the same collectives transposed; the kernel's gradient
is computed on its shard. It pays in activations what it saves in weights:
the partial sums are the data group's whole output. But they live only
while the layer runs, where a gathered kernel is kept from the forward to the
backward pass, and its full-size gradient is formed before its reduce-scatter.
So config `mesh.conv_weights='auto'` takes it per layer where that output has
fewer than twice as many pixels as the kernel has inputs per output channel,
(B / data) * H * W < 2 * k * k * Cin (t2i_micro on 8 fake devices: a factor
of 1 left per-device temporaries growing from fsdp 2 to 8, 2 keeps them flat);
'stationary' wherever the mesh allows it, 'gathered' nowhere. Dense layers
whose input side is split over 'fsdp' ('embed') take the same choice, with
tokens for pixels: D's last dense layer reads a 4 x 4 x 2048 input, a
[32768, 2048] kernel (256 MiB in f32) for 8 numbers per image.
"""
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from gigagan_jax.parallel import BATCH_AXES, param_spec, traced_mesh


def kernel_mesh(x_shape, kernel_shape, names, fan_in: int):
  """The mesh to run a layer weight-stationary on, within the traced step
  (parallel.activation_mesh); None: the usual form.

  Args:
    x_shape: the input [B, ..., Cin] (a conv's [B, H, W, Cin] after any
      upsampling, a dense layer's [B, ..., Din]).
    kernel_shape, names: the kernel [..., Cin, Cout] and its logical axes.
    fan_in: inputs per output of one kernel: k * k * Cin, or Din.
  None outside a step, with 'gathered', where the kernel's Cin is not split
  over 'fsdp' (no FSDP, or it does not divide Cin), where the batch axes do
  not divide B, and, with 'auto', where the data group's output has at least
  2 * fan_in pixels (or tokens).
  """
  mesh, policy = traced_mesh()
  if mesh is None or policy == 'gathered':
    return None
  b, pixels = x_shape[0], math.prod(x_shape[1:-1])
  data = mesh.shape['data']
  if (param_spec(names, kernel_shape, mesh)[-2] != 'fsdp' or mesh.shape['fsdp'] == 1
      or b % (data * mesh.shape['fsdp'])):
    return None
  if policy == 'auto' and (b // data) * pixels >= 2 * fan_in:
    return None
  return mesh


def _split_channels(a):
  """[b, ..., C] per device -> [b * fsdp, ..., C / fsdp]: the data group's samples, this device's channels."""
  return jax.lax.all_to_all(a, 'fsdp', a.ndim - 1, 0, tiled=True)


def _varying_alike(*arrays):
  """arrays, each cast to vary over every manual mesh axis that any of them varies over."""
  varying = lambda a: jax.typeof(a).manual_axis_type.varying
  union = frozenset().union(*map(varying, arrays))
  return tuple(jax.lax.pcast(a, tuple(union - varying(a)), to='varying')
               if union - varying(a) else a for a in arrays)


def on_kernel_shards(mesh, body, x, kernel, names, by_channel=(), by_sample=()):
  """body's partial sums over each device's input channels, added up.

  Args:
    mesh: from kernel_mesh.
    body: (x, kernel, by_channel, by_sample) -> y, all local: x [b * fsdp,
      ..., Cin / fsdp], kernel the device's shard, by_channel and by_sample
      as below, y [b * fsdp, ..., Cout / tensor] of x's rank, linear in x.
    x: [B, ..., Cin]; kernel [..., Cin, Cout] with logical axes `names`.
    by_channel: arrays [B, Cin] split like x (per-sample, per-channel scales).
    by_sample: arrays [B, ...] whole on every device of the data group.
  Returns: [B, ..., Cout], batch-sharded.
  """
  spec = param_spec(names, kernel.shape, mesh)

  def local(x, kernel, by_channel, by_sample):
    x = _split_channels(x)
    by_channel = tuple(_split_channels(a) for a in by_channel)
    by_sample = tuple(jax.lax.all_gather(a, 'fsdp', axis=0, tiled=True) for a in by_sample)
    # x varies over the batch axes and the kernel over 'fsdp' (and 'tensor'
    # where it splits Cout). Said of both, as jax does implicitly for its own
    # primitives but not through conv2d's custom gradient: the transposes then
    # sum the kernel's gradient over 'data' and x's over 'tensor'.
    x, kernel = _varying_alike(x, kernel)
    y = body(x, kernel, by_channel, by_sample)
    # f32 for the sum of fsdp partial sums, as a conv accumulates.
    return jax.lax.psum_scatter(y.astype(jnp.float32), 'fsdp', scatter_dimension=0,
                                tiled=True).astype(y.dtype)

  batch = P(BATCH_AXES)
  return jax.shard_map(
      local, mesh=mesh,
      in_specs=(batch, spec, (batch,) * len(by_channel), (batch,) * len(by_sample)),
      out_specs=P(BATCH_AXES, *([None] * (x.ndim - 2)), spec[-1]),
  )(x, kernel, tuple(by_channel), tuple(by_sample))


def apply_kernel(fn, x, kernel, names, fan_in: int):
  """fn(x, kernel) for a linear layer (a conv, a dense layer), run
  weight-stationary where kernel_mesh says so, else as it is."""
  mesh = kernel_mesh(x.shape, kernel.shape, names, fan_in)
  if mesh is None:
    return fn(x, kernel)
  return on_kernel_shards(mesh, lambda x, kernel, *_: fn(x, kernel), x, kernel, names)
