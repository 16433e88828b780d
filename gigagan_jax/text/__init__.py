"""Text side of GigaGAN: tokenizers, frozen backbones (CLIP, MiniLM), learned encoder T.

Typical use (see configs/base.py `text_config`):

  tokenizer = make_tokenizer(config.text)          # captions -> tokens, eot
  backbone = make_backbone(config.text)            # FrozenBackbone or None
  encoder = make_text_encoder(config.generator.text_encoder, config.text, backbone)
  feats = backbone.apply(backbone.params, tokens, eot) if backbone else None
  t_local, t_global, local_mask = encoder.apply(variables, tokens, eot, feats)
"""
from gigagan_jax.text.backbone import FrozenBackbone, make_backbone
from gigagan_jax.text.encoder import TextEncoder, make_text_encoder
from gigagan_jax.text.tokenizer import make_tokenizer, token_mask

__all__ = ['FrozenBackbone', 'TextEncoder', 'make_backbone', 'make_text_encoder',
           'make_tokenizer', 'token_mask']
