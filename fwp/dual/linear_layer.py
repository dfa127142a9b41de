"""A linear layer trained by gradient descent is an attention over its training patterns
(Irie, Csordás, Schmidhuber, ICML 2022, "The Dual Form of Neural Networks Revisited";
Aizerman, Braverman, Rozonoer 1964).

With y = W x + b and plain SGD, each step adds outer products: for the patterns i of the
minibatch, ∂L/∂W = Σ_i (∂L/∂y_i) x_iᵀ, so with the error signal e_i = −η ∂L/∂y_i

    W_T = W_0 + Σ_i e_i ⊗ x_i,    b_T = b_0 + Σ_i e_i

and the trained layer's output on a test input x is the initial output plus unnormalised
attention with keys x_i (and a constant-1 input for the bias), values e_i and query x:

    W_T x + b_T = (W_0 x + b_0) + Σ_i e_i (x_i · x + 1)

The memory grows with the number of patterns seen; the weights stay the same size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from fwp.errors import UserError


@dataclass
class TrainingRecord:
    """What plain SGD wrote into a linear layer, pattern by pattern.

    Attributes:
        weight0: ``[out, in]`` the weight before the first recorded step.
        bias0: ``[out]`` the bias before the first recorded step, or ``None`` without a bias.
        keys: ``[N, in]`` the training inputs x_i, in the order seen.
        values: ``[N, out]`` the error signals e_i = −η_step ∂L/∂y_i.
        steps: ``[N]`` the SGD step (0, 1, …) that used pattern i.
    """

    weight0: torch.Tensor
    bias0: torch.Tensor | None
    keys: torch.Tensor
    values: torch.Tensor
    steps: torch.Tensor


@dataclass
class LayerDual:
    """y = initial + Σ_i scores[..., i] · values[i]: a test output as attention over patterns.

    Attributes:
        initial: ``[..., out]`` the initial layer's output W_0 x + b_0.
        scores: ``[..., N]`` unnormalised attention x_i · x (+ 1 with a bias).
        values: ``[N, out]`` the stored error signals e_i.
    """

    initial: torch.Tensor
    scores: torch.Tensor
    values: torch.Tensor

    @property
    def contributions(self) -> torch.Tensor:
        """``[..., N, out]``: what training pattern i adds to the output, e_i (x_i · x + 1)."""
        return self.scores.unsqueeze(-1) * self.values

    def total(self) -> torch.Tensor:
        """``[..., out]``: the initial output plus every pattern's contribution."""
        return self.initial + self.contributions.sum(dim=-2)


class RecordedLinear(nn.Linear):
    """``nn.Linear`` that records its training patterns while :meth:`sgd_step` trains it.

    In training mode with gradients enabled, :meth:`forward` keeps its inputs and catches the
    gradient ∂L/∂y that flows back into its outputs; :meth:`sgd_step` then applies plain SGD,
    W ← W − η ∂L/∂W, and stores each pattern's (x_i, −η ∂L/∂y_i). The layer may sit inside a
    larger network: the error signal is whatever reaches its output. Momentum, weight decay or
    a loss that uses the weight outside :meth:`forward` would break the duality, and
    :meth:`sgd_step` says so.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.start_recording()

    def start_recording(self) -> None:
        """Forget the recorded patterns; the next step's weights become W_0."""
        self._start: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._pending: list[list[torch.Tensor | None]] = []
        self._keys: list[torch.Tensor] = []
        self._values: list[torch.Tensor] = []
        self._steps: list[torch.Tensor] = []
        self._step = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if self.training and torch.is_grad_enabled() and y.requires_grad:
            entry: list[torch.Tensor | None] = [x.detach().reshape(-1, self.in_features), None]
            self._pending.append(entry)

            def catch(grad: torch.Tensor) -> None:
                entry[1] = grad.detach().reshape(-1, self.out_features)

            y.register_hook(catch)
        return y

    @torch.no_grad()
    def sgd_step(self, lr: float) -> None:
        """W ← W − η ∂L/∂W (and b), after ``loss.backward()``; records e_i = −η ∂L/∂y_i."""
        if self.weight.grad is None:
            raise UserError("sgd_step needs gradients: call loss.backward() before it")
        used = [(x, g) for x, g in self._pending if g is not None]
        expected = sum((g.T @ x for x, g in used), torch.zeros_like(self.weight))
        scale = expected.abs().max().item() + self.weight.grad.abs().max().item()
        if not torch.allclose(self.weight.grad, expected, rtol=0, atol=1e-5 * scale + 1e-12):
            raise UserError(
                "the weight's gradient is not Σ_i ∂L/∂y_i x_iᵀ: the loss uses the weight outside "
                "forward (weight decay? a second module sharing it?) or gradients were "
                "accumulated before recording; zero the gradients and train with plain SGD"
            )
        if self._start is None:
            self._start = (
                self.weight.detach().clone(),
                None if self.bias is None else self.bias.detach().clone(),
            )
        for x, g in used:
            self._keys.append(x.clone())
            self._values.append(-lr * g)
            self._steps.append(torch.full((x.shape[0],), self._step, dtype=torch.long))
        self.weight -= lr * self.weight.grad
        if self.bias is not None and self.bias.grad is not None:
            self.bias -= lr * self.bias.grad
        self.weight.grad = None
        if self.bias is not None:
            self.bias.grad = None
        self._pending = []
        self._step += 1

    def record(self) -> TrainingRecord:
        """The patterns stored since :meth:`start_recording` (or construction)."""
        weight0, bias0 = self._start or (
            self.weight.detach().clone(),
            None if self.bias is None else self.bias.detach().clone(),
        )
        empty = self.weight.new_zeros
        return TrainingRecord(
            weight0=weight0,
            bias0=bias0,
            keys=torch.cat(self._keys) if self._keys else empty(0, self.in_features),
            values=torch.cat(self._values) if self._values else empty(0, self.out_features),
            steps=torch.cat(self._steps) if self._steps else torch.zeros(0, dtype=torch.long),
        )


def train_recording(
    layer: RecordedLinear,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    lr: float,
) -> TrainingRecord:
    """Train ``layer`` alone by plain SGD, one step per ``(x [N, in], target)`` minibatch with
    loss ``loss_fn(layer(x), target)``, and return what it recorded."""
    if not isinstance(layer, RecordedLinear):
        raise UserError(
            f"train_recording needs a RecordedLinear, got {type(layer).__name__}: build one "
            f"with RecordedLinear(in_features, out_features) and copy the weights in"
        )
    layer.train()
    for x, target in batches:
        layer.zero_grad(set_to_none=True)
        loss_fn(layer(x), target).backward()
        layer.sgd_step(lr)
    return layer.record()


def dual_output(record: TrainingRecord, x_test: torch.Tensor) -> LayerDual:
    """The trained layer's output on ``x_test [..., in]`` in its dual form:

        W_T x + b_T = (W_0 x + b_0) + Σ_i e_i (x_i · x + 1)      (the +1 only with a bias)
    """
    d_in = record.weight0.shape[1]
    if x_test.shape[-1:] != (d_in,):
        raise UserError(
            f"x_test must be [..., {d_in}] (the layer's input size), got {tuple(x_test.shape)}"
        )
    x = x_test.to(record.weight0)
    initial = x @ record.weight0.T
    scores = x @ record.keys.T
    if record.bias0 is not None:
        initial = initial + record.bias0
        scores = scores + 1.0
    return LayerDual(initial=initial, scores=scores, values=record.values)
