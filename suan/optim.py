"""LazyAdam: Adam for embedding tables that updates only the rows a batch touched.

Dense Adam moves every row of a table at every step (its momentum keeps pushing rows that were
not in the batch) and costs O(rows) state updates; LazyAdam, like TensorFlow's LazyAdam and
torch's SparseAdam, updates the first/second moments and the parameter only for rows whose
gradient is non-zero. It accepts dense gradients (so it works under DistributedDataParallel with
NCCL or gloo) and sparse ones (``nn.Embedding(sparse=True)``). Bias correction uses the global
step, as TensorFlow's LazyAdam does.
"""
from __future__ import annotations

import torch


class LazyAdam(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        if lr <= 0:
            raise ValueError(f"lr: must be positive, got {lr}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                g = p.grad
                if g.is_sparse:
                    g = g.coalesce()
                    rows, vals = g.indices()[0], g.values()
                else:
                    g2 = g.reshape(g.shape[0], -1) if g.dim() > 1 else g.reshape(-1, 1)
                    rows = g2.ne(0).any(dim=1).nonzero().squeeze(1)
                    vals = g.index_select(0, rows)
                if rows.numel() == 0:
                    continue
                m_r = m.index_select(0, rows).mul_(b1).add_(vals, alpha=1 - b1)
                v_r = v.index_select(0, rows).mul_(b2).addcmul_(vals, vals, value=1 - b2)
                m.index_copy_(0, rows, m_r)
                v.index_copy_(0, rows, v_r)
                step_size = group["lr"] * (1 - b2 ** t) ** 0.5 / (1 - b1 ** t)
                update = m_r / (v_r.sqrt() + group["eps"])
                p.index_add_(0, rows, update, alpha=-step_size)
        return loss
