"""How much each trained weight matters, for choosing which channels pruning keeps (worker side).

`saliencies(genome, state, select, data, seed)` returns a tensor per weight of the state_dict
whose channel sums rank channels: the weights themselves for `l1` and `bn` (a filter's L1 norm,
or the batch-norm scale), and for `taylor` the first-order Taylor score |w · ∂L/∂w| summed over
a few training batches (Molchanov et al. 2019), which estimates how much the loss would change if
that weight were removed.
"""

from __future__ import annotations

from typing import Any

from evonas.genome import Genome

TAYLOR_BATCHES = 4
TAYLOR_BATCH_SIZE = 64


def saliencies(
    genome: Genome, state: dict[str, Any], select: str, data: Any, seed: int
) -> dict[str, Any]:
    """The tensors channels are ranked by (see the module docstring)."""
    if select != "taylor":
        return state
    if data is None:
        raise ValueError("prune importance 'taylor' needs the task's training data")
    return taylor_scores(genome, state, data, seed)


def taylor_scores(genome: Genome, state: dict[str, Any], data: Any, seed: int) -> dict[str, Any]:
    """|w · ∂L/∂w| per weight, summed over TAYLOR_BATCHES seeded batches of the training set."""
    import torch
    from torch import nn

    from evonas.batches import split_of
    from evonas.builder import build

    model = build(genome, data.input_shape, data.num_classes)
    model.load_state_dict(state)
    model.eval()  # batch norms use their running statistics, as the trained network does
    generator = torch.Generator().manual_seed(int(seed))
    source = split_of(data, "train", torch.device("cpu"), {"loader": "auto", "loader_workers": 0})
    params = dict(model.named_parameters())
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(TAYLOR_BATCHES):
        size = min(TAYLOR_BATCH_SIZE, len(source))
        x, y = source.take(torch.randint(len(source), (size,), generator=generator))
        model.zero_grad()
        loss_fn(model(x), y.long()).backward()
        for name, p in params.items():
            if p.grad is not None:
                total[name] += (p.detach() * p.grad).abs()
    return {**state, **total}
