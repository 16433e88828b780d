"""Flax CLIP towers vs transformers.CLIPModel on a small random config; CLIP score."""
import json

import numpy as np
import pytest

from conftest import CLIP_EOS as EOS
from conftest import CLIP_VOCAB as VOCAB
from conftest import save_tiny_hf_clip
from gigagan_jax.evaluate import clip_score
from gigagan_jax.frozen import clip_model

import torch


@pytest.fixture(scope='module')
def hf_clip(tmp_path_factory):
  """A random small CLIPModel saved as config.json + model.safetensors."""
  directory = tmp_path_factory.mktemp('clip')
  model = save_tiny_hf_clip(directory, hidden_size=40, intermediate_size=48, num_hidden_layers=2,
                            num_attention_heads=4, image_size=30, patch_size=6, hidden_act='gelu')
  return model, str(directory)


def _rel(a, b):
  return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def _tokens(rng, batch=3, length=16):
  """Random token rows ending in EOS at different positions, padded after it."""
  tokens = rng.integers(1, VOCAB - 2, (batch, length))
  eot = np.array([5, 15, 9][:batch])
  for i, e in enumerate(eot):
    tokens[i, e], tokens[i, e + 1:] = EOS, 0
  return tokens.astype(np.int32), eot.astype(np.int32)


def test_image_and_text_embeddings_match_transformers(hf_clip):
  model, directory = hf_clip
  clip = clip_model.load_clip(directory)
  rng = np.random.default_rng(0)
  images = rng.random((2, 30, 30, 3), dtype=np.float32)
  pixels = (images - np.array(clip_model.OPENAI_IMAGE_MEAN, np.float32)) / np.array(
      clip_model.OPENAI_IMAGE_STD, np.float32)
  tokens, eot = _tokens(rng)
  with torch.no_grad():
    ref_img = model.get_image_features(pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2))
    ref_txt = model.get_text_features(input_ids=torch.from_numpy(tokens).long())
  # transformers 5 returns an output object, 4.x a tensor.
  ref_img = getattr(ref_img, 'pooler_output', ref_img).numpy()
  ref_txt = getattr(ref_txt, 'pooler_output', ref_txt).numpy()
  ours_img = np.asarray(clip_model.image_embeds(clip, images))
  ours_txt = np.asarray(clip_model.text_embeds(clip, tokens, eot))
  assert ours_img.shape == (2, 24) and ours_txt.shape == (3, 24)
  e_img, e_txt = _rel(ours_img, ref_img), _rel(ours_txt, ref_txt)
  print(f'CLIP relative error: image {e_img:.2e}, text {e_txt:.2e}')
  assert e_img <= 1e-3 and e_txt <= 1e-3, (e_img, e_txt)


def test_clip_score_is_mean_cosine_with_prefix(hf_clip):
  model, directory = hf_clip
  clip = clip_model.load_clip(directory)
  rng = np.random.default_rng(1)
  seen = []

  def tokenize(captions):  # a stand-in tokenizer: one token per character
    seen.extend(captions)
    tokens = np.zeros((len(captions), 16), np.int32)
    eot = np.zeros(len(captions), np.int32)
    for i, c in enumerate(captions):
      ids = [1 + ord(ch) % (VOCAB - 3) for ch in c][:15]
      tokens[i, :len(ids)], tokens[i, len(ids)], eot[i] = ids, EOS, len(ids)
    return {'tokens': tokens, 'eot': eot}

  # Non-square: resized and cropped to 30. Equal batch shapes keep it to one compile.
  images = rng.random((4, 40, 36, 3), dtype=np.float32)
  captions = ['a red circle', 'two blue squares', 'x', 'a green triangle at the top']
  out = clip_score.clip_score(clip, [(images[:2], captions[:2]), (images[2:], captions[2:])],
                              tokenize, prefix='P ')
  assert seen == ['P ' + c for c in captions]
  cos = []
  for i in (0, 2):
    toks = tokenize(['P ' + c for c in captions[i:i + 2]])
    img = np.asarray(clip_model.image_embeds(clip, images[i:i + 2]), np.float64)
    txt = np.asarray(clip_model.text_embeds(clip, toks['tokens'], toks['eot']), np.float64)
    cos.append(np.sum(img * txt, -1) / np.linalg.norm(img, axis=-1) / np.linalg.norm(txt, axis=-1))
  assert out['clip_score'] == pytest.approx(np.concatenate(cos).mean(), abs=1e-5)
  assert out['num_images'] == 4 and out['prefix'] == 'P ' and out['model'] == clip.cfg.name
  assert clip_score.DEFAULT_PREFIX == 'A photo depicts '


def test_missing_files_are_named(tmp_path, hf_clip):
  with pytest.raises(FileNotFoundError, match='config.json'):
    clip_model.load_clip(str(tmp_path))
  _, directory = hf_clip
  cfg = json.load(open(f'{directory}/config.json'))
  (tmp_path / 'config.json').write_text(json.dumps(cfg))
  with pytest.raises(FileNotFoundError, match='model.safetensors'):
    clip_model.load_clip(str(tmp_path))
