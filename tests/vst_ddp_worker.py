"""One rank of the DDP test of the vector quantizer (tests/test_vst.py runs two):
    python vst_ddp_worker.py RANK WORLD_SIZE INIT_FILE OUT_FILE
Each rank feeds its own data; the codebook after k-means initialisation, EMA updates and
revivals is saved to OUT_FILE."""

import sys

import torch
import torch.distributed as dist

from skelang.vst.quantizer import VectorQuantizer

rank, world, init_file, out_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
torch.manual_seed(0)  # the same initial codebook on every rank, as DDP's broadcast would give
quantizer = VectorQuantizer(64, 8, decay=0.8, init_vectors=256, dead_threshold=0.5, recent_size=512).train()
torch.manual_seed(100 + rank)  # different data and different random state on each rank
for step in range(30):
    x = torch.randn(128, 8) + rank + (10 if step >= 10 else 0)  # the data moves: codes die, are revived
    quantizer(x)
torch.save(
    {"codebook": quantizer.codebook, "cluster_size": quantizer.cluster_size, "revived": int(quantizer.revived)},
    out_file,
)
dist.destroy_process_group()
