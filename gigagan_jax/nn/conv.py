"""Stride-1 'SAME' 2-D convolution, NHWC x HWIO -> NHWC, with a CPU-friendly gradient.

XLA:CPU computes a conv's weight gradient as a conv over the batch axis, with
transposes around it, several times slower than the forward conv. On CPU
`conv2d` takes that gradient as k*k matrix products instead, one per kernel
tap: dK[i, j] = x_shifted(i, j)^T @ dy over all pixels. The input gradient is
the usual one, the conv of dy with the flipped kernel. On other backends it
is XLA's own conv and gradient.

The backend is the one the program is built for: the one running, unless
`auto_backend` says otherwise (the memory planner compiles on CPU for an
accelerator and must see the accelerator's program).
"""
import contextlib
import contextvars

import jax
import jax.numpy as jnp

_DN = ('NHWC', 'HWIO', 'NHWC')
_TARGET = contextvars.ContextVar('target_backend', default=None)


@contextlib.contextmanager
def auto_backend(backend: str):
  """Within: layers take the form they would on `backend` ('cpu', 'gpu', 'tpu')."""
  token = _TARGET.set(backend)
  try:
    yield
  finally:
    _TARGET.reset(token)


def target_backend() -> str:
  """The backend being built for: `auto_backend`'s, else jax.default_backend()."""
  return _TARGET.get() or jax.default_backend()


def _lax_conv(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME', dimension_numbers=_DN)


@jax.custom_vjp
def _tap_conv(x, kernel):
  return _lax_conv(x, kernel)


def _tap_conv_fwd(x, kernel):
  return _lax_conv(x, kernel), (x, kernel)


def _tap_conv_bwd(res, dy):
  x, kernel = res
  k, _, cin, cout = kernel.shape
  p, (_, h, w, _) = k // 2, x.shape
  dx = _lax_conv(dy, jnp.flip(kernel, (0, 1)).swapaxes(2, 3))
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  dy = dy.reshape(-1, cout)
  taps = [jnp.dot(xp[:, i:i + h, j:j + w, :].reshape(-1, cin).T, dy,
                  preferred_element_type=jnp.float32)
          for i in range(k) for j in range(k)]
  return dx, jnp.stack(taps).reshape(kernel.shape).astype(kernel.dtype)


_tap_conv.defvjp(_tap_conv_fwd, _tap_conv_bwd)


def conv2d(x, kernel):
  """x [B, H, W, Cin], kernel [k, k, Cin, Cout] -> [B, H, W, Cout]."""
  if target_backend() == 'cpu' and kernel.shape[0] % 2 == 1 == kernel.shape[1] % 2:
    return _tap_conv(x, kernel)  # odd k: SAME pads p = k // 2 on both sides
  return _lax_conv(x, kernel)
