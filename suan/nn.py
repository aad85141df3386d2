"""Small building blocks shared by the models."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics cover the global batch of all ranks.

    Single process: exactly ``nn.BatchNorm1d``. Under torch.distributed (gloo on CPU, NCCL on GPU)
    the per-feature sum and sum of squares are all-reduced with autograd, so W processes on W
    slices of a batch compute what one process computes on the whole batch (``SyncBatchNorm``
    needs a GPU; this works on CPU too).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _distributed()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        C = x.shape[1]
        stats = torch.cat([x.sum(0), (x * x).sum(0), x.new_full((1,), x.shape[0])])
        stats = all_reduce(stats)
        n = stats[-1]
        mean = stats[:C] / n
        var = (stats[C:2 * C] / n - mean * mean).clamp(min=0)
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1).clamp(min=1), alpha=m)
                self.num_batches_tracked += 1
        y = (x - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight + self.bias
        return y
