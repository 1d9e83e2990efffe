"""What an epoch of optimizer steps is made of: gradient-accumulation groups and the loss tally."""

from __future__ import annotations

import torch

from cxr_core.utils.distributed import DistContext


def accumulation_group(step: int, n_batches: int, accum: int) -> tuple[int, bool]:
    """(batches in the group ``step`` belongs to, whether ``step`` ends it).

    ``accum`` batches make one optimizer step; the last group of an epoch may be shorter, and
    its loss is divided by its own size so every step averages over the batches it saw.
    """
    group_start = step - step % accum
    group_size = min(accum, n_batches - group_start)
    return group_size, step + 1 == group_start + group_size


class LossTally:
    """Sum of batch losses on the device (no host sync per step), leaving out non-finite ones.

    Reading a CUDA loss with ``float()`` every step stalls the GPU until it finishes; the
    tally is read once per epoch, after summing over ranks so every rank sees the same
    numbers and takes the same decision about them.
    """

    def __init__(self, device: torch.device) -> None:
        # loss x images, images, non-finite batches
        self.totals = torch.zeros(3, dtype=torch.float64, device=device)

    def add(self, loss: torch.Tensor, images: int) -> None:
        loss = loss.detach().double()
        finite = torch.isfinite(loss)
        self.totals += torch.stack(
            [torch.where(finite, loss * images, 0.0), finite.double() * images, (~finite).double()]
        )

    def result(self, ctx: DistContext) -> tuple[float, int, int]:
        """(mean loss over finite batches of all ranks, their images, non-finite batches)."""
        loss_images, images, nonfinite = ctx.all_reduce_sum(self.totals.clone()).tolist()
        mean = loss_images / images if images else float("nan")
        return mean, int(images), int(nonfinite)
