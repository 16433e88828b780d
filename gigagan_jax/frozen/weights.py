"""Reading the weight files of the frozen networks: .npz with numpy, PyTorch pickles with torch.

torch is needed only to unpickle a .pth file, never to run a network; each
network's converter writes an .npz once so that later runs need no torch.
"""
import os

import numpy as np


def read_tensors(path: str, missing: str, convert_hint: str) -> dict[str, np.ndarray]:
  """{name: array} of an .npz or a PyTorch state-dict file.

  missing: the FileNotFoundError's message when `path` is not a file.
  convert_hint: how to make an .npz, for the error when torch is not installed.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(missing)
  if path.endswith('.npz'):
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f'{path} is a PyTorch file and reading it needs the `torch` package, '
                      f'which is not installed. {convert_hint}') from e
  state = torch.load(path, map_location='cpu', weights_only=True)
  return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
          for k, v in state.items()}
