"""LPIPS-VGG: parity with the `lpips` package (random VGG16 trunk, shipped heads), loss, files."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gigagan_jax.frozen import lpips

import lpips as lpips_ref  # the PyPI package (requirements-test.txt)
import torch

# lpips asks torchvision for `vgg16(pretrained=False)`, a deprecated spelling of weights=None.
pytestmark = pytest.mark.filterwarnings('ignore:.*deprecated since 0.13:UserWarning')

SHIPPED_LIN = os.path.join(os.path.dirname(lpips_ref.__file__), 'weights', 'v0.1', 'vgg.pth')


@pytest.fixture(scope='module')
def reference():
  """lpips.LPIPS-VGG with a random trunk (nothing downloaded) and the shipped v0.1 heads.

  pnet_rand=True builds torchvision's VGG16 with weights=None; pretrained=True
  only loads the heads from the package's own file. The biases, zero after
  torchvision's init, are randomised so the converter's bias path is tested.
  """
  torch.manual_seed(0)
  net = lpips_ref.LPIPS(net='vgg', pretrained=True, pnet_rand=True, verbose=False).eval()
  with torch.no_grad():
    for name, p in net.net.named_parameters():
      if name.endswith('bias'):
        p.normal_(0.0, 0.1)
  return net


@pytest.fixture(scope='module')
def files(reference, tmp_path_factory):
  """(lin .pth, VGG16 .pth in torchvision's `features.<i>` layout) of the reference network."""
  root = tmp_path_factory.mktemp('lpips')
  # lpips keeps torchvision's `features` indices inside its slices: slice2.5.weight
  # is features.5.weight of the VGG16 it was cut from.
  vgg = {'features.' + k.split('.', 1)[1]: v.clone() for k, v in reference.net.state_dict().items()}
  assert len(vgg) == 26 and 'features.28.bias' in vgg
  torch.save(vgg, root / 'vgg16.pth')
  return SHIPPED_LIN, str(root / 'vgg16.pth')


@pytest.fixture(scope='module')
def params(files):
  return lpips.load_lpips_params(*files)


def _images(seed, shape=(2, 64, 64, 3)):
  rng = np.random.default_rng(seed)
  x = rng.uniform(-1, 1, shape).astype(np.float32)
  # Pair 0: unrelated images; pair 1: a lightly perturbed copy (small distance).
  y = rng.uniform(-1, 1, shape).astype(np.float32)
  y[1] = np.clip(x[1] + rng.normal(0, 0.1, shape[1:]), -1, 1)
  return x, y


def test_distance_matches_reference(reference, params):
  x, y = _images(0)
  with torch.no_grad():
    nchw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2)
    ref = reference(nchw(x), nchw(y)).reshape(-1).numpy().astype(np.float64)
  ours = np.asarray(lpips.lpips_distance(params, x, y))
  assert ours.shape == (2,) and ours.dtype == np.float32
  err = np.abs(ours - ref)
  print(f'LPIPS ours {ours} reference {ref} abs error {err} rel {err / ref}')
  assert np.all(err <= 1e-4), err
  assert ref[1] < ref[0]  # the perturbed copy is closer: the test is not degenerate


def test_self_distance_is_zero(params):
  x, _ = _images(0)  # the parity test's shapes: the compiled program is reused
  np.testing.assert_allclose(np.asarray(lpips.lpips_distance(params, x, x)), 0.0, atol=1e-7)


def test_loss_gradient(params):
  rng = np.random.default_rng(1)
  x, y = (rng.uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32) for _ in range(2))
  value_and_grad = jax.jit(jax.value_and_grad(lpips.lpips_loss, argnums=1))
  loss, grad = value_and_grad(params, x, y)
  assert loss.shape == () and float(loss) > 0
  grad = np.asarray(grad)
  assert grad.shape == x.shape and np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
  # A small step along -grad lowers the loss: it is the gradient of this loss.
  step_loss, _ = value_and_grad(params, x - 1e-2 * grad / np.abs(grad).max(), y)
  assert float(step_loss) < float(loss)


def test_unit_normalize_gradient_finite_at_zero():
  f = jnp.zeros((1, 2, 2, 4)).at[0, 0, 0].set(jnp.array([3.0, 0, 4.0, 0]))
  # Pixels whose channels are all zero (common after ReLU) must not give NaN gradients.
  out = jax.jit(lpips._unit_normalize)(f)
  np.testing.assert_allclose(np.asarray(out[0, 0, 0]), [0.6, 0, 0.8, 0], atol=1e-6)
  np.testing.assert_array_equal(np.asarray(out[0, 1]), 0.0)
  g = jax.jit(jax.grad(lambda f: jnp.sum(lpips._unit_normalize(f) * jnp.arange(4.0))))(f)
  assert np.all(np.isfinite(np.asarray(g)))


def test_npz_routes_need_no_torch(files, params, tmp_path, monkeypatch):
  lin_pth, vgg_pth = files
  lpips.save_params_npz(params, str(tmp_path / 'lpips_vgg.npz'))
  # Raw tensors as .npz, the other torch-free route.
  for src, dst in ((lin_pth, 'lin.npz'), (vgg_pth, 'vgg.npz')):
    np.savez(tmp_path / dst, **{k: v.numpy() for k, v in torch.load(src, map_location='cpu').items()})
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` now raises ImportError
  back = lpips.load_params_npz(str(tmp_path / 'lpips_vgg.npz'))
  raw = lpips.load_lpips_params(str(tmp_path / 'lin.npz'), str(tmp_path / 'vgg.npz'))
  for tree in (back, raw):
    jax.tree.map(np.testing.assert_array_equal, tree, params)
  with pytest.raises(ImportError, match='torch'):
    lpips.load_lpips_params(lin_pth, vgg_pth)


def test_converter_rejects_wrong_files(files):
  lin = {k: v.numpy() for k, v in torch.load(files[0], map_location='cpu').items()}
  vgg = {k: v.numpy() for k, v in torch.load(files[1], map_location='cpu').items()}
  with pytest.raises(KeyError, match='lin4'):
    lpips.convert_state_dict({**vgg, **{k: v for k, v in lin.items() if 'lin4' not in k}})
  with pytest.raises(KeyError, match='unexpected'):
    lpips.convert_state_dict({**vgg, **lin, 'features.30.weight': lin['lin0.model.1.weight']})
  with pytest.raises(ValueError, match='non-negative'):
    lpips.convert_state_dict({**vgg, **lin, 'lin2.model.1.weight': -lin['lin2.model.1.weight']})
  with pytest.raises(ValueError, match='shape'):
    lpips.convert_state_dict({**vgg, **lin, 'features.0.bias': np.zeros(3, np.float32)})
  with pytest.raises(FileNotFoundError, match='lpips'):
    lpips.load_lpips_params('/nonexistent/vgg.pth', files[1])
