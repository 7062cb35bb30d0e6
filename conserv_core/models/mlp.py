"""Plain networks, the unconstrained baselines, and the pieces every model shares.

* :func:`make_mlp` builds the fully connected trunk every model uses (configurable width,
  depth and a smooth activation from :data:`ACTIVATIONS`).
* :class:`MLPVectorField` (registry key ``"mlp"``) is the ODE baseline: ``z -> dz/dt``
  with nothing enforced.
* :class:`FieldMLP` (``"field_mlp"``) is the flow baseline: ``(x, y, t) -> u``. Its input
  features, :class:`PeriodicFeatures`, are shared with the stream-function model so the
  comparison differs only in the hard constraint.
* :func:`input_gradient` is the one autograd call behind HNN and the stream function:
  it works under ``torch.no_grad()`` and builds a differentiable graph only when the
  caller has grad enabled (training), so long rollouts never accumulate graphs.

Normalisation: every model has ``set_scales(x, y)`` which stores per-column location
and spread of its training inputs ``x`` and targets ``y`` as buffers, so that the
network proper sees O(1) inputs and produces O(1) outputs. The buffers follow
``.to(device, dtype)``.
"""

from __future__ import annotations

import functools
from typing import Callable, ClassVar

import torch
from torch import nn

from conserv_core.models.base import Cost, FieldModel, Model

Tensor = torch.Tensor


class Sin(nn.Module):
    """``sin`` as a layer (smooth, periodic; a SIREN-like choice without SIREN's init)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(x)


#: activation name -> layer factory. Only smooth ones: HNN differentiates the network
#: once inside the model (and once more in training), LNN twice (and once more).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "silu": nn.SiLU,
    "sin": Sin,
    "gelu": nn.GELU,
}


def make_mlp(in_dim: int, out_dim: int, width: int, depth: int, activation: str,
             out_bias: bool = True) -> nn.Sequential:
    """``depth`` hidden layers of ``width`` units with ``activation`` between them, then a
    linear read-out: ``(..., in_dim) -> (..., out_dim)``. PyTorch's default init; seeding
    is the caller's job.

    ``out_bias=False`` for potentials (``H``, ``L``, ``ψ``): an additive constant there
    changes no dynamics, so its parameter would never receive a gradient.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {activation!r}")
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(depth):
        layers += [nn.Linear(d, width), ACTIVATIONS[activation]()]
        d = width
    layers.append(nn.Linear(d, out_dim, bias=out_bias))
    return nn.Sequential(*layers)


def spread(x: Tensor, rel_floor: float = 1e-2) -> Tensor:
    """Per-column standard deviation of ``x (N, D) -> (D,)``, floored at ``rel_floor`` of
    the largest column's, so a (nearly) constant column is not blown up by the division;
    all ones when every column is constant (or ``N == 1``)."""
    if x.dim() != 2:
        raise ValueError(f"expected a (N, D) tensor, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("scales must come from finite data; got NaN or inf")
    std = x.std(0, unbiased=False) if x.shape[0] > 1 else torch.zeros_like(x[0])
    top = std.max()
    if top <= 0:
        return torch.ones_like(std)
    return std.clamp_min(rel_floor * top)


def escape_inference_mode(fn):
    """Let a method that differentiates w.r.t. its inputs run inside
    ``torch.inference_mode()`` (where autograd is off and cannot be turned on): it runs
    with inference mode off and grad mode off, on clones of its tensor arguments, which
    costs one copy of the inputs and returns ordinary (non-inference) tensors."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not torch.is_inference_mode_enabled():
            return fn(*args, **kwargs)
        with torch.inference_mode(False), torch.no_grad():
            args = tuple(a.clone() if isinstance(a, Tensor) else a for a in args)
            kwargs = {k: (v.clone() if isinstance(v, Tensor) else v) for k, v in kwargs.items()}
            return fn(*args, **kwargs)

    return wrapper


def differentiable_leaf(x: Tensor, create_graph: bool) -> Tensor:
    """``x`` itself when its graph must be kept (training through it), else a detached
    copy that requires grad, to differentiate at."""
    return x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)


def grad_or_zeros(out: Tensor, inputs: tuple[Tensor, ...], create_graph: bool,
                  grad_outputs: Tensor | None = None, batched: bool = False) -> tuple[Tensor, ...]:
    """``torch.autograd.grad(out, inputs)`` that gives zeros where ``out`` does not depend
    on an input (a Lagrangian free of ``q``, a constant field component are legitimate)
    and keeps the graph for further calls. ``batched``: ``grad_outputs`` has an extra
    leading dimension of cotangents, and so have the results (``is_grads_batched``)."""
    lead = grad_outputs.shape[:1] if batched else ()
    if not out.requires_grad:
        return tuple(x.new_zeros(lead + x.shape) for x in inputs)
    grads = torch.autograd.grad(out, inputs, grad_outputs=grad_outputs, create_graph=create_graph,
                                retain_graph=True, allow_unused=True, is_grads_batched=batched)
    # (materialize_grads=True would drop the batch dimension of an unused input's zeros)
    return tuple(x.new_zeros(lead + x.shape) if g is None else g for g, x in zip(grads, inputs))


def input_gradient(fn: Callable[[Tensor], Tensor], x: Tensor, create_graph: bool | None = None) -> Tensor:
    """``∇ₓ fn(x)`` for a batched scalar function ``fn: (B, D) -> (B,)`` whose rows are
    independent (every model here): one backward pass of ``fn(x).sum()``. Returns ``(B, D)``.

    Args:
        create_graph: keep the result differentiable (w.r.t. parameters and ``x``), as a
            training loss needs. Default: whether grad is enabled *at the call*, so under
            ``torch.no_grad()`` the result is a plain tensor and the temporary graph is
            freed at once (rollouts of any length use constant memory).
    """
    if create_graph is None:
        create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        xg = differentiable_leaf(x, create_graph)
        out = fn(xg)  # (B,)
        (g,) = grad_or_zeros(out.sum(), (xg,), create_graph)
    return g


#: activation layer -> ``(grad, y) -> grad · σ'`` from its output ``y``: autograd's own
#: backward kernel (``grad * (1 - y*y)`` written in Python rounds differently), for the
#: activations whose gradient :func:`trunk_gradient` writes out
_BACKWARD_FROM_OUTPUT: dict[type, Callable[[Tensor, Tensor], Tensor]] = {
    nn.Tanh: torch.ops.aten.tanh_backward,
}


def has_trunk_gradient(net: nn.Sequential) -> bool:
    """Whether :func:`trunk_gradient` can differentiate ``net``: a :func:`make_mlp` trunk
    with one output and an activation in :data:`_BACKWARD_FROM_OUTPUT`."""
    mods = list(net)
    return (len(mods) >= 3 and len(mods) % 2 == 1 and mods[-1].out_features == 1
            and all(isinstance(m, nn.Linear) for m in mods[::2])
            and all(type(m) in _BACKWARD_FROM_OUTPUT for m in mods[1::2]))


def trunk_gradient(net: nn.Sequential, x: Tensor, scale: Tensor) -> Tensor:
    """``∇ₓ scale·net(x)`` for a one-output :func:`make_mlp` trunk, rows independent:
    ``(B, D) -> (B, D)``, by the chain rule written out (a forward pass that keeps each
    layer's output, then one product per layer back), with no autograd graph.

    The operations and their order are autograd's own (``Linear``'s backward is
    ``grad @ W``; tanh's is its own kernel for ``grad · (1 − y²)``), so the result equals
    :func:`input_gradient`'s bit for bit, at a fraction of its cost: a rollout evaluates
    the HNN's field four times a step and needs no graph (issue 33, the OOD slider).
    Check :func:`has_trunk_gradient` first."""
    mods = list(net)
    outs = []
    h = x
    for lin, act in zip(mods[:-1:2], mods[1::2]):
        h = act(lin(h))
        outs.append((h, act))
    g = (scale * mods[-1].weight).expand(x.shape[0], -1).contiguous()  # (B, width): d(scale·out)/dh
    for (y, act), lin in zip(reversed(outs), reversed(mods[:-1:2])):
        g = _BACKWARD_FROM_OUTPUT[type(act)](g, y).mm(lin.weight)
    return g


class MLPVectorField(Model):
    """Unconstrained baseline ``dz/dt = f_θ(z)`` for an ODE system, ``(B, D) -> (B, D)``.

    With scales set, ``f(z) = μ_y + σ_y ⊙ net((z − μ_x) / σ_x)``. Nothing is conserved:
    the learned field is Hamiltonian only approximately, where the data taught it.
    """

    kind: ClassVar[str] = "ode"
    coords: ClassVar[str] = "canonical"
    default_activation: ClassVar[str] = "tanh"
    capabilities: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def cost_per_state(cls, system) -> Cost:
        """Torch's per-call overhead, plus the first and last layers, which grow with the
        state's size D. Measured (benchmarks/bench_budget.py, one core, width 128): rollout
        1.2 units at D = 8 to 1.3 at D = 64, training 1.6 to 1.9."""
        d = system.state_dim
        return Cost(rollout=1.2 + 0.002 * d, train=1.6 + 0.005 * d, why=f"state_dim={d}")

    def __init__(self, state_dim: int, width: int = 64, depth: int = 2, activation: str = "tanh"):
        super().__init__()
        self.state_dim = state_dim
        self.net = make_mlp(state_dim, state_dim, width, depth, activation)
        self.register_buffer("x_mean", torch.zeros(state_dim))
        self.register_buffer("x_std", torch.ones(state_dim))
        self.register_buffer("y_mean", torch.zeros(state_dim))
        self.register_buffer("y_std", torch.ones(state_dim))

    @torch.no_grad()
    def set_scales(self, x: Tensor, y: Tensor) -> None:
        """Store input/output location and spread from training states ``x (N, D)`` and
        their time derivatives ``y (N, D)``."""
        check_pair(x, y, self.state_dim, self.state_dim)
        self.x_mean.copy_(x.mean(0))
        self.x_std.copy_(spread(x))
        self.y_mean.copy_(y.mean(0))
        self.y_std.copy_(spread(y))

    def forward(self, z: Tensor, t=None) -> Tensor:
        """``z (B, D) -> dz/dt (B, D)``; ``t`` is ignored (autonomous)."""
        return self.y_mean + self.y_std * self.net((z - self.x_mean) / self.x_std)

    def learned_energy(self, z: Tensor) -> Tensor:
        raise NotImplementedError("the baseline MLP has no conserved quantity of its own")


class PeriodicFeatures(nn.Module):
    """Periodic encoding of ``(x, y, t)`` on ``[0, 2π)²``, shared by every field model.

    ``(sin kx, cos kx, sin ky, cos ky)`` for ``k = 1..n_modes``, then the standardised
    time ``(t − μ_t)/σ_t``: ``(B, 2), t -> (B, 4·n_modes + 1)``. Exactly 2π-periodic in
    ``x`` and ``y``, so the learned field is periodic like the flow it imitates.
    """

    def __init__(self, n_modes: int):
        super().__init__()
        self.n_modes = n_modes
        self.register_buffer("k", torch.arange(1, n_modes + 1, dtype=torch.float32))
        self.register_buffer("t_mean", torch.zeros(()))
        self.register_buffer("t_std", torch.ones(()))

    @property
    def out_dim(self) -> int:
        return 4 * self.n_modes + 1

    @torch.no_grad()
    def set_time_scale(self, t: Tensor) -> None:
        """Standardise time with the mean and spread of the training times ``t (N,)``."""
        self.t_mean.copy_(t.mean())
        self.t_std.copy_(spread(t.reshape(-1, 1))[0])

    def forward(self, xy: Tensor, t: Tensor | float) -> Tensor:
        kx = xy[..., :1] * self.k  # (B, K)
        ky = xy[..., 1:2] * self.k  # (B, K)
        tt = time_column(t, xy)  # (B, 1)
        return torch.cat([kx.sin(), kx.cos(), ky.sin(), ky.cos(), (tt - self.t_mean) / self.t_std], -1)


def time_column(t: Tensor | float, xy: Tensor) -> Tensor:
    """``t`` as a ``(B, 1)`` column matching ``xy (B, 2)``: a float, a 0-d tensor, ``(B,)``
    or ``(B, 1)``."""
    tt = torch.as_tensor(t, dtype=xy.dtype, device=xy.device)
    if tt.dim() == 0:
        return tt.expand(xy.shape[0], 1)
    if tt.shape[0] != xy.shape[0] or tt.numel() != xy.shape[0]:
        raise ValueError(f"t must be a scalar or have one value per point ({xy.shape[0]}); got shape {tuple(tt.shape)}")
    return tt.reshape(-1, 1)


def set_field_scales(features: PeriodicFeatures, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Shared part of the field models' ``set_scales``: check ``x (N, 3) = [x, y, t]``
    (or ``(N, 2)``, time scale left alone) and ``y (N, 2) = u``, set the time scale, and
    return ``(mean, spread)`` of ``u``, each ``(2,)``."""
    if x.dim() != 2 or x.shape[1] not in (2, 3) or y.dim() != 2 or y.shape != (x.shape[0], 2):
        raise ValueError(f"field scales need x (N, 3) = [x, y, t] and y (N, 2) = u; "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[1] == 3:
        features.set_time_scale(x[:, 2])
    return y.mean(0), spread(y)


def check_pair(x: Tensor, y: Tensor, dx: int, dy: int) -> None:
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != dx or y.shape != (x.shape[0], dy):
        raise ValueError(f"expected x (N, {dx}) and y (N, {dy}); got {tuple(x.shape)} and {tuple(y.shape)}")


class FieldMLP(FieldModel):
    """Unconstrained baseline velocity field ``u_θ(x, y, t)``: ``(B, 2), t -> (B, 2)``.

    ``u = μ_u + σ_u ⊙ net(features(x, y, t))``; its divergence is whatever the fit makes
    it, so fluid parcels carried by it gain or lose volume.
    """

    kind: ClassVar[str] = "field"
    coords: ClassVar[str] = "field"
    default_activation: ClassVar[str] = "tanh"
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, n_modes: int = 4, width: int = 64, depth: int = 2, activation: str = "tanh"):
        super().__init__()
        self.features = PeriodicFeatures(n_modes)
        self.net = make_mlp(self.features.out_dim, 2, width, depth, activation)
        self.register_buffer("u_mean", torch.zeros(2))
        self.register_buffer("u_std", torch.ones(2))

    @torch.no_grad()
    def set_scales(self, x: Tensor, y: Tensor) -> None:
        """Scales from training points ``x (N, 3) = [x, y, t]`` and velocities ``y (N, 2)``
        (positions need none: the features are already O(1))."""
        mean, std = set_field_scales(self.features, x, y)
        self.u_mean.copy_(mean)
        self.u_std.copy_(std)

    def forward(self, xy: Tensor, t: Tensor | float) -> Tensor:
        """``xy (B, 2)``, ``t`` scalar or ``(B,)`` -> ``u (B, 2)``."""
        return self.u_mean + self.u_std * self.net(self.features(xy, t))
