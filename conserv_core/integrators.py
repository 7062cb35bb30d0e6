"""Batched fixed-step integrators, shared by the true systems and every learned model.

An integrator is a factory: ``step = rk4(f, dt)`` returns ``step(z, t) -> z_next`` for a
vector field ``f(z, t) -> dz/dt`` with ``z`` of shape ``(B, D)``. :func:`rollout` and
:func:`solve` drive any of them, so truth and models are integrated by the same code.

Orders (fitted in ``tests/test_integrators.py``): euler 1, rk4 4, leapfrog 2,
implicit midpoint 2. Leapfrog and implicit midpoint are symplectic: on a Hamiltonian
system their energy error stays bounded instead of growing.

References:
    Hairer, Lubich, Wanner, *Geometric Numerical Integration*, 2nd ed. (2006), ch. II & VI.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Callable, Iterator, Protocol

import torch

Tensor = torch.Tensor
VectorField = Callable[[Tensor, float], Tensor]  # (z (B, D), t) -> dz/dt (B, D)
Step = Callable[[Tensor, float], Tensor]  # (z (B, D), t) -> z after one step (B, D)


class Stopped(Exception):
    """A long loop saw its stop signal and ended early.

    Deliberately not a :class:`RuntimeError`: the trainer reports a ``RuntimeError`` as a
    failed run ("error"); a stop is the user's choice and is reported as ``"stopped"``.
    """


#: the stop check of the code running now (see :func:`stopping`); a ContextVar so each
#: thread (each dashboard run) has its own and none can stop another's loops
_STOP: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar("conserv_stop", default=None)


@contextlib.contextmanager
def stopping(should_stop: Callable[[], bool] | None) -> Iterator[None]:
    """Within the block, every long loop (:func:`rollout`, :func:`solve`, the flow
    solver) calls ``should_stop()`` once per step and raises :class:`Stopped` when it
    returns true. This reaches loops that cannot take an argument, such as the flow
    solver behind its cache or a system's data generation.

    Args:
        should_stop: e.g. ``threading.Event().is_set``; None clears an outer check.
    """
    token = _STOP.set(should_stop)
    try:
        yield
    finally:
        _STOP.reset(token)


def check_stop(should_stop: Callable[[], bool] | None = None) -> None:
    """Raise :class:`Stopped` if ``should_stop`` (default: the one set by
    :func:`stopping`) says so. Costs one call, well under a microsecond."""
    fn = should_stop if should_stop is not None else _STOP.get()
    if fn is not None and fn():
        raise Stopped("stopped")


class Factory(Protocol):
    def __call__(self, f: VectorField, dt: float) -> Step: ...


def euler(f: VectorField, dt: float) -> Step:
    """Explicit Euler, order 1. Not symplectic: energy grows on oscillators."""

    def step(z: Tensor, t: float) -> Tensor:
        return z + dt * f(z, t)

    return step


def rk4(f: VectorField, dt: float) -> Step:
    """Classical fourth-order Runge–Kutta. Accurate, but not symplectic: energy drifts
    slowly (at order dt⁴) instead of oscillating."""

    def step(z: Tensor, t: float) -> Tensor:
        k1 = f(z, t)
        k2 = f(z + 0.5 * dt * k1, t + 0.5 * dt)
        k3 = f(z + 0.5 * dt * k2, t + 0.5 * dt)
        k4 = f(z + dt * k3, t + dt)
        return z + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)

    return step


def leapfrog(f: VectorField, dt: float) -> Step:
    """Störmer–Verlet (kick–drift–kick), order 2, symplectic for separable
    Hamiltonians ``H = T(p) + V(q)``, i.e. when ``dq/dt`` depends on ``p`` only and
    ``dp/dt`` on ``q`` only. The state is ``z = [q, p]`` split in two equal halves.

    On a non-separable field (a general learned H) it is still a consistent method but
    loses symplecticity and its second order; use :func:`implicit_midpoint` there.
    """

    def step(z: Tensor, t: float) -> Tensor:
        d = z.shape[-1] // 2
        q, p = z[..., :d], z[..., d:]
        p_half = p + 0.5 * dt * f(z, t)[..., d:]
        q_new = q + dt * f(torch.cat([q, p_half], -1), t + 0.5 * dt)[..., :d]
        p_new = p_half + 0.5 * dt * f(torch.cat([q_new, p_half], -1), t + dt)[..., d:]
        return torch.cat([q_new, p_new], -1)

    return step


def implicit_midpoint(f: VectorField, dt: float, tol: float | None = None, max_iter: int = 100) -> Step:
    """Implicit midpoint rule ``z' = z + dt f((z + z')/2, t + dt/2)``, order 2, symplectic
    for *any* Hamiltonian vector field and exactly conserving every quadratic invariant.

    The implicit equation is solved by fixed-point iteration (converges when
    ``dt * Lip(f) < 2``) until the update is below ``tol`` relative to ``1 + |z|``;
    ``tol`` defaults to 100 machine epsilons of the state's dtype (at 10 the iteration
    stalls at round-off on an ordinary pendulum step and never meets it). Raises if it does not
    converge, rather than silently returning an unconverged state. A field that is itself
    non-finite (a blown-up model) gives a non-finite step instead, for :func:`rollout` to
    report; iterates that overflow because the iteration diverges still raise.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1; got {max_iter}")

    def step(z: Tensor, t: float) -> Tensor:
        eps = tol if tol is not None else 100 * torch.finfo(z.dtype).eps
        tm = t + 0.5 * dt
        z_new = z + dt * f(z, tm)  # Euler predictor
        if not torch.isfinite(z_new).all():
            return z_new  # the field is non-finite at z
        for _ in range(max_iter):
            mid = 0.5 * (z + z_new)
            k = f(mid, tm)
            z_next = z + dt * k
            err = float(((z_next - z_new).abs() / (1.0 + z_next.abs())).max())
            z_new = z_next
            if err <= eps:
                return z_new
            if not math.isfinite(err):
                if torch.isfinite(mid).all() and not torch.isfinite(k).all():
                    return z_new  # the field is non-finite at a finite point of this step
                break  # the iterates overflowed (float32 does so quickly): divergence
        raise RuntimeError(
            f"implicit midpoint did not converge in {max_iter} iterations at t={t:.4g} "
            f"(last update {err:.2e}); reduce dt (now {dt})"
        )

    return step


INTEGRATORS: dict[str, Factory] = {
    "euler": euler,
    "rk4": rk4,
    "leapfrog": leapfrog,
    "implicit_midpoint": implicit_midpoint,
}
#: order of accuracy of each method (checked by a fitted dt sweep in the tests)
ORDER = {"euler": 1, "rk4": 4, "leapfrog": 2, "implicit_midpoint": 2}
SYMPLECTIC = {"euler": False, "rk4": False, "leapfrog": True, "implicit_midpoint": True}


def get(name: str) -> Factory:
    """The integrator factory called ``name``; refuses unknown names listing the valid ones."""
    try:
        return INTEGRATORS[name]
    except KeyError:
        raise ValueError(f"integrator must be one of {', '.join(INTEGRATORS)}; got {name!r}") from None


def rollout(f: VectorField, z0: Tensor, dt: float, n_steps: int, method: str = "rk4",
            t0: float = 0.0, every: int = 1, stop_on_nonfinite: bool = True,
            should_stop: Callable[[], bool] | None = None) -> tuple[Tensor, Tensor]:
    """Integrate ``n_steps`` steps of size ``dt`` from ``z0 (B, D)``.

    Returns ``(t (T,), z (T, B, D))`` with every ``every``-th state saved, the first being
    ``z0`` itself. If the state becomes non-finite the rollout stops there and the rest of
    the output is filled with NaN, so a blown-up model gives NaN drift, not an exception.

    Args:
        should_stop: checked before every step (default: the check set by
            :func:`stopping`, if any); when it returns true the rollout raises
            :class:`Stopped`. Once a step: a step costs tens of microseconds or more, the
            check well under one, and a slow step (a learned LNN, implicit midpoint) still
            ends within one step of the signal.
    """
    if n_steps < 0 or every < 1:
        raise ValueError(f"n_steps must be >= 0 and every >= 1; got {n_steps}, {every}")
    step = get(method)(f, dt)
    stop = should_stop if should_stop is not None else _STOP.get()
    n_out = n_steps // every + 1
    out = z0.new_full((n_out,) + tuple(z0.shape), float("nan"))
    out[0] = z0
    z = z0
    for i in range(1, n_steps + 1):
        if stop is not None and stop():
            raise Stopped(f"rollout stopped at step {i - 1} of {n_steps}")
        z = step(z, t0 + (i - 1) * dt)
        if i % every == 0:
            out[i // every] = z
            if stop_on_nonfinite and not torch.isfinite(z).all():
                break
    t = t0 + dt * every * torch.arange(n_out, dtype=z0.dtype, device=z0.device)
    return t, out


def solve(f: VectorField, z0: Tensor, t: Tensor, method: str = "rk4", max_dt: float = 1e-2,
          should_stop: Callable[[], bool] | None = None) -> Tensor:
    """States at the increasing times ``t (T,)`` (``t[0]`` is the start), stepping with the
    largest uniform step ``<= max_dt`` that lands on every requested time.
    Returns ``(T, B, D)``. ``should_stop`` as in :func:`rollout` (raises :class:`Stopped`).
    """
    step_f = get(method)
    stop = should_stop if should_stop is not None else _STOP.get()
    out = [z0]
    z = z0
    tt = t.detach().cpu().double().tolist()
    for a, b in zip(tt[:-1], tt[1:]):
        n = max(1, math.ceil((b - a) / max_dt - 1e-9))
        h = (b - a) / n
        step = step_f(f, h)
        for i in range(n):
            if stop is not None and stop():
                raise Stopped(f"solve stopped at t={a + i * h:.4g}")
            z = step(z, a + i * h)
        out.append(z)
    return torch.stack(out)
