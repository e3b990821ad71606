#!/usr/bin/python3
"""Reference values from PyTorch for the engine's tests, written to test/fixtures/torch/.

The tests compare the engine with these numbers and need no Python. This script is independent of
the engine: it implements the Llama / Qwen2 forward in PyTorch the way Hugging Face's
modeling_llama / modeling_qwen2 do (embedding, RMSNorm, rotate_half RoPE, repeat_kv GQA, eager
softmax attention, SwiGLU, tied or untied head; Qwen2's q/k/v biases) and LoRA the way PEFT does
(y = W x + b + (alpha/r) * B A x), takes gradients with autograd, and steps torch.optim.AdamW after
torch.nn.utils.clip_grad_norm_. Everything is computed in float64 and stored as float32.

Run: npm run fixtures:torch   (needs Debian's python3-torch: apt-get install python3-torch)
Output, byte-identical on every run with the same torch:
  qwen2-tiny/            a small Qwen2-style model (config.json, model.safetensors) drawn from a fixed seed
  <model>-<mode>.safetensors   per case: lora:* (LoRA weights used), dropout:* (LoRA dropout masks
                               used), logits, grad:<trainable name>
  adamw.safetensors      initial params, the gradient of every step, params after every step, final moments
  manifest.json          the batch, LoRA settings, losses, AdamW settings and per-step norms
"""

import json
import math
import os
import re
import struct
import sys

import torch
import torch.nn.functional as F

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
OUT = os.path.join(ROOT, 'test', 'fixtures', 'torch')
DT = torch.float64


# ---------------------------------------------------------------------------------------------
# safetensors, by hand (8-byte header length, JSON header, little-endian data)

def read_safetensors(path):
    with open(path, 'rb') as f:
        (n,) = struct.unpack('<Q', f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == '__metadata__':
            continue
        assert info['dtype'] == 'F32', f'{name}: {info["dtype"]}'
        start, end = info['data_offsets']
        out[name] = torch.frombuffer(bytearray(data[start:end]), dtype=torch.float32).reshape(info['shape']).clone()
    return out


def write_safetensors(path, tensors):
    """tensors: list of (name, tensor); stored as F32 in the order given."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors:
        b = t.detach().to(torch.float32).contiguous().numpy().astype('<f4').tobytes()
        header[name] = {'dtype': 'F32', 'shape': list(t.shape), 'data_offsets': [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * (-len(h) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ---------------------------------------------------------------------------------------------
# The model, following modeling_llama / modeling_qwen2

class Config:
    def __init__(self, raw):
        self.vocab = raw['vocab_size']
        self.hidden = raw['hidden_size']
        self.inter = raw['intermediate_size']
        self.layers = raw['num_hidden_layers']
        self.heads = raw['num_attention_heads']
        self.kv_heads = raw.get('num_key_value_heads', self.heads)
        self.head_dim = raw.get('head_dim') or self.hidden // self.heads
        self.eps = raw['rms_norm_eps']
        self.theta = raw.get('rope_theta', 10000.0)
        self.tied = raw.get('tie_word_embeddings', False)
        self.qkv_bias = raw['model_type'] == 'qwen2' or raw.get('attention_bias', False)
        assert raw.get('rope_scaling') is None and not raw.get('mlp_bias', False)


def rms_norm(x, w, eps):  # LlamaRMSNorm / Qwen2RMSNorm
    variance = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(variance + eps))


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rotary(cfg, position_ids):  # LlamaRotaryEmbedding, default rope type: cos, sin [B, T, hd]
    inv_freq = 1.0 / (cfg.theta ** (torch.arange(0, cfg.head_dim, 2, dtype=DT) / cfg.head_dim))
    freqs = position_ids[:, :, None].to(DT) * inv_freq[None, None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def repeat_kv(x, n_rep):  # [B, KV, T, hd] → [B, KV·n_rep, T, hd]
    b, kv, t, hd = x.shape
    return x[:, :, None, :, :].expand(b, kv, n_rep, t, hd).reshape(b, kv * n_rep, t, hd)


def forward(cfg, w, lora, batch):
    """Logits [B·T, V]. w: name → tensor; lora: None or dict(rank, alpha, targets, weights, masks),
    masks: module path → inverted-dropout mask [B·T, in] (0 or 1/(1 − p)), or none without dropout."""
    ids, pos, seg = batch['input_ids'], batch['position_ids'], batch['segment_ids']
    B, T = ids.shape
    H, KV, hd = cfg.heads, cfg.kv_heads, cfg.head_dim

    def linear(x, path):
        y = x @ w[f'{path}.weight'].T
        if f'{path}.bias' in w:
            y = y + w[f'{path}.bias']
        if lora and path.rsplit('.', 1)[1] in lora['targets']:  # PEFT's lora.Linear.forward
            a, b = lora['weights'][f'{path}.lora_A.weight'], lora['weights'][f'{path}.lora_B.weight']
            mask = lora['masks'].get(path)
            dropped = x * mask.reshape(x.shape) if mask is not None else x  # lora_dropout(x)
            y = y + (dropped @ a.T) @ b.T * (lora['alpha'] / lora['rank'])
        return y

    # A token attends to earlier tokens of its own packed example (padding is its own segment).
    visible = torch.tril(torch.ones(T, T, dtype=torch.bool))[None] & (seg[:, :, None] == seg[:, None, :])
    mask = torch.zeros(B, 1, T, T, dtype=DT).masked_fill(~visible[:, None], torch.finfo(DT).min)
    cos, sin = rotary(cfg, pos)
    cos, sin = cos[:, None], sin[:, None]

    x = w['model.embed_tokens.weight'][ids]
    for l in range(cfg.layers):
        p = f'model.layers.{l}'
        h = rms_norm(x, w[f'{p}.input_layernorm.weight'], cfg.eps)
        q = linear(h, f'{p}.self_attn.q_proj').view(B, T, H, hd).transpose(1, 2)
        k = linear(h, f'{p}.self_attn.k_proj').view(B, T, KV, hd).transpose(1, 2)
        v = linear(h, f'{p}.self_attn.v_proj').view(B, T, KV, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin  # apply_rotary_pos_emb
        k = k * cos + rotate_half(k) * sin
        k, v = repeat_kv(k, H // KV), repeat_kv(v, H // KV)
        scores = q @ k.transpose(2, 3) / math.sqrt(hd) + mask
        probs = F.softmax(scores, dim=-1)
        ctx = (probs @ v).transpose(1, 2).reshape(B, T, H * hd)
        x = x + linear(ctx, f'{p}.self_attn.o_proj')
        h = rms_norm(x, w[f'{p}.post_attention_layernorm.weight'], cfg.eps)
        x = x + linear(F.silu(linear(h, f'{p}.mlp.gate_proj')) * linear(h, f'{p}.mlp.up_proj'), f'{p}.mlp.down_proj')
    x = rms_norm(x, w['model.norm.weight'], cfg.eps)
    head = w['model.embed_tokens.weight'] if cfg.tied else w['lm_head.weight']
    return (x @ head.T).reshape(B * T, cfg.vocab)


def weighted_loss(logits, batch):
    """Σ w·nll / Σ w over the batch's tokens: the engine's supervised objective."""
    nll = F.cross_entropy(logits, batch['labels'].reshape(-1), reduction='none')
    weights = batch['loss_weights'].reshape(-1)
    return (nll * weights).sum() / weights.sum()


# ---------------------------------------------------------------------------------------------
# Inputs

def make_batch(vocab, gen):
    """4 rows of 13 tokens: an example then padding, two packed examples, an example with an
    unweighted prompt and fractional weights, two packed examples then padding. Labels are the next token of the
    same example; the last token of an example (and padding) has weight 0."""
    rows, T = 4, 13
    segments = [[10], [6, 7], [13], [5, 4]]  # lengths of the examples in each row; the rest is padding
    ids, pos, seg, labels, weights = [], [], [], [], []
    for r, lengths in enumerate(segments):
        row_ids = torch.randint(3, vocab, (T,), generator=gen).tolist()
        row_pos, row_seg, row_labels, row_w = [], [], [], []
        for s, n in enumerate(lengths):
            start = len(row_pos)
            for t in range(n):
                row_pos.append(t)
                row_seg.append(s + 1)
                last = t == n - 1
                row_labels.append(0 if last else row_ids[start + t + 1])
                if last:
                    row_w.append(0.0)
                elif r == 2:
                    row_w.append(0.0 if t < 4 else (0.5 if t % 2 else 1.0))  # prompt unweighted, then mixed
                else:
                    row_w.append(1.0)
        while len(row_pos) < T:  # padding: pad id, its own segment 0, no weight
            row_ids[len(row_pos)] = 0
            row_pos.append(0)
            row_seg.append(0)
            row_labels.append(0)
            row_w.append(0.0)
        ids.append(row_ids)
        pos.append(row_pos)
        seg.append(row_seg)
        labels.append(row_labels)
        weights.append(row_w)
    return {'rows': rows, 'seqLen': T, 'input_ids': ids, 'position_ids': pos, 'segment_ids': seg, 'labels': labels, 'loss_weights': weights}


def batch_tensors(b):
    t = {k: torch.tensor(b[k]) for k in ('input_ids', 'position_ids', 'segment_ids', 'labels')}
    t['loss_weights'] = torch.tensor(b['loss_weights'], dtype=DT)
    return t


QWEN2_TINY = {
    'architectures': ['Qwen2ForCausalLM'], 'model_type': 'qwen2', 'vocab_size': 96, 'hidden_size': 64,
    'intermediate_size': 96, 'num_hidden_layers': 2, 'num_attention_heads': 4, 'num_key_value_heads': 1,
    'max_position_embeddings': 128, 'rms_norm_eps': 1e-6, 'rope_theta': 1000000.0, 'rope_scaling': None,
    'tie_word_embeddings': True, 'hidden_act': 'silu', 'torch_dtype': 'float32', 'bos_token_id': 1,
    'eos_token_id': 2, 'pad_token_id': 0,
}


def qwen2_weights(cfg, gen):
    """Random weights at HF's initializer_range scale (0.02) for matrices, like a fresh model;
    biases and norm weights drawn too, so a mix-up among them shows."""
    D, I, hd = cfg.hidden, cfg.inter, cfg.head_dim
    w = [('model.embed_tokens.weight', [cfg.vocab, D])]
    for l in range(cfg.layers):
        p = f'model.layers.{l}'
        w += [(f'{p}.input_layernorm.weight', [D]),
              (f'{p}.self_attn.q_proj.weight', [cfg.heads * hd, D]), (f'{p}.self_attn.q_proj.bias', [cfg.heads * hd]),
              (f'{p}.self_attn.k_proj.weight', [cfg.kv_heads * hd, D]), (f'{p}.self_attn.k_proj.bias', [cfg.kv_heads * hd]),
              (f'{p}.self_attn.v_proj.weight', [cfg.kv_heads * hd, D]), (f'{p}.self_attn.v_proj.bias', [cfg.kv_heads * hd]),
              (f'{p}.self_attn.o_proj.weight', [D, cfg.heads * hd]),
              (f'{p}.post_attention_layernorm.weight', [D]),
              (f'{p}.mlp.gate_proj.weight', [I, D]), (f'{p}.mlp.up_proj.weight', [I, D]), (f'{p}.mlp.down_proj.weight', [D, I])]
    w.append(('model.norm.weight', [D]))
    out = []
    for name, shape in w:
        if name.endswith('norm.weight'):
            t = 1 + 0.1 * torch.randn(shape, generator=gen)
        elif name.endswith('.bias'):
            t = 0.1 * torch.randn(shape, generator=gen)
        else:
            t = 0.02 * torch.randn(shape, generator=gen)
        out.append((name, t.to(torch.float32)))
    return out


MODULES = {'q_proj': 'self_attn', 'k_proj': 'self_attn', 'v_proj': 'self_attn', 'o_proj': 'self_attn',
           'gate_proj': 'mlp', 'up_proj': 'mlp', 'down_proj': 'mlp'}


def lora_weights(cfg, w, spec, gen):
    """A as PEFT draws it (U(±1/√in)); B non-zero (PEFT starts it at 0, which would leave A without
    a gradient), at a scale that moves the logits noticeably."""
    out = []
    for l in range(cfg.layers):
        for name in MODULES:  # model order, as the engine lists its trainable tensors
            if name not in spec['targets']:
                continue
            path = f'model.layers.{l}.{MODULES[name]}.{name}'
            out_f, in_f = w[f'{path}.weight'].shape
            bound = 1 / math.sqrt(in_f)
            out.append((f'{path}.lora_A.weight', ((torch.rand(spec['rank'], in_f, generator=gen) * 2 - 1) * bound).to(torch.float32)))
            out.append((f'{path}.lora_B.weight', (0.05 * torch.randn(out_f, spec['rank'], generator=gen)).to(torch.float32)))
    return out


def dropout_masks(cfg, spec, batch, gen):
    """PEFT's lora_dropout on each targeted module's input as fixed masks, so the engine can be fed
    the same: 0 or 1/(1 − p) per element of [B·T, in]."""
    if spec['dropout'] == 0:
        return {}
    n = batch['rows'] * batch['seqLen']
    inputs = {'o_proj': cfg.heads * cfg.head_dim, 'down_proj': cfg.inter}
    masks = {}
    for l in range(cfg.layers):
        for name in MODULES:
            if name in spec['targets']:
                keep = torch.rand(n, inputs.get(name, cfg.hidden), generator=gen) >= spec['dropout']
                masks[f'model.layers.{l}.{MODULES[name]}.{name}'] = keep.to(torch.float32) / (1 - spec['dropout'])
    return masks


# ---------------------------------------------------------------------------------------------
# Cases

def model_case(name, model_dir, mode, lora_spec, seed):
    raw = json.load(open(os.path.join(model_dir, 'config.json')))
    cfg = Config(raw)
    gen = torch.Generator().manual_seed(seed)
    base = read_safetensors(os.path.join(model_dir, 'model.safetensors'))
    batch = make_batch(cfg.vocab, gen)
    w = {k: v.to(DT) for k, v in base.items()}
    lora = None
    stored = []
    if mode == 'lora':
        lw = lora_weights(cfg, w, lora_spec, gen)
        stored += [(f'lora:{n}', t) for n, t in lw]
        masks = dropout_masks(cfg, lora_spec, batch, gen)
        stored += [(f'dropout:{path}', m) for path, m in masks.items()]
        lora = dict(lora_spec, weights={n: t.to(DT).requires_grad_() for n, t in lw}, masks={p: m.to(DT) for p, m in masks.items()})
        trainable = lora['weights']
    else:
        for t in w.values():
            t.requires_grad_()
        trainable = w
    logits = forward(cfg, w, lora, batch_tensors(batch))
    loss = weighted_loss(logits, batch_tensors(batch))
    loss.backward()
    stored.append(('logits', logits))
    stored += [(f'grad:{n}', t.grad) for n, t in trainable.items()]
    write_safetensors(os.path.join(OUT, f'{name}-{mode}.safetensors'), stored)
    case = {'model': os.path.relpath(model_dir, ROOT), 'mode': mode, 'batch': batch, 'loss': loss.item()}
    if lora_spec and mode == 'lora':
        case['lora'] = {'rank': lora_spec['rank'], 'alpha': lora_spec['alpha'], 'dropout': lora_spec['dropout'], 'targetModules': lora_spec['targets']}
    return f'{name}-{mode}', case


def adamw_case():
    """Five AdamW steps after clip_grad_norm_ (binding on four of them), with decoupled weight decay
    on the matrices only (two param groups, as HF's Trainer does), a changing learning rate, and
    some gradients small enough that eps matters."""
    gen = torch.Generator().manual_seed(5)
    settings = {'beta1': 0.9, 'beta2': 0.95, 'eps': 1e-6, 'weightDecay': 0.1, 'maxGradNorm': 1.0}
    shapes = {'matrix': [24, 40], 'vector': [40], 'cube': [4, 6, 3]}
    params = {n: torch.randn(s, generator=gen, dtype=DT).to(torch.float32).to(DT).requires_grad_() for n, s in shapes.items()}
    decay = [p for n, p in params.items() if len(shapes[n]) >= 2]
    no_decay = [p for n, p in params.items() if len(shapes[n]) < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': settings['weightDecay']}, {'params': no_decay, 'weight_decay': 0.0}],
                            lr=1.0, betas=(settings['beta1'], settings['beta2']), eps=settings['eps'])
    stored = [(f'param0:{n}', p.detach().clone()) for n, p in params.items()]  # snapshots: torch updates in place
    lrs = [1e-2, 8e-3, 2e-2, 5e-3, 1e-2]
    scales = [3.0, 0.5, 0.02, 4.0, 2.0]  # global norms ≈ 31, 5, 0.2 (no clipping), 41, 20
    norms = []
    for step, (lr, scale) in enumerate(zip(lrs, scales)):
        for n, p in params.items():
            g = torch.randn(p.shape, generator=gen, dtype=DT) * scale
            g.view(-1)[::7] *= 1e-6  # tiny entries, where √v is near eps
            p.grad = g.to(torch.float32).to(DT)  # what the engine can hold
            stored.append((f'grad{step + 1}:{n}', p.grad.clone()))  # before clipping, which the engine does itself
        norms.append(torch.nn.utils.clip_grad_norm_(list(params.values()), settings['maxGradNorm']).item())
        for group in opt.param_groups:
            group['lr'] = lr
        opt.step()
        stored += [(f'param{step + 1}:{n}', p.detach().clone()) for n, p in params.items()]
    stored += [(f'm:{n}', opt.state[p]['exp_avg']) for n, p in params.items()]
    stored += [(f'v:{n}', opt.state[p]['exp_avg_sq']) for n, p in params.items()]
    write_safetensors(os.path.join(OUT, 'adamw.safetensors'), stored)
    return {'settings': settings, 'shapes': shapes, 'lrs': lrs, 'gradNorms': norms}


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(os.path.join(OUT, 'qwen2-tiny'), exist_ok=True)
    qwen_dir = os.path.join(OUT, 'qwen2-tiny')
    with open(os.path.join(qwen_dir, 'config.json'), 'w') as f:
        json.dump(QWEN2_TINY, f, indent=2)
        f.write('\n')
    write_safetensors(os.path.join(qwen_dir, 'model.safetensors'), qwen2_weights(Config(QWEN2_TINY), torch.Generator().manual_seed(2)))

    tiny_dir = os.path.join(ROOT, 'models', 'tiny-llama')
    all_linear = {'rank': 4, 'alpha': 8, 'dropout': 0.0, 'targets': list(MODULES)}  # scale 2
    some = {'rank': 2, 'alpha': 5, 'dropout': 0.25, 'targets': ['q_proj', 'v_proj', 'o_proj', 'up_proj', 'down_proj']}  # scale 2.5
    cases = dict([
        model_case('tiny-llama', tiny_dir, 'full', None, 11),
        model_case('tiny-llama', tiny_dir, 'lora', all_linear, 12),
        model_case('qwen2-tiny', qwen_dir, 'full', None, 13),
        model_case('qwen2-tiny', qwen_dir, 'lora', some, 14),
    ])
    manifest = {'generator': 'scripts/torch-reference.py', 'torch': torch.__version__, 'cases': cases, 'adamw': adamw_case()}
    text = json.dumps(manifest, indent=1)
    text = re.sub(r'\[([^\[\]{}"]*)\]', lambda m: '[' + ' '.join(m.group(1).split()) + ']', text)  # number lists on one line
    with open(os.path.join(OUT, 'manifest.json'), 'w') as f:
        f.write(text + '\n')


if __name__ == '__main__':
    sys.exit(main())
