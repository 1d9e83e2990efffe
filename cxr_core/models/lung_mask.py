"""The lung-masking step of a lung-masked classifier: run the lung model, black out the rest.

:class:`LungMasker` is the one implementation of ``preprocess.lung_mask``. The image cache calls
it on every cached row when a lung-masked model is trained, evaluated or gated
(:meth:`cxr_core.data.cache.ImageCache.build` with ``transform=``), and the Predictor calls it on
every image before the classifier; both hand it the same uint8 cache array, so the classifier
sees the same pixels at training and at inference.

Each image is segmented alone (a batch of one) on one thread. Convolution kernels sum in
another order for another batch size (up to 2e-7 apart on Kermany films) or another number of
threads (1.5e-6), and a pixel whose lung probability sits at the threshold would then flip
between the cache and the Predictor. Batch and thread count fixed, the mask of an image depends
on the image alone (on one machine and torch build), however the caller batches or threads.
One thread is also the fast choice on a loaded CPU: there the lung model took 0.12 s per image
on one thread and 3.6 s on two (threads spinning while they wait for each other).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from cxr_core.data.lung_mask import LungMaskConfig, lung_mask_of, mask_outside
from cxr_core.errors import CheckpointError
from cxr_core.models.checkpoint import Checkpoint
from cxr_core.models.segmentation import predict_mask_probs
from cxr_core.utils.device import resolve_device
from cxr_core.utils.tasks import Task


class LungMasker:
    """Lung masks and lung-masked images of uint8 cache arrays ``(B, S, S)``, with one lung model.

    Safe to share between threads: the model stays in ``eval()`` mode and every call runs
    without gradients and keeps no state on the object.
    """

    def __init__(
        self, checkpoint: Checkpoint, settings: LungMaskConfig, device: str | torch.device = "cpu"
    ) -> None:
        self.settings = settings
        self.preprocess = checkpoint.preprocess
        self.model = lung_model(checkpoint, device, purpose="lung masking needs")

    @property
    def identity(self) -> str:
        """What the masked pixels depend on besides the image (the image cache's key includes it)."""
        return self.settings.identity()

    def masks(self, images: np.ndarray) -> np.ndarray:
        """Boolean ``(B, S, S)``: the dilated lungs of each image, found at the images' own size."""
        arr = _batch(images)
        out = np.empty(arr.shape, dtype=bool)
        with _one_thread():
            for i in range(arr.shape[0]):
                probs = predict_mask_probs(
                    self.model, arr[i : i + 1], self.preprocess, batch_size=1
                )[0]
                out[i] = lung_mask_of(probs, self.settings)
        return out

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(B, S, S)`` with everything outside each image's dilated lungs set to 0."""
        arr = _batch(images)
        return mask_outside(arr, self.masks(arr))


def lung_model(
    checkpoint: Checkpoint, device: str | torch.device, *, purpose: str = "pass"
) -> torch.nn.Module:
    """The segmentation network of a lung checkpoint, on ``device`` in eval mode; a classifier
    checkpoint given by mistake is refused with what to pass instead."""
    task = checkpoint.card.label_space.get("task")
    if task != Task.SEGMENTATION.value:
        raise CheckpointError(
            f"{checkpoint.path} is a {task} model, not a lung segmentation model; "
            f"{purpose} the lung checkpoint (checkpoints/lungs/model.safetensors)"
        )
    return checkpoint.build_model().to(resolve_device(device)).eval()


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """torch's intra-op threads set to one for the calling thread (OpenMP builds keep the
    setting per thread, so other threads' predictions are untouched), then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _batch(images: np.ndarray) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim != 3 or arr.dtype != np.uint8:
        raise ValueError(
            f"lung masking takes uint8 cache arrays (B, S, S), got {arr.dtype} {arr.shape}"
        )
    return arr
