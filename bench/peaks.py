"""Peak dense bf16 matmul throughput per chip, for model-FLOPs utilisation (MFU).

  MFU = (FLOPs of one step on one device, from XLA's cost analysis)
        / (step time) / PEAK_TFLOPS[kind] * 1e-12

Vendor datasheet figures without structured sparsity (the 2x "with sparsity"
numbers are not reachable by dense convolutions and attention). CPUs have no
entry: their MFU is reported as null.
"""

# kind -> peak bf16 dense TFLOPS of one chip (one GPU; one TPU chip).
PEAK_TFLOPS = {
    'h100': 989.0,       # H100 SXM5
    'h100_pcie': 756.0,  # H100 PCIe
    'h200': 989.0,       # H200 SXM (same compute as H100 SXM, more/faster HBM)
    'a100': 312.0,       # A100 (SXM and PCIe)
    'tpu_v4': 275.0,
    'tpu_v5e': 197.0,
    'tpu_v5p': 459.0,
    'cpu': None,
}

# Substrings of jax's device_kind, checked in order (the first match wins).
_PATTERNS = (
    ('h100 pcie', 'h100_pcie'),
    ('h100', 'h100'),
    ('h200', 'h200'),
    ('a100', 'a100'),
    ('tpu v4', 'tpu_v4'),
    ('tpu v5 lite', 'tpu_v5e'),
    ('tpu v5e', 'tpu_v5e'),
    ('tpu v5p', 'tpu_v5p'),
    ('tpu v5', 'tpu_v5p'),   # jax reports v5p chips as "TPU v5"
    ('cpu', 'cpu'),
)


def detect(device_kind: str, platform: str = '') -> str | None:
  """Key of PEAK_TFLOPS for a jax `device.device_kind` (e.g. 'NVIDIA H100 80GB HBM3');
  None when unknown. `platform` 'cpu' always maps to 'cpu'."""
  if platform == 'cpu':
    return 'cpu'
  text = device_kind.lower()
  for pattern, kind in _PATTERNS:
    if pattern in text:
      return kind
  return None


def peak_flops(kind: str | None) -> float | None:
  """Peak FLOP/s of one chip of `kind` (a PEAK_TFLOPS key), None for CPUs and unknown kinds."""
  tflops = PEAK_TFLOPS.get(kind) if kind else None
  return None if tflops is None else tflops * 1e12


def mfu(flops_per_device: float | None, seconds: float, peak_tflops: float | None) -> float | None:
  """Fraction of a chip's peak (`peak_tflops`, e.g. PEAK_TFLOPS[kind]) reached by
  `flops_per_device` FLOPs in `seconds`; None without a peak or FLOPs."""
  if not peak_tflops or not flops_per_device or seconds <= 0:
    return None
  return flops_per_device / seconds / (peak_tflops * 1e12)
