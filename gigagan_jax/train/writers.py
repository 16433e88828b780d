"""The run's logs: TensorBoard event files without TensorFlow, and metrics.jsonl.

clu's metric writers import TensorFlow, which this project never installs; the
`tensorboard` package alone can write event files, so this small writer uses
it with the same interface (write_scalars / write_images / flush).
"""
import io
import json
import os
import time

import numpy as np
from PIL import Image
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter


class TensorBoardWriter:
  """Writes scalars and images for step `step` to `logdir`'s event file."""

  def __init__(self, logdir: str):
    self._writer = EventFileWriter(logdir)

  def _write(self, step: int, values):
    summary = summary_pb2.Summary(value=values)
    self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

  def write_scalars(self, step: int, scalars: dict):
    self._write(step, [summary_pb2.Summary.Value(tag=k, simple_value=float(v))
                       for k, v in scalars.items()])

  def write_images(self, step: int, images: dict):
    """images: {tag: uint8 [H, W, 3]}."""
    values = []
    for tag, img in images.items():
      buf = io.BytesIO()
      Image.fromarray(np.asarray(img, np.uint8)).save(buf, format='PNG')
      values.append(summary_pb2.Summary.Value(tag=tag, image=summary_pb2.Summary.Image(
          height=img.shape[0], width=img.shape[1], colorspace=3,
          encoded_image_string=buf.getvalue())))
    self._write(step, values)

  def flush(self):
    self._writer.flush()

  def close(self):
    self._writer.close()


class NullWriter:
  """For processes other than 0: they log nothing."""

  def write_scalars(self, step, scalars):
    pass

  def write_images(self, step, images):
    pass

  def flush(self):
    pass

  def close(self):
    pass


def drop_records_after(path: str, step: int) -> int:
  """Removes the lines of a metrics.jsonl whose 'step' is past `step`; their count.

  A run resumed from its checkpoint at `step` replays the steps after it, and
  logs them again: without this, the file would hold those steps twice, from
  two different trajectories when the replay is not bitwise (other hardware).
  """
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    lines = f.readlines()
  keep = [l for l in lines if not l.strip() or json.loads(l).get('step', 0) <= step]
  if len(keep) < len(lines):
    with open(path, 'w') as f:
      f.writelines(keep)
  return len(lines) - len(keep)
