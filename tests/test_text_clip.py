"""Flax CLIP text tower vs transformers on random weights, and the CLIP backbone."""
import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gigagan_jax.text import backbone as bb
from gigagan_jax.text import clip

import torch
import transformers

TOL = 1e-4
TEXT_CFG = dict(vocab_size=101, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                num_attention_heads=4, max_position_embeddings=20, bos_token_id=99,
                eos_token_id=100, pad_token_id=100)


def _tokens(batch=3, length=12, seed=0):
  rng = np.random.RandomState(seed)
  tokens = rng.randint(0, 99, (batch, length)).astype(np.int32)
  eot = np.array([length - 1, 4, 7][:batch], np.int32)
  tokens[:, 0] = 99
  tokens[np.arange(batch), eot] = 100
  return tokens, eot


def _reference(model, tokens):
  with torch.no_grad():
    out = model(torch.tensor(tokens, dtype=torch.long), output_hidden_states=True)
  return out


@pytest.fixture(scope='module')
def hf_text_model():
  torch.manual_seed(0)
  cfg = transformers.CLIPTextConfig(**TEXT_CFG)
  model = transformers.CLIPTextModel(cfg).eval()
  # Random LayerNorm affines too, so a swapped scale/bias would show.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if 'norm' in name:
        p.add_(0.3 * torch.randn_like(p))
  return model


@pytest.fixture(scope='module')
def safetensors_dir(hf_text_model, tmp_path_factory):
  d = str(tmp_path_factory.mktemp('clip_st'))
  hf_text_model.save_pretrained(d, safe_serialization=True)
  assert os.path.isfile(os.path.join(d, 'model.safetensors'))
  return d


@pytest.fixture(scope='module')
def bin_dir(hf_text_model, tmp_path_factory):
  """A pytorch_model.bin directory with Hub-style 'text_model.' keys.

  transformers 5 writes safetensors even with safe_serialization=False, so the
  pickle is written directly, as older checkpoints on the Hub hold it.
  """
  d = str(tmp_path_factory.mktemp('clip_bin'))
  hf_text_model.save_pretrained(d, safe_serialization=False)
  if os.path.exists(os.path.join(d, 'model.safetensors')):
    os.remove(os.path.join(d, 'model.safetensors'))
  state = {('text_model.' + k if not k.startswith('text_model.') else k): v
           for k, v in hf_text_model.state_dict().items()}
  torch.save(state, os.path.join(d, 'pytorch_model.bin'))
  return d


@pytest.mark.parametrize('which', ['safetensors', 'bin'])
def test_clip_text_matches_transformers(which, hf_text_model, safetensors_dir, bin_dir):
  directory = safetensors_dir if which == 'safetensors' else bin_dir
  module, params = clip.load_clip_text(directory)
  tokens, eot = _tokens()
  ours = module.apply({'params': params}, tokens, eot)
  ref = _reference(hf_text_model, tokens)
  assert len(ours['hidden_states']) == len(ref.hidden_states) == TEXT_CFG['num_hidden_layers'] + 1
  last = np.asarray(ours['last_hidden_state'])
  np.testing.assert_allclose(last, ref.last_hidden_state.numpy(), atol=TOL, rtol=0)
  np.testing.assert_allclose(np.asarray(ours['hidden_states'][-2]),
                             ref.hidden_states[-2].numpy(), atol=TOL, rtol=0)
  ref_pooled = ref.last_hidden_state.numpy()[np.arange(len(eot)), eot]
  np.testing.assert_allclose(np.asarray(ours['pooled']), ref_pooled, atol=TOL, rtol=0)


def test_clip_model_with_projection(tmp_path):
  """A full CLIPModel directory: text tower + text_projection (for the CLIP score)."""
  torch.manual_seed(1)
  vision = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, image_size=32, patch_size=16)
  cfg = transformers.CLIPConfig(text_config=transformers.CLIPTextConfig(**TEXT_CFG).to_dict(),
                                vision_config=vision.to_dict(), projection_dim=24)
  model = transformers.CLIPModel(cfg).eval()
  model.save_pretrained(str(tmp_path))
  module, params = clip.load_clip_text(str(tmp_path))
  assert module.cfg.projection_dim == 24
  tokens, eot = _tokens(seed=3)
  # The reference pools at the first eos_token_id, which _tokens puts at eot.
  with torch.no_grad():
    ref = model.get_text_features(input_ids=torch.tensor(tokens, dtype=torch.long))
  ref = getattr(ref, 'pooler_output', ref).numpy()
  ours = module.apply({'params': params}, tokens, eot)['text_embeds']
  np.testing.assert_allclose(np.asarray(ours), ref, atol=TOL, rtol=0)


def test_missing_checkpoint_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match='not found'):
    clip.load_clip_text(str(tmp_path / 'nope'))
  with pytest.raises(FileNotFoundError, match='config.json'):
    clip.load_clip_text(str(tmp_path))
  (tmp_path / 'config.json').write_text(json.dumps(TEXT_CFG))
  with pytest.raises(FileNotFoundError, match='model.safetensors'):
    clip.load_clip_text(str(tmp_path))


def _text_cfg(path, **kw):
  c = ml_collections.ConfigDict(dict(tokenizer='clip', vocab_path='', merges_path='', max_len=12,
                                     backbone='clip', backbone_path=path, backbone_layer=-2))
  c.update(kw)
  return c


def test_clip_backbone_layers(hf_text_model, safetensors_dir):
  tokens, eot = _tokens()
  ref = _reference(hf_text_model, tokens)
  for layer, want in ((-2, ref.hidden_states[-2]), (1, ref.hidden_states[1]),
                      (-1, ref.last_hidden_state), (3, ref.last_hidden_state)):
    backbone = bb.make_backbone(_text_cfg(safetensors_dir, backbone_layer=layer))
    assert backbone.dim == TEXT_CFG['hidden_size']
    feats = backbone.apply(backbone.params, jnp.asarray(tokens), jnp.asarray(eot))
    assert feats.dtype == jnp.float32 and feats.shape == (3, 12, TEXT_CFG['hidden_size'])
    np.testing.assert_allclose(np.asarray(feats), want.numpy(), atol=TOL, rtol=0,
                               err_msg=str(layer))


def test_clip_backbone_config_errors(safetensors_dir):
  with pytest.raises(ValueError, match='config.text.tokenizer'):
    bb.make_backbone(_text_cfg(safetensors_dir, tokenizer='byte'))
  with pytest.raises(ValueError, match='backbone_layer'):
    bb.make_backbone(_text_cfg(safetensors_dir, backbone_layer=4))
  with pytest.raises(ValueError, match='max_len'):
    bb.make_backbone(_text_cfg(safetensors_dir, max_len=21))
  assert bb.make_backbone(_text_cfg('', backbone='none', tokenizer='byte')) is None
