#!/usr/bin/python3
# The PyTorch side of bench:step: one worker's gradient computation (forward, cross-entropy,
# backward; no optimizer step) of the reference model on a fixed random batch.
#   torch_step.py --config configs/gpt2-124m-verdict.json --threads N [--batch B] [--steps S]
#   torch_step.py ... --serve   (one JSON "ready" line, then `step` / `quit` on stdin, one JSON
#                                line per step, so a driver can interleave its steps with ours)
import argparse, json, statistics, sys, time

ap = argparse.ArgumentParser()
ap.add_argument('--config', default='gpt2-124m-verdict')
ap.add_argument('--threads', type=int, default=1)
ap.add_argument('--batch', type=int, help='sequences per step (default: training.batchSize)')
ap.add_argument('--steps', type=int, default=5, help='timed steps after one warm-up (not with --serve)')
ap.add_argument('--seed', type=int, default=123)
ap.add_argument('--serve', action='store_true')
args = ap.parse_args()

sys.dont_write_bytecode = True  # no __pycache__ left in bench/ or verify/
from torch_setup import torch_with_threads
torch = torch_with_threads(args.threads)
import torch.nn.functional as F
from torch_gpt import blas_summary, gpt_from_config, load_config

cfg = load_config(args.config)
B = args.batch or cfg['training']['batchSize']
T, V = cfg['model']['contextLength'], cfg['model']['vocabSize']
torch.manual_seed(args.seed)
model = gpt_from_config(cfg)
model.train()  # dropout as configured, as in a training step
x = torch.randint(0, V, (B, T))
y = torch.randint(0, V, (B, T))


def out(obj):
    sys.stdout.write(json.dumps(obj) + '\n'); sys.stdout.flush()


def step():
    t0 = time.perf_counter()
    # set_to_none: what optimizer.zero_grad() does from PyTorch 2.0 on; backward then writes the
    # gradients instead of adding them to zeroed buffers.
    model.zero_grad(set_to_none=True)
    t1 = time.perf_counter()
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    t2 = time.perf_counter()
    loss.backward()
    t3 = time.perf_counter()
    return {'sec': t3 - t0, 'forward': t2 - t1, 'backward': t3 - t2, 'loss': loss.item()}


head = {'torch': torch.__version__, 'threads': torch.get_num_threads(), 'blas': blas_summary()}
if args.serve:
    out({'ready': True, **head})
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == 'step': out(step())
        elif cmd == 'quit': break
        elif cmd: out({'error': f'unknown command {cmd!r} (step, quit)'})
else:
    step()  # warm-up: allocator, thread pools, first-touch of the weights
    times = [step() for _ in range(args.steps)]
    med = {k: statistics.median(t[k] for t in times) for k in ('sec', 'forward', 'backward')}
    out({**head, 'batch': B, 'contextLength': T, 'steps': args.steps, 'median': med, 'times': times})
