"""Measure a whole training iteration (forward, loss, backward, SGD update) of a zoo model.

This is the ground truth the per-node cost model is checked against: the sum of per-node medians
should predict it. The optimizer runs per tensor (``foreach=False``) because the graph models one
update node per parameter tensor.
"""
from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F

from costdb.errors import CostdbError
from devices.agent.stats import summarize
from profiler.zoo import MODELS


def measure_iteration(model: str, batch: int | None = None, input_shape: tuple[int, ...] | None = None,
                      dtype: str = "float32", warmups: int = 3, samples: int = 15,
                      lr: float = 0.01, num_classes: int = 10) -> dict[str, Any]:
    zm = MODELS.get(model)
    if zm is None:
        raise CostdbError(f"whole-iteration timing needs a zoo model, got {model!r}")
    shape = tuple(input_shape or zm.default_input)
    batch = batch or zm.default_batch
    torch.manual_seed(0)
    net = zm.make(shape, num_classes).train()
    if zm.input_dtype == "int64":
        x = torch.randint(0, net.tok.num_embeddings, (batch, *shape))
        num_classes = net.head.out_features
    else:
        x = torch.randn(batch, *shape)
    y = torch.randint(0, num_classes, (batch,))
    opt = torch.optim.SGD(net.parameters(), lr=lr, foreach=False)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()

    for _ in range(warmups):
        step()
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    stats = summarize(times)
    stats.update(threads=torch.get_num_threads(), optimizer="sgd(foreach=False)", provenance="measured")
    return stats
