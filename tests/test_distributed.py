"""Data-parallel training of an rnnkit module with torch.distributed: a 2-layer
bidirectional LSTM under DistributedDataParallel and under FSDP2 (fully_shard),
gloo backend, two CPU processes each holding half the batch. Every parameter's
gradient must equal what one process computes on the whole batch."""
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

import rnnkit

WORLD = 2
T, B, I, H = 5, 3, 4, 7  # B rows of the batch in each process
F64 = torch.float64


def fresh_model():
    torch.manual_seed(0)  # the same weights in every process
    return rnnkit.LSTM(I, H, num_layers=2, bidirectional=True, dtype=F64)


def whole_batch():
    return torch.randn(T, WORLD * B, I, dtype=F64, generator=torch.Generator().manual_seed(1))


def loss_of(module, x):
    """A per-row mean, so that averaging the processes' gradients (as DDP and
    FSDP do) gives the gradient of the whole batch."""
    y, (h, c) = module(x)
    return (y.square().sum() + h.square().sum() + c.sin().sum()) / x.shape[1]


def check_grads(module, want, what, rank):
    for name, p in module.named_parameters():
        grad = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
        torch.testing.assert_close(grad, want[name], atol=1e-12, rtol=1e-10,
                                   msg=lambda m: f"{what}, rank {rank}, {name}: {m}")


def worker(rank, init_file):
    torch.set_num_threads(1)  # two processes share the machine
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    try:
        reference = fresh_model()
        loss_of(reference, whole_batch()).backward()
        want = {name: p.grad for name, p in reference.named_parameters()}
        mine = whole_batch()[:, rank * B:(rank + 1) * B]

        ddp = DistributedDataParallel(fresh_model())
        loss_of(ddp, mine).backward()
        check_grads(ddp.module, want, "DDP", rank)

        sharded = fully_shard(fresh_model(), mesh=init_device_mesh("cpu", (WORLD,)))
        loss_of(sharded, mine).backward()
        check_grads(sharded, want, "FSDP2", rank)
    finally:
        dist.destroy_process_group()


def test_ddp_and_fsdp2_match_one_process(tmp_path):
    # fork: the workers start with torch and rnnkit already imported (seconds saved)
    mp.start_processes(worker, args=(str(tmp_path / "rendezvous"),), nprocs=WORLD,
                       start_method="fork")
