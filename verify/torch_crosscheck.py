# verify:torch, part 2: an independent PyTorch model of the same architecture loads our
# model.safetensors with a strict load_state_dict, then takes the same 3 AdamW steps on the same
# batch (dropout off). Prints the loss of each side, the gradient and weight differences, and
# exits non-zero if they disagree beyond float32 noise. Needs PyTorch (Debian: python3-torch).
import json, struct, math, sys
import numpy as np, torch, torch.nn as nn

def read_st(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8+n]); data = b[8+n:]
    out = {}
    for k, v in h.items():
        if k == '__metadata__': continue
        s, e = v['data_offsets']
        out[k] = torch.from_numpy(np.frombuffer(data[s:e], dtype=np.float32).copy().reshape(v['shape']))
    return out

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
    def __init__(s, d, T, H):
        super().__init__(); s.H = H; s.hd = d // H
        s.W_query = nn.Linear(d, d, bias=False); s.W_key = nn.Linear(d, d, bias=False); s.W_value = nn.Linear(d, d, bias=False)
        s.out_proj = nn.Linear(d, d)
        s.register_buffer('mask', torch.triu(torch.ones(T, T), diagonal=1))
    def forward(s, x):
        b, t, d = x.shape
        q = s.W_query(x).view(b, t, s.H, s.hd).transpose(1, 2)
        k = s.W_key(x).view(b, t, s.H, s.hd).transpose(1, 2)
        v = s.W_value(x).view(b, t, s.H, s.hd).transpose(1, 2)
        sc = (q @ k.transpose(2, 3)).masked_fill(s.mask.bool()[:t, :t], -torch.inf)
        w = torch.softmax(sc / s.hd ** 0.5, dim=-1)
        return s.out_proj((w @ v).transpose(1, 2).reshape(b, t, d))

class Block(nn.Module):
    def __init__(s, d, T, H):
        super().__init__(); s.att = MHA(d, T, H); s.ff = FF(d); s.norm1 = LN(d); s.norm2 = LN(d)
    def forward(s, x):
        x = x + s.att(s.norm1(x))
        return x + s.ff(s.norm2(x))

class GPT(nn.Module):
    def __init__(s, V, T, d, H, L):
        super().__init__()
        s.tok_emb = nn.Embedding(V, d); s.pos_emb = nn.Embedding(T, d)
        s.trf_blocks = nn.Sequential(*[Block(d, T, H) for _ in range(L)])
        s.final_norm = LN(d); s.out_head = nn.Linear(d, V, bias=False)
    def forward(s, idx):
        x = s.tok_emb(idx) + s.pos_emb(torch.arange(idx.shape[1]))
        return s.out_head(s.final_norm(s.trf_blocks(x)))

DIR = sys.argv[1]
case = json.load(open(f'{DIR}/case.json'))
c = case['model']
model = GPT(c['vocabSize'], c['contextLength'], c['embDim'], c['nHeads'], c['nLayers'])
model.load_state_dict(read_st(f'{DIR}/init.safetensors'))  # strict: every name, shape and buffer
seqs = torch.tensor(case['batch'])
x, y = seqs[:, :-1], seqs[:, 1:]
opt = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
grad_ours = read_st(f'{DIR}/grad.safetensors')
ok = True
for t, ours in enumerate(case['losses']):
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
    loss.backward()
    print(f'step {t}: loss torch {loss.item():.6f}, gpt-ddp {ours:.6f}')
    ok &= abs(loss.item() - ours) < 1e-4
    if t == 0:
        g = max(((p.grad - grad_ours[n]).abs().max() / grad_ours[n].abs().max()).item() for n, p in model.named_parameters())
        print(f'gradient: max |difference| / max |value| per tensor: {g:.2e}')
        ok &= g < 1e-4
    opt.step()
after = read_st(f'{DIR}/after3.safetensors')
w = max((p.detach() - after[n]).abs().max().item() for n, p in model.named_parameters())
print(f'weights after 3 AdamW steps: max |difference| {w:.2e} (learning rate 4e-4)')
ok &= w < 1e-4
print('agree' if ok else 'DISAGREE')
sys.exit(0 if ok else 1)
