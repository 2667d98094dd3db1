"""One training step, shared by the trainer and the speed benchmark (``bench/speed.py``).

A step is ``accumulate`` micro-batches of forward (under autocast), loss and backward (through
the fp16 gradient scaler, a no-op in other precisions), then gradient clipping and the
optimiser update, exactly as :func:`s2unet.engine.trainer.train` runs them.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch

from ..predict.precision import autocast

class TrainStep:
    """The training step of a model, loss and optimiser.

    Args:
        net: the module called on the images (the model, or its DDP / compiled wrapper);
            returns the deep-supervision outputs.
        loss_fn: ``loss(outputs, target) -> scalar`` (:func:`s2unet.losses.build_loss`).
        optimizer: the optimiser of ``params``.
        params: the trainable parameters (clipped together).
        device: where the batches are.
        amp_dtype: autocast dtype, or None for fp32; fp16 turns the gradient scaler on.
        grad_clip: clip the gradients' global norm to this; 0 = no clipping.
        accumulate: micro-batches per optimiser update; each loss is divided by it.
        with_target: call ``net(image, target)``: the model draws training inputs from the
            target (a prompted model's prompts).
    """

    def __init__(self, net: Callable[..., Sequence[torch.Tensor]], loss_fn: Callable[[Sequence[torch.Tensor], torch.Tensor], torch.Tensor],
                 optimizer: torch.optim.Optimizer, params: Sequence[torch.nn.Parameter], device: torch.device,
                 amp_dtype: Optional[torch.dtype], grad_clip: float, accumulate: int = 1,
                 with_target: bool = False) -> None:
        if accumulate < 1:
            raise ValueError(f"accumulate must be >= 1, got {accumulate}")
        self.net, self.loss_fn, self.optimizer, self.params = net, loss_fn, optimizer, list(params)
        self.device, self.amp_dtype, self.grad_clip, self.accumulate = device, amp_dtype, grad_clip, accumulate
        self.with_target = with_target
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    def backward(self, image: torch.Tensor, target: torch.Tensor, features: Optional[Callable[[], Any]] = None,
                 text: Optional[torch.Tensor] = None) -> float:
        """Forward, loss and backward of one micro-batch; gradients add up until :meth:`update`.

        Args:
            image: (B, 3, H, W) inputs on the device.
            target: the loss's target on the device.
            features: returns precomputed encoder features for ``net(image, features=...)``
                (the feature cache); called under autocast like the encoder would be.
            text: text-prompted models: the phrase embeddings (B, P, D) of the target's P channels.

        Returns:
            The micro-batch's loss (not divided by ``accumulate``).
        """
        with autocast(self.device, self.amp_dtype):
            inputs = {} if text is None else {"text": text}
            if features is not None:
                outputs = self.net(image, features=features(), **inputs)
            elif self.with_target:
                outputs = self.net(image, target, **inputs)
            else:
                outputs = self.net(image, **inputs)
            loss = self.loss_fn(outputs, target) / self.accumulate
        self.scaler.scale(loss).backward()
        return loss.item() * self.accumulate

    def update(self) -> None:
        """Clip the accumulated gradients, take the optimiser step and clear the gradients."""
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def __call__(self, image: torch.Tensor, target: torch.Tensor) -> float:
        """A whole step on one batch (``accumulate`` 1): :meth:`backward` then :meth:`update`.

        Returns:
            The batch's loss.
        """
        loss = self.backward(image, target)
        self.update()
        return loss
