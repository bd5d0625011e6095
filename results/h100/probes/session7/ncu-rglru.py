"""ncu target: the RG-LRU forward and the scan forward at B=8, D=2560, bf16, T=argv[1]."""

import sys

import torch

from kernels.rglru import rg_lru
from kernels.scan import linear_scan

t = int(sys.argv[1])
b, d = 8, 2560
g = torch.Generator(device="cuda").manual_seed(0)


def r():
    return torch.randn(b, t, d, device="cuda", generator=g).to(torch.bfloat16)


x, gx, ga = r(), r(), r()
a_param = torch.full((d,), 0.5, device="cuda", dtype=torch.bfloat16)
pos = torch.arange(t, device="cuda")[None].repeat(b, 1)
a = (0.5 + 0.5 * torch.rand(b, t, d, device="cuda", generator=g)).to(torch.bfloat16)
with torch.no_grad():
    for _ in range(3):
        rg_lru(x, gx, ga, a_param, pos)
        linear_scan(a, x)
torch.cuda.synchronize()
