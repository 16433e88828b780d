"""Work-arounds for tensorflow-datasets on our stack (no TensorFlow installed).

`DatasetBuilder.code_path` of a builder defined inside a package evaluates
`importlib_resources.abc.Traversable`, and tensorflow-datasets 4.9.x declares
the `importlib_resources` backport only for Python < 3.9, so on 3.11 every
`download_and_prepare` of a packaged builder dies with ModuleNotFoundError.
Builders that mix in `LocalCodePath` report their own file instead (TFDS only
uses the path to look for optional checksums / metadata files beside it).
"""
import sys

from etils import epath
import tensorflow_datasets as tfds


class LocalCodePath:
  """Mixin (put before GeneratorBasedBuilder): code_path = the builder's module file."""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(sys.modules[cls.__module__].__file__)
