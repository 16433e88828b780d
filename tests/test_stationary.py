"""Weight-stationary convs (nn/stationary.py): the same numbers as the usual
form on one device, kernels never gathered, and the 'auto' rule."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from gigagan_jax import parallel
from gigagan_jax.nn.equalized import EqualConv, EqualDense
from gigagan_jax.nn.modulated_conv import ModulatedConv
from gigagan_jax.nn.stationary import kernel_mesh
from gigagan_jax.parallel import activation_mesh, make_mesh
from ml_collections import ConfigDict


def _mesh(data, fsdp, tensor):
  return make_mesh(ConfigDict({'data': data, 'fsdp': fsdp, 'tensor': tensor}),
                   jax.devices()[:data * fsdp * tensor])


class _Layers(nn.Module):
  """A modulated conv (bank of 3, upsampling, demodulated), a plain conv, a
  modulated 1x1 without demodulation, a dense layer over tokens and one over
  the flattened image, as G and D stack them."""

  @nn.compact
  def __call__(self, x, w):
    x = ModulatedConv(16, bank_size=3, up=True)(x, w)
    x = EqualConv(8)(jax.nn.gelu(x))
    x = ModulatedConv(8, kernel_size=1, bank_size=2, demodulate=False)(x, w)
    x = EqualDense(16)(x.reshape(x.shape[0], -1, 8))            # [B, 64 tokens, 8]
    return EqualDense(8)(jax.nn.gelu(x).reshape(x.shape[0], -1))


def _loss_and_grads(mesh, policy, variables, x, w):
  """Loss and gradients (params and input) of _Layers, jitted on `mesh` with
  params sharded by the logical rules and the batch over ('data', 'fsdp')."""
  model = _Layers()
  shardings = parallel.logical_shardings(variables, mesh)
  params = jax.device_put(nn.meta.unbox(variables), shardings)
  batch = lambda a: jax.device_put(a, parallel.batch_sharding(mesh, a.ndim))

  def loss(params, x, w):
    with activation_mesh(mesh, policy):
      y = model.apply(params, x, w)
    return jnp.sum(jnp.sin(y) * jnp.arange(y.shape[-1]))

  fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  return fn, fn(params, batch(x), batch(w)), (params, batch(x), batch(w))


@pytest.mark.parametrize('axes', [(1, 4, 2), (2, 2, 2), (1, 8, 1)])
def test_stationary_equals_one_device(axes):
  """Loss, parameter and input gradients with every conv weight-stationary
  equal those on one device (f32, to rounding of the fsdp partial sums)."""
  x = jax.random.normal(jax.random.key(0), (8, 4, 4, 8))
  w = jax.random.normal(jax.random.key(1), (8, 32))
  variables = _Layers().init(jax.random.key(2), x, w)
  _, (ref_loss, ref_grads), _ = _loss_and_grads(_mesh(1, 1, 1), 'auto', variables, x, w)
  mesh = _mesh(*axes)
  fn, (loss, grads), args = _loss_and_grads(mesh, 'stationary', variables, x, w)
  hlo = fn.lower(*args).compile().as_text()
  assert 'all-to-all' in hlo and 'reduce-scatter' in hlo   # it did run stationary
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-4, atol=2e-5)


def test_stationary_gathers_no_kernel():
  """With 'gathered' XLA all-gathers the 9 MiB bank of a wide, low-resolution
  layer; stationary, no all-gather is that large and the step's temporaries
  shrink (the memory planner's figure on one layer)."""
  x = jnp.zeros((8, 4, 4, 256))
  w = jnp.zeros((8, 32))
  model = ModulatedConv(256, bank_size=4)
  variables = jax.eval_shape(model.init, jax.random.key(0), x, w)
  mesh = _mesh(1, 8, 1)
  shardings = parallel.logical_shardings(variables, mesh)
  params = jax.tree.map(lambda v, s: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s),
                        nn.meta.unbox(variables), shardings)
  batch = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                         sharding=parallel.batch_sharding(mesh, a.ndim))

  def compiled(policy):
    def loss(params, x, w):
      with activation_mesh(mesh, policy):
        return jnp.sum(jnp.square(model.apply(params, x, w)))
    return jax.jit(jax.grad(loss)).lower(params, batch(x), batch(w)).compile()

  bank_bytes = 4 * 3 * 3 * 256 * 256 * 4
  gathered, stationary = compiled('gathered'), compiled('stationary')
  assert 'f32[3,3,256,1024]' in gathered.as_text()        # the whole (wide) bank
  assert 'f32[3,3,256,1024]' not in stationary.as_text()
  temps = lambda c: c.memory_analysis().temp_size_in_bytes
  assert temps(stationary) < temps(gathered) - bank_bytes // 2, (temps(stationary), temps(gathered))


def test_auto_rule():
  """'auto' goes stationary where the data group's output pixels are fewer
  than twice the kernel's fan-in, and never outside a traced step, without FSDP, or
  for a kernel whose input side is not split over 'fsdp'."""
  mesh = _mesh(2, 4, 1)
  conv = lambda x_shape, mesh_axes=(None, None, 'conv_in', 'conv_out'): kernel_mesh(
      x_shape, (3, 3, x_shape[-1], 16), mesh_axes, 9 * x_shape[-1])
  assert conv((8, 4, 4, 64)) is None                        # no activation_mesh
  with activation_mesh(mesh, 'auto'):
    assert conv((8, 16, 16, 64)) is mesh                    # 4 * 256 = 1024 < 2 * 576
    assert conv((8, 32, 32, 64)) is None                    # 4 * 1024 >= 1152
    assert conv((8, 4, 4, 6)) is None                       # 4 does not divide Cin
    assert conv((12, 4, 4, 64)) is None                     # 8 does not divide B
    dense = lambda x_shape, names: kernel_mesh(x_shape, (x_shape[-1], 8), names, x_shape[-1])
    assert dense((8, 512), ('embed', 'mlp')) is mesh        # 4 tokens < 2 * 512
    assert dense((8, 256, 512), ('embed', 'mlp')) is None   # 1024 tokens >= 1024
    assert dense((8, 512), ('mlp', 'embed')) is None        # input side over 'tensor'
  with activation_mesh(mesh, 'stationary'):
    assert conv((8, 16, 16, 64)) is mesh
  with activation_mesh(mesh, 'gathered'):
    assert conv((8, 4, 4, 64)) is None
  with activation_mesh(_mesh(8, 1, 1), 'stationary'):
    assert conv((8, 4, 4, 64)) is None                      # no FSDP: nothing to gather
