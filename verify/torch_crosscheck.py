# verify:torch, part 2: an independent PyTorch model of the same architecture loads our
# model.safetensors with a strict load_state_dict, then takes the same 3 AdamW steps on the same
# batch (dropout off). Prints the loss of each side, the gradient and weight differences, and
# exits non-zero if they disagree beyond float32 noise. Needs PyTorch (Debian: python3-torch).
import json, struct, sys
import numpy as np, torch, torch.nn as nn
sys.dont_write_bytecode = True  # no __pycache__ left in verify/
from torch_gpt import GPT  # verify/torch_gpt.py: python puts the script's directory on sys.path

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
