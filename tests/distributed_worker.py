"""One rank of the two-process gloo tests of tests/test_distributed.py:
    python distributed_worker.py CASE RANK WORLD_SIZE INIT_FILE OUT_FILE [ARGS...]

CASE quantizer SIZE0 SIZE1: VST's vector quantizer fed SIZE0 vectors per step on rank 0 and
    SIZE1 on rank 1 (its own data and random state on each rank) through k-means
    initialisation, EMA updates and revivals; saves the codebook and cluster sizes.
CASE batch_norm: skelang's CPU SyncBatchNorm on this rank's half of a float64 batch; saves
    its output, the input's and the weights' gradients and the running statistics.
"""

import sys

import torch
import torch.distributed as dist

case, rank, world, init_file, out_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)

if case == "quantizer":
    from skelang.vst.quantizer import VectorQuantizer

    size = int(sys.argv[6 + rank])
    torch.manual_seed(0)  # the same initial codebook on every rank, as DDP's broadcast would give
    quantizer = VectorQuantizer(64, 8, decay=0.8, init_vectors=256, dead_threshold=0.5, recent_size=512).train()
    torch.manual_seed(100 + rank)  # different data and different random state on each rank
    for step in range(30):
        x = torch.randn(size, 8) + rank + (10 if step >= 10 else 0)  # the data moves: codes die, are revived
        quantizer(x)
    result = {
        "codebook": quantizer.codebook,
        "cluster_size": quantizer.cluster_size,
        "revived": int(quantizer.revived),
        "initialized": bool(quantizer.initialized),
    }
elif case == "batch_norm":
    from skelang.runs.distributed import convert_batch_norms

    torch.manual_seed(0)
    x, weight = torch.randn(10, 3, 4, dtype=torch.float64), torch.randn(10, 3, 4, dtype=torch.float64)
    norm = convert_batch_norms(torch.nn.Sequential(torch.nn.BatchNorm1d(3)), torch.device("cpu")).double()
    part = slice(0, 6) if rank == 0 else slice(6, 10)  # unequal parts
    inputs = x[part].clone().requires_grad_()
    output = norm(inputs)
    (output * weight[part]).sum().backward()
    result = {
        "output": output.detach(),
        "input_grad": inputs.grad,
        "weight_grad": norm[0].weight.grad,
        "bias_grad": norm[0].bias.grad,
        "running_mean": norm[0].running_mean,
        "running_var": norm[0].running_var,
    }
else:
    raise SystemExit(f"unknown case {case}")
torch.save(result, out_file)
dist.destroy_process_group()
