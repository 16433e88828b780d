r"""A textbook conditional DCGAN on captioned_shapes: the yardstick for the tiny GigaGAN.

  python bench/dcgan_shapes.py --steps=2000 --conditioning=labels
  python bench/dcgan_shapes.py --steps=2000 --conditioning=text_encoder

How far can a plain GAN get on the README's budget (a few CPU minutes, the
first 4,096 training images at 32 px, batch 16)? It prints the training
time and the attribute accuracy of its samples for the first 1,000 captions
of the *training* split, the protocol of ABLATION.md's runs
(`evaluate --eval_config.split=train`; the probe's test split is not used).

The GAN: G = dense to 4x4x256, three nearest-upsample + 3x3 conv + BatchNorm
+ ReLU stages (128, 64, 32 channels), tanh RGB; D = three 4x4 stride-2 convs
(32, 64, 128), a 256-unit dense layer, an unconditional logit plus a
projection term (the inner product of the features with an embedding of the
condition); the non-saturating logistic loss, D also scoring real images
with a mismatched condition (rolled batch) as fake; Adam (beta1 0.5).
The condition is, by --conditioning:

  labels        the attributes the caption names (`parse_caption`), one-hot
                each with a "not named" slot: an oracle text encoder.
  minilm        the frozen MiniLM sentence embedding (mean-pooled, normalised).
  text_encoder  GigaGAN's global text route: a learned T (the tiny config's:
                1 layer, 2 heads, 128 wide) over the frozen MiniLM token
                features, its output at the end token, in G and in D each.
"""
import os
import sys
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import eval_shapes, t2i_tiny  # noqa: E402
from gigagan_jax.data import captioned_shapes as cs  # noqa: E402
from gigagan_jax.evaluate import probe as probe_lib  # noqa: E402
from gigagan_jax.evaluate.evaluator import load_probe  # noqa: E402
from gigagan_jax.text import backbone as backbone_lib  # noqa: E402
from gigagan_jax.text import encoder as encoder_lib  # noqa: E402
from gigagan_jax.text import minilm, tokenizer  # noqa: E402
from gigagan_jax.train import samples as samples_lib  # noqa: E402

flags.DEFINE_integer('steps', 2000, 'training steps')
flags.DEFINE_float('lr', 1e-3, 'Adam learning rate of G and D')
flags.DEFINE_integer('batch_size', 16, 'images per step')
flags.DEFINE_integer('seed', 0, 'seed of initialisation, batches and latents')
flags.DEFINE_integer('num_examples', 4096, 'training images: the first N of the split')
flags.DEFINE_enum('conditioning', 'labels', ['labels', 'minilm', 'text_encoder'],
                  'what G and D are conditioned on (module docstring)')
flags.DEFINE_string('grid', '', 'if set, a PNG of the first 64 evaluation samples')
FLAGS = flags.FLAGS

Z_DIM, RES, EVAL_CAPTIONS = 64, 32, 1000
TINY = t2i_tiny.get_config()  # its text backbone, tokenizer and T
# T without the whitened sentence embedding, whose statistics the training
# loop fits and this bench does not (the route its README figures measured).
TINY.generator.text_encoder.sentence_whitening = False


def label_condition(captions) -> np.ndarray:
  """One-hot per attribute the caption names, plus a "not named" slot: float32 [N, 41]."""
  targets = probe_lib.prompt_targets(captions)
  parts = [np.eye(n + 1, dtype=np.float32)[np.where(targets[k] >= 0, targets[k], n)]
           for k, n in probe_lib.ATTRIBUTES.items()]
  return np.concatenate(parts, -1)


def minilm_condition(captions, sentence: bool):
  """MiniLM features: sentence embeddings [N, 384], or (token features [N, L, 384], eot [N])."""
  backbone = backbone_lib.make_backbone(TINY.text)
  tokens = tokenizer.make_tokenizer(TINY.text)(captions)

  @jax.jit
  def features(t, eot):
    f = backbone.apply(backbone.params, t, eot)
    return minilm.mean_pool_normalize(f, tokenizer.token_mask(eot, t.shape[1])) if sentence else f
  out = np.concatenate([np.asarray(features(tokens['tokens'][i:i + 256], tokens['eot'][i:i + 256]))
                        for i in range(0, len(captions), 256)])
  return out if sentence else (out, tokens['eot'])


class Condition(nn.Module):
  """The condition as one vector per sample; T's end-token output for token features."""

  @nn.compact
  def __call__(self, c):
    if not isinstance(c, tuple):
      return c
    features, eot = c
    # The tiny config's T; vocab_size 0: it reads backbone features, not token ids.
    encoder = encoder_lib.make_text_encoder(TINY.generator.text_encoder, TINY.text, vocab_size=0)
    return encoder(jnp.zeros(features.shape[:2], jnp.int32), eot, features)[1]


class Generator(nn.Module):
  @nn.compact
  def __call__(self, z, c):
    """z [B, Z_DIM], condition -> images [B, 32, 32, 3] in [-1, 1]."""
    h = jnp.concatenate([z, nn.Dense(128)(Condition()(c))], -1)
    h = nn.Dense(4 * 4 * 256)(h).reshape(-1, 4, 4, 256)
    h = nn.relu(nn.BatchNorm(use_running_average=False)(h))
    for width in (128, 64, 32):
      b, s, _, ch = h.shape
      h = jax.image.resize(h, (b, 2 * s, 2 * s, ch), 'nearest')
      h = nn.relu(nn.BatchNorm(use_running_average=False)(nn.Conv(width, (3, 3))(h)))
    return jnp.tanh(nn.Conv(3, (3, 3))(h))


class Discriminator(nn.Module):
  @nn.compact
  def __call__(self, x, c):
    """images [B, 32, 32, 3], condition -> logits [B]."""
    h = x
    for width in (32, 64, 128):
      h = nn.leaky_relu(nn.Conv(width, (4, 4), strides=2)(h), 0.2)
    h = nn.leaky_relu(nn.Dense(256)(h.reshape(h.shape[0], -1)), 0.2)
    return nn.Dense(1)(h)[:, 0] + jnp.sum(nn.Dense(256)(Condition()(c)) * h, -1)


def main(argv):
  del argv
  t0 = time.time()
  examples = [cs.generate_example('train', i, RES) for i in range(FLAGS.num_examples)]
  images = np.stack([e['image'] for e in examples]).astype(np.float32) / 127.5 - 1
  captions = [e['caption'] for e in examples]
  conds = {'labels': lambda: label_condition(captions),
           'minilm': lambda: minilm_condition(captions, sentence=True),
           'text_encoder': lambda: minilm_condition(captions, sentence=False)}[FLAGS.conditioning]()
  take = lambda idx: jax.tree.map(lambda a: jnp.asarray(a[idx]), conds)
  print(f'data and conditions: {time.time() - t0:.1f} s', flush=True)

  g, d = Generator(), Discriminator()
  key = jax.random.PRNGKey(FLAGS.seed)
  g_vars = g.init(key, jnp.zeros((2, Z_DIM)), take(np.arange(2)))
  g_params, d_params = g_vars['params'], d.init(key, jnp.zeros((2, RES, RES, 3)),
                                                take(np.arange(2)))['params']
  opt = optax.adam(FLAGS.lr, b1=0.5, b2=0.999)
  g_opt, d_opt = opt.init(g_params), opt.init(d_params)

  def generate(params, z, c):
    # BatchNorm in training mode (batch statistics), at sampling time too.
    return g.apply({'params': params, **{k: v for k, v in g_vars.items() if k != 'params'}},
                   z, c, mutable=['batch_stats'])[0]

  @jax.jit
  def step(g_params, d_params, g_opt, d_opt, x, c, key):
    z = jax.random.normal(key, (x.shape[0], Z_DIM))
    mismatched = jax.tree.map(lambda a: jnp.roll(a, 1, 0), c)
    fake = generate(g_params, z, c)

    def d_loss(p):
      score = lambda img, cond: d.apply({'params': p}, img, cond)
      return (jnp.mean(nn.softplus(-score(x, c))) + jnp.mean(nn.softplus(score(fake, c)))
              + jnp.mean(nn.softplus(score(x, mismatched))))
    d_val, grads = jax.value_and_grad(d_loss)(d_params)
    updates, d_opt = opt.update(grads, d_opt, d_params)
    d_params = optax.apply_updates(d_params, updates)

    def g_loss(p):
      return jnp.mean(nn.softplus(-d.apply({'params': d_params}, generate(p, z, c), c)))
    g_val, grads = jax.value_and_grad(g_loss)(g_params)
    updates, g_opt = opt.update(grads, g_opt, g_params)
    return optax.apply_updates(g_params, updates), d_params, g_opt, d_opt, d_val, g_val

  rng = np.random.default_rng(FLAGS.seed)
  t0 = time.time()
  for i in range(FLAGS.steps):
    idx = rng.integers(0, FLAGS.num_examples, FLAGS.batch_size)
    key, sub = jax.random.split(key)
    g_params, d_params, g_opt, d_opt, d_val, g_val = step(
        g_params, d_params, g_opt, d_opt, jnp.asarray(images[idx]), take(idx), sub)
    if i % 250 == 0 or i == FLAGS.steps - 1:
      print(f'step {i}: D loss {float(d_val):.3f}, G loss {float(g_val):.3f}, '
            f'{time.time() - t0:.1f} s', flush=True)
  train_s = time.time() - t0

  eval_idx = np.arange(EVAL_CAPTIONS)
  samples = np.concatenate([
      np.asarray(generate(g_params, jax.random.normal(jax.random.PRNGKey(10_000 + i), (100, Z_DIM)),
                          take(eval_idx[i:i + 100])))
      for i in range(0, EVAL_CAPTIONS, 100)])
  samples = samples_lib.to_uint8(samples)
  acc = load_probe(eval_shapes.get_config(), None).accuracy(samples, captions[:EVAL_CAPTIONS])
  per = ', '.join(f'{k} {acc[k]:.3f}' for k in probe_lib.ATTRIBUTES)
  print(f'conditioning={FLAGS.conditioning} steps={FLAGS.steps} lr={FLAGS.lr} '
        f'batch={FLAGS.batch_size} seed={FLAGS.seed}: train {train_s:.0f} s '
        f'({1000 * train_s / FLAGS.steps:.0f} ms/step); attribute accuracy {acc["mean"]:.3f} '
        f'(chance {acc["chance"]:.3f}; {per})')
  if FLAGS.grid:
    samples_lib.save_png(samples_lib.grid(samples[:64], rows=8), FLAGS.grid, upscale=2)
    print(f'samples: {FLAGS.grid}')


if __name__ == '__main__':
  app.run(main)
