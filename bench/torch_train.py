#!/usr/bin/python3
# The reference training loop of Raschka ch. 5 (train_model_simple), as a PyTorch user would run
# it on "The Verdict", for comparing wall time and losses with gpt-ddp. No tokenizer here, so it
# takes the GPT-2 token ids of the whole text from a JSON file, and the train/val split as the
# index of the first validation token.
#   torch_train.py --config configs/gpt2-124m-verdict.json --tokens verdict-tokens.json
#       --split-token N [--start-tokens '[6109,3626,6100,345]'] --threads N [--steps S] [--out F.json]
# Progress lines as in the book go to stderr; one JSON summary line to stdout (and --out).
import argparse, json, sys, time

ap = argparse.ArgumentParser()
ap.add_argument('--config', default='gpt2-124m-verdict')
ap.add_argument('--tokens', '--data', dest='tokens', required=True,
                help='JSON array of the GPT-2 token ids of the whole text')
ap.add_argument('--split-token', type=int,
                help='index of the first validation token (default: training.trainRatio of the tokens)')
ap.add_argument('--start-tokens', help='token ids of the sample prompt: a JSON list, or a file holding one; no samples without it')
ap.add_argument('--threads', type=int, default=1)
ap.add_argument('--steps', type=int, help='stop after this many optimizer steps (default: all epochs of the config)')
ap.add_argument('--out')
args = ap.parse_args()

sys.dont_write_bytecode = True  # no __pycache__ left in bench/ or verify/
from torch_setup import torch_with_threads
torch = torch_with_threads(args.threads)
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torch_gpt import gpt_from_config, load_config

cfg = load_config(args.config)
tr, T = cfg['training'], cfg['model']['contextLength']


def log(msg): print(msg, file=sys.stderr, flush=True)


def read_json_arg(a):
    return json.loads(a) if a.lstrip().startswith('[') else json.load(open(a))


tokens = read_json_arg(args.tokens)
split = args.split_token
if split is None:
    # The book splits the text at 90% of its characters; by tokens this is only close to that.
    split = int(tr['trainRatio'] * len(tokens))
    log(f'no --split-token: validation from token {split} ({tr["trainRatio"]} of {len(tokens)} tokens)')
if not 0 < split < len(tokens): sys.exit(f'--split-token {split} outside 1..{len(tokens) - 1}')


class Windows(Dataset):
    """The book's GPTDatasetV1 on token ids: inputs of max_length, targets shifted by one."""
    def __init__(s, ids, max_length, stride):
        s.x, s.y = [], []
        for i in range(0, len(ids) - max_length, stride):
            s.x.append(torch.tensor(ids[i:i + max_length])); s.y.append(torch.tensor(ids[i + 1:i + max_length + 1]))
    def __len__(s): return len(s.x)
    def __getitem__(s, i): return s.x[i], s.y[i]


torch.manual_seed(tr['seed'])
train_loader = DataLoader(Windows(tokens[:split], T, T), batch_size=tr['batchSize'], shuffle=True, drop_last=True, num_workers=0)
val_loader = DataLoader(Windows(tokens[split:], T, T), batch_size=tr['batchSize'], shuffle=False, drop_last=False, num_workers=0)

torch.manual_seed(tr['seed'])
model = gpt_from_config(cfg)
optimizer = torch.optim.AdamW(model.parameters(), lr=tr['lr'], weight_decay=tr['weightDecay'])


def loss_batch(x, y):
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def loss_loader(loader, num_batches):
    if len(loader) == 0: return float('nan')
    n = min(num_batches, len(loader))
    total = 0.0
    for i, (x, y) in enumerate(loader):  # a shuffled loader draws its order here, as in the book
        if i >= n: break
        total += loss_batch(x, y).item()
    return total / n


def evaluate(eval_iter):
    model.eval()
    with torch.no_grad():
        t, v = loss_loader(train_loader, eval_iter), loss_loader(val_loader, eval_iter)
    model.train()
    return t, v


def greedy(idx, n):
    model.eval()
    for _ in range(n):
        with torch.no_grad():
            logits = model(idx[:, -T:])[:, -1, :]
        idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
    model.train()
    return idx[0].tolist()


start = read_json_arg(args.start_tokens) if args.start_tokens else None
max_steps = args.steps if args.steps is not None else tr['epochs'] * len(train_loader)
step_sec, evals, samples = [], [], []
tokens_seen, global_step = 0, -1
t_loop = time.perf_counter()
for epoch in range(tr['epochs']):
    if global_step + 1 >= max_steps: break
    model.train()
    batches = 0
    for x, y in train_loader:
        t0 = time.perf_counter()
        optimizer.zero_grad()
        loss = loss_batch(x, y)
        loss.backward()
        optimizer.step()
        step_sec.append(time.perf_counter() - t0)
        tokens_seen += x.numel()
        global_step += 1
        batches += 1
        if global_step % tr['evalFreq'] == 0:
            tl, vl = evaluate(tr['evalIter'])
            evals.append({'step': global_step, 'train': tl, 'val': vl, 'tokensSeen': tokens_seen})
            log(f'Ep {epoch + 1} (Step {global_step:06d}): Train loss {tl:.3f}, Val loss {vl:.3f}')
        if global_step + 1 >= max_steps: break
    # Only after a whole epoch, as the book does; an epoch cut short by --steps gets no sample.
    if start is not None and batches == len(train_loader):
        ids = greedy(torch.tensor([start]), tr['sampleTokens'])
        samples.append({'epoch': epoch + 1, 'step': global_step, 'tokens': ids})
        log(f'sample after epoch {epoch + 1} (token ids): {ids}')
seconds = time.perf_counter() - t_loop

result = {'steps': global_step + 1, 'seconds': seconds, 'stepSeconds': step_sec, 'evals': evals,
          'threads': torch.get_num_threads(), 'torch': torch.__version__, 'tokensSeen': tokens_seen,
          'samples': samples, 'trainBatches': len(train_loader), 'valBatches': len(val_loader)}
line = json.dumps(result)
print(line, flush=True)
if args.out:
    with open(args.out, 'w') as f: f.write(line + '\n')
