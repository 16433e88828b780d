"""The paper's headline text-to-image evaluation: FID (and CLIP score) on 30k
COCO 2014 val captions at 256 px (GigaGAN reports FID 9.09).

  python -m gigagan_jax.evaluate --workdir=runs/t2i --all \
      --eval_config=configs/eval_coco2014_30k.py \
      --eval_config.inception_path=/path/pt_inception-2015-12-05-6726825d.pth \
      --eval_config.clip_dir=/path/clip-vit-base-patch32

Needs COCO 2014 captions prepared with TFDS in the run's config.data.data_dir
(`tfds build coco_captions --data_dir=... --file_format=array_record`);
evaluate names the command when it is missing. The protocol follows the
authors: centre crop + PIL Lanczos resize of real and generated images to 256
px, clean-fid's resize to 299 for Inception-v3, CLIP ViT-B/32 with "A photo
depicts " before each caption.
"""
from configs import eval_shapes


def get_config(arg=None):
  c = eval_shapes.get_config(arg)
  c.name = 'coco2014_30k'
  c.metrics = ('fid', 'kid', 'clip_score')
  c.dataset = 'coco_captions'        # TFDS name, read from the run's data_dir
  c.split = 'val'
  c.image_key = 'image'
  c.caption_key = 'captions/text'    # first of an image's captions
  c.num_samples = 30000
  c.num_real = 30000
  c.resolution = 256
  return c
