"""Frozen feature networks: pretrained, never trained here, shared by losses and metrics.

Training (train/) and evaluation (evaluate/) both import from this package, so
neither reaches into the other. Every network here is a pure Flax module whose
parameters are passed as a separate argument; training code wraps them in
`jax.lax.stop_gradient` (or differentiates w.r.t. other arguments only), so
gradients reach the images, never these weights.

In this package:
  clip_model.py     CLIP image + text towers (ViT) and the converter from a
                    Hugging Face `CLIPModel` directory. Used by the CLIP score
                    (evaluate/clip_score.py), the CLIP contrastive loss and the
                    vision-aided discriminator.
  lpips.py          LPIPS-VGG (VGG16 trunk + linear heads) and its converter;
                    the upsampler's perceptual loss (train/sr_step.py) and the
                    SR metric (evaluate/sr.py).
  clip_preprocess.py  generated images in [-1, 1] -> CLIP pixels (area resize,
                    CLIP mean/std), the losses' preprocessing.
  clip_loss.py      the CLIP contrastive loss on G (paper Eq. 9).
  vision_aided.py   the vision-aided discriminator: frozen CLIP ViT features +
                    fixed random projection (frozen) and text-modulated conv
                    heads (trainable), logit maps like the MS-I/O D's.
  validate.py       validate_frozen(config): the CLIP weights and fields these
                    losses need, with errors that name the field (it lives in
                    config_utils, as validation imports no model code).
  sizes.py          frozen_param_bytes(config): per-device bytes of the frozen
                    params, from shapes only (memory planner).

Frozen networks that live elsewhere, and why:
  text/clip.py, text/minilm.py   the frozen text backbones of G and D (CLIP
                    ViT-L/14 text tower, penultimate layer; MiniLM). They stay
                    next to the tokenizers they are paired with (text/backbone.py
                    builds both from one config block). frozen/clip_model.py
                    reuses text/clip.py's text transformer for its text tower.
  evaluate/inception.py   Inception-v3 for FID/KID, evaluation only.
  evaluate/probe.py       the attribute probe of captioned_shapes (trained once by
                    evaluate/train_probe.py, frozen afterwards), evaluation only.
"""
