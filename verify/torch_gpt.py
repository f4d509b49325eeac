# The GPT-2 architecture of Raschka ch. 4 in PyTorch, written independently of gpt-ddp's code, so
# that verify/ and bench/ compare against the same reference. Parameter and buffer names are those
# of the book's GPTModel: our safetensors load into it with a strict load_state_dict.
import json, math, os, re
import torch, torch.nn as nn


def _drop(p):
    # No module at all when dropout is off, so a model built without dropout runs exactly the
    # same operations (and draws no random numbers) whatever mode it is in. Dropout has no
    # parameters, so the state_dict names are the same either way.
    return nn.Dropout(p) if p > 0 else nn.Identity()


class LN(nn.Module):
    def __init__(s, d):
        super().__init__(); s.scale = nn.Parameter(torch.ones(d)); s.shift = nn.Parameter(torch.zeros(d))
    def forward(s, x):
        m = x.mean(-1, keepdim=True); v = x.var(-1, keepdim=True, unbiased=False)
        return s.scale * (x - m) / torch.sqrt(v + 1e-5) + s.shift


class Gelu(nn.Module):
    def forward(s, x): return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


class FF(nn.Module):
    def __init__(s, d):
        super().__init__(); s.layers = nn.Sequential(nn.Linear(d, 4 * d), Gelu(), nn.Linear(4 * d, d))
    def forward(s, x): return s.layers(x)


class MHA(nn.Module):
    def __init__(s, d, T, H, drop=0.0, qkv_bias=False):
        super().__init__(); s.H = H; s.hd = d // H
        s.W_query = nn.Linear(d, d, bias=qkv_bias); s.W_key = nn.Linear(d, d, bias=qkv_bias); s.W_value = nn.Linear(d, d, bias=qkv_bias)
        s.out_proj = nn.Linear(d, d)
        s.dropout = _drop(drop)
        # Persistent, as in the book: it is part of the state_dict our checkpoints carry.
        s.register_buffer('mask', torch.triu(torch.ones(T, T), diagonal=1))
    def forward(s, x):
        b, t, d = x.shape
        q = s.W_query(x).view(b, t, s.H, s.hd).transpose(1, 2)
        k = s.W_key(x).view(b, t, s.H, s.hd).transpose(1, 2)
        v = s.W_value(x).view(b, t, s.H, s.hd).transpose(1, 2)
        sc = (q @ k.transpose(2, 3)).masked_fill(s.mask.bool()[:t, :t], -torch.inf)
        w = s.dropout(torch.softmax(sc / s.hd ** 0.5, dim=-1))
        return s.out_proj((w @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(s, d, T, H, drop=0.0, qkv_bias=False):
        super().__init__(); s.att = MHA(d, T, H, drop, qkv_bias); s.ff = FF(d); s.norm1 = LN(d); s.norm2 = LN(d)
        s.drop_shortcut = _drop(drop)
    def forward(s, x):
        x = x + s.drop_shortcut(s.att(s.norm1(x)))
        return x + s.drop_shortcut(s.ff(s.norm2(x)))


class GPT(nn.Module):
    def __init__(s, V, T, d, H, L, drop=0.0, qkv_bias=False):
        super().__init__()
        s.tok_emb = nn.Embedding(V, d); s.pos_emb = nn.Embedding(T, d)
        s.drop_emb = _drop(drop)
        s.trf_blocks = nn.Sequential(*[Block(d, T, H, drop, qkv_bias) for _ in range(L)])
        s.final_norm = LN(d); s.out_head = nn.Linear(d, V, bias=False)
    def forward(s, idx):
        x = s.drop_emb(s.tok_emb(idx) + s.pos_emb(torch.arange(idx.shape[1], device=idx.device)))
        return s.out_head(s.final_norm(s.trf_blocks(x)))


def load_config(path):
    """The project's config JSON: {"model": {...}, "training": {...}}. A bare name such as
    gpt2-124m-verdict means configs/<name>.json of this repository, as the node CLI takes it."""
    if '/' not in path and not path.endswith('.json'):
        shipped = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'configs', path + '.json')
        if os.path.exists(shipped): path = shipped
    with open(path) as f:
        return json.load(f)


def blas_summary():
    """Which BLAS torch's matmuls run on: the build setting, and the library actually mapped
    (Debian builds against the generic libblas.so.3, which the alternatives system points at
    OpenBLAS, reference BLAS, ...)."""
    build = re.findall(r'\b(?:BLAS|LAPACK)_INFO=[^,\s]*', torch.__config__.show())
    libs = []
    try:
        with open('/proc/self/maps') as f:
            for line in f:
                p = line.split()[-1]
                if 'blas' in os.path.basename(p) and p not in libs: libs.append(p)
    except OSError:
        pass
    out = ', '.join(build)
    # OpenBLAS reads this at load: it picks the kernels (e.g. Haswell ones on an AVX-512 CPU).
    if os.environ.get('OPENBLAS_CORETYPE'): out += (', ' if out else '') + 'OPENBLAS_CORETYPE=' + os.environ['OPENBLAS_CORETYPE']
    if libs: out += (' ' if out else '') + '(' + ', '.join(os.path.realpath(p) for p in libs) + ')'
    return out or None


def gpt_from_config(cfg):
    """A GPT from a config dict (whole file or its "model" part) or a config file path."""
    if isinstance(cfg, str): cfg = load_config(cfg)
    m = cfg.get('model', cfg)
    return GPT(m['vocabSize'], m['contextLength'], m['embDim'], m['nHeads'], m['nLayers'],
               m.get('dropRate', 0.0), m.get('qkvBias', False))
