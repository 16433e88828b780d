"""FID Inception-v3: parity with pytorch-fid's InceptionV3([3]) on random weights."""
import numpy as np
import pytest

from gigagan_jax.evaluate import inception

import pytorch_fid.inception as pytorch_fid_inception
import torch
import torchvision


def _random_fid_network(seed=0):
  """pytorch-fid's InceptionV3([3]) with random weights, built without any download.

  Mirrors `fid_inception_v3()` (torchvision Inception3 with the FID blocks
  swapped in) minus its `load_state_dict`. BatchNorm affine parameters are
  randomised and the running statistics calibrated on a random batch, so
  every BN layer is exercised and activations keep a sane scale.
  """
  torch.manual_seed(seed)
  net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True,
                                        num_classes=1008)
  fid = pytorch_fid_inception
  net.Mixed_5b = fid.FIDInceptionA(192, pool_features=32)
  net.Mixed_5c = fid.FIDInceptionA(256, pool_features=64)
  net.Mixed_5d = fid.FIDInceptionA(288, pool_features=64)
  net.Mixed_6b = fid.FIDInceptionC(768, channels_7x7=128)
  net.Mixed_6c = fid.FIDInceptionC(768, channels_7x7=160)
  net.Mixed_6d = fid.FIDInceptionC(768, channels_7x7=160)
  net.Mixed_6e = fid.FIDInceptionC(768, channels_7x7=192)
  net.Mixed_7b = fid.FIDInceptionE_1(1280)
  net.Mixed_7c = fid.FIDInceptionE_2(2048)
  original = fid.fid_inception_v3
  fid.fid_inception_v3 = lambda: net
  try:
    wrapper = fid.InceptionV3([3])
  finally:
    fid.fid_inception_v3 = original
  with torch.no_grad():
    for m in wrapper.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0.0, 0.2)
        m.momentum = 1.0  # running stats := the calibration batch's stats
    # Calibrate at the evaluation size (the wrapper resizes to 299): statistics
    # of smaller maps would be dominated by zero padding and blow up later.
    wrapper.train()
    wrapper(torch.rand(2, 3, 64, 64))
    wrapper.eval()
  return net, wrapper


@pytest.fixture(scope='module')
def torch_net():
  return _random_fid_network()


def _rel(a, b):
  return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def test_pool_features_match_pytorch_fid(torch_net, tmp_path):
  net, wrapper = torch_net
  state = {k: v.numpy() for k, v in net.state_dict().items()}
  # The torch-free route: the weight file saved as .npz, then loaded.
  np.savez(tmp_path / 'fid_inception.npz', **state)
  params = inception.load_fid_inception(str(tmp_path / 'fid_inception.npz'))
  images = np.random.default_rng(1).random((2, 40, 56, 3), dtype=np.float32)
  with torch.no_grad():
    ref = wrapper(torch.from_numpy(images).permute(0, 3, 1, 2))[0][:, :, 0, 0].numpy()
  ours = np.asarray(inception.pool_features(params, images))
  assert ours.shape == (2, 2048) and ours.dtype == np.float32
  err = _rel(ours, ref)
  print(f'inception pool-feature relative error {err:.2e}')
  assert err <= 1e-3, err
  # The wrapper's own block naming ('blocks.i.j') converts to the same params.
  wrapped = inception.convert_state_dict(
      {k: v.numpy() for k, v in wrapper.state_dict().items()})
  np.testing.assert_array_equal(wrapped['Mixed_7c']['branch_pool']['kernel'],
                                params['Mixed_7c']['branch_pool']['kernel'])


@pytest.mark.parametrize('n_in,n_out', [(40, 299), (56, 299), (299, 299), (512, 299), (7, 3)])
def test_bilinear_resize_matches_torch(n_in, n_out):
  x = np.random.default_rng(n_in).random((1, n_in, n_in + 3, 2), dtype=np.float32)
  ref = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2),
                                        size=(n_out, n_out), mode='bilinear',
                                        align_corners=False).permute(0, 2, 3, 1).numpy()
  ours = np.asarray(inception.resize_bilinear_torch(x, (n_out, n_out)))
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)  # float32 rounding only


def test_input_norms():
  x = np.array([0.0, 128 / 255, 1.0], np.float32)
  np.testing.assert_allclose(inception.normalize_input(x, 'pytorch_fid'), [-1, 1 / 255, 1],
                             atol=1e-6)
  np.testing.assert_allclose(inception.normalize_input(x, 'clean_fid'), [-1, 0, 127 / 128],
                             atol=1e-6)
  with pytest.raises(ValueError, match='input_norm'):
    inception.normalize_input(x, 'tf')


def test_converter_names_missing_tensors(tmp_path):
  with pytest.raises(KeyError, match='missing.*Conv2d_2a_3x3'):
    inception.convert_state_dict({'Conv2d_1a_3x3.conv.weight': np.zeros((32, 3, 3, 3))})
  with pytest.raises(FileNotFoundError, match='pt_inception-2015-12-05'):
    inception.load_fid_inception(str(tmp_path / 'nope.pth'))
