# The start both PyTorch benchmarks share: the thread count is fixed before torch loads, since
# Debian's torch multiplies matrices in OpenBLAS's own thread pool (pthread build), which ignores
# torch.set_num_threads and would otherwise use every core; and verify/ (the model) is importable.
import os, sys


def torch_with_threads(threads):
    for v in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
        os.environ[v] = str(threads)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'verify'))
    import torch
    torch.set_num_threads(threads)
    return torch
