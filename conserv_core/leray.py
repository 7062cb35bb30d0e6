"""Leray projection of a learned velocity field: its divergence-free part, as a Fourier series.

Every smooth periodic velocity field splits uniquely (Helmholtz–Leray) into a
divergence-free part and a gradient, ``u = P u + ∇φ`` with ``∇·(P u) = 0``. On the
periodic square the projector ``P`` is diagonal in Fourier space,

    (P u)^_k = û_k − k (k·û_k) / |k|²   (k ≠ 0),    (P u)^_0 = û_0,

so ``k·(P u)^_k = 0`` mode by mode, and the mean flow (``k = 0``), which is
divergence-free, is kept. Chorin's projection method applies exactly this step to the
provisional velocity of every time step; here it is applied once per time ``t`` to a
learned field ``u_θ(·, t)``: sample it on the flow's ``n × n`` grid, ``rfft2``, project,
keep the modes the truth keeps (the 2/3 rule, ``|k_x|, |k_y| ≤ k_max``) and evaluate
``Re Σ c_k e^{i k·x}`` at any point with the same series code as
:class:`~conserv_core.systems.flow.Flow`. The result is divergence-free at *every*
point, not only on the grid, so parcels carried by it keep their volume (``J ≡ 1``) for
any weights: a hard constraint imposed after training instead of built into the network.
The price is that ``P u_θ`` is no longer the network's field: :meth:`LerayField.projection_error`
says by how much it differs on the grid.

References:
    Leray, "Sur le mouvement d'un liquide visqueux emplissant l'espace", Acta Math. 63
    (1934) (the projector onto divergence-free fields).
    Chorin, "Numerical solution of the Navier–Stokes equations", Math. Comp. 22 (1968)
    (the projection method).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable, NamedTuple

import torch

from conserv_core.systems.flow import Flow, series_coefficients, series_phases, series_sum, spectral_grid

Tensor = torch.Tensor
FieldModel = Callable[[Tensor, "Tensor | float"], Tensor]  # (xy (B, 2), t) -> u (B, 2)


class _Projected(NamedTuple):
    coef: Tensor  # (3, Ky, Kx) complex128: (u, v, ∇·u) of P u, see series_coefficients
    error: float  # rms(P u − u) / rms(u) on the grid


class LerayField:
    """P u_θ: the divergence-free part of a learned velocity model, as a truncated Fourier series.

    ``velocity`` and ``divergence`` have the signature :func:`~conserv_core.systems.flow.carry`
    wants, so ``flow.carry(lf.velocity, lf.divergence)`` carries the dye through the
    projected field; its mass stays 1 to round-off whatever the weights.

    The projected coefficients are computed once per float time and kept in a small LRU
    cache (RK4 asks for each mid-step time twice and every step end again at the next
    step's start). The cache is dropped when any parameter or buffer of ``model`` changes
    in place (an optimiser step, ``load_state_dict``), so a field kept across training
    never serves stale coefficients; :meth:`clear` drops it by hand.

    Args:
        model: any velocity field ``model(xy (B, 2), t float) -> (B, 2)``, e.g. an
            ``nn.Module`` from :func:`conserv_core.models.build`. It is sampled under
            ``torch.no_grad()`` on the flow's grid, so it should be 2π-periodic (every field
            model here is); a non-periodic field rings at the edges.
        flow: the :class:`~conserv_core.systems.flow.Flow` whose grid (``flow.grid`` at
            construction) sets the sampling and the kept modes.
        dtype: the dtype the model is sampled in (the model's own); the FFT, projection
            and series are float64 whatever it is.
        device: where the model is sampled and the coefficients live (default: the
            device of the model's first parameter or buffer, else CPU).
        cache_size: how many times' coefficients to keep.
    """

    def __init__(self, model: FieldModel, flow: Flow, dtype: torch.dtype = torch.float64, device=None,
                 cache_size: int = 8):
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating torch dtype; got {dtype!r}")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise ValueError(f"cache_size must be an integer >= 1; got {cache_size!r}")
        self.model = model
        self.flow = flow
        self.dtype = dtype
        self._tensors = _state_tensors(model)
        if device is None:
            device = self._tensors[0].device if self._tensors else torch.device("cpu")
        self.device = torch.device(device)
        self.cache_size = cache_size
        self.n = flow.grid
        self.spectral = spectral_grid(self.n, self.device)
        self._points = flow.grid_points(dtype, self.device)  # (n*n, 2) in field order
        _, self.kx, self.ky = series_coefficients(
            torch.zeros(self.n, self.n // 2 + 1, dtype=torch.complex128, device=self.device), self.spectral)
        self._cache: OrderedDict[float, _Projected] = OrderedDict()
        self._stamp = self._weights_stamp()
        self._last_eval: tuple | None = None  # (xy, xy._version, t, (B, 3) values)
        #: how many times the model was sampled on the grid (cache misses), for benchmarks
        self.n_samples = 0

    # -- coefficients ---------------------------------------------------------------------
    def coefficients(self, t: float) -> Tensor:
        """The projected spectral coefficients at time ``t``: ``(3, Ky, Kx)`` complex128.

        Rows are ``(u, v, ∇·u)`` of ``P u_θ(·, t)`` on the kept modes ``k_x = self.kx``,
        ``k_y = self.ky``, with the rfft half-plane weights and ``1/n²`` folded in, so that
        ``f(x, y) = Re Σ C e^{i(k_x x + k_y y)}``. The divergence row is ``i k·ĉ_k``,
        computed, not assumed: it is round-off. Cached by float ``t``; do not modify.
        """
        return self._projected(_float_time(t)).coef

    def projection_error(self, t: float) -> float:
        """What the projection changed at time ``t``: ``rms(P u − u) / rms(u)`` on the grid.

        ``P u`` here is the field :meth:`velocity` evaluates (projected *and* truncated to
        the kept modes), so this is the whole price of the constraint; for a smooth field
        resolved by the grid the truncation part is negligible and what remains is the
        network's gradient part ``∇φ``. 0 for a zero field.
        """
        return self._projected(_float_time(t)).error

    def clear(self) -> None:
        """Drop every cached coefficient set (after changing the model out of sight)."""
        self._cache.clear()
        self._last_eval = None
        self._stamp = self._weights_stamp()

    def _weights_stamp(self) -> tuple:
        return tuple((p.data_ptr(), p._version) for p in self._tensors)

    def _check_weights(self) -> None:
        stamp = self._weights_stamp()
        if stamp != self._stamp:
            self._cache.clear()
            self._last_eval = None
            self._stamp = stamp

    def _projected(self, t: float) -> _Projected:
        self._check_weights()
        hit = self._cache.get(t)
        if hit is not None:
            self._cache.move_to_end(t)
            return hit
        entry = self._project(t)
        self._cache[t] = entry
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return entry

    def _project(self, t: float) -> _Projected:
        g, n = self.spectral, self.n
        with torch.no_grad():
            u = self.model(self._points, t)  # (n*n, 2)
        if u.shape != (n * n, 2):
            raise ValueError(f"the model must map xy (B, 2) to u (B, 2); got shape {tuple(u.shape)} for B = {n * n}")
        self.n_samples += 1
        u = u.detach().T.reshape(2, n, n).double()  # velocity grid (2, n, n)
        uh = g.forward(u)  # (2, n, m)
        # P û = û − k (k·û)/|k|² = û + (ik)(ik·û)/|k|²; inv_k2 is 0 at k = 0 (mean flow kept).
        # The derivative wavenumbers are zero at Nyquist, which the 2/3 rule drops anyway.
        div_u = g.ikx * uh[0] + g.iky * uh[1]  # (n, m)
        ph = torch.stack([uh[0] + g.ikx * div_u * g.inv_k2, uh[1] + g.iky * div_u * g.inv_k2])  # (2, n, m)
        div_p = g.ikx * ph[0] + g.iky * ph[1]  # (n, m): round-off on every mode
        coef, _, _ = series_coefficients(torch.cat([ph, div_p[None]]), g)  # (3, Ky, Kx)
        pu = g.inverse(g.mask * ph)  # (2, n, n): the series at the grid points
        ref = float(u.pow(2).mean().sqrt())
        err = float((pu - u).pow(2).mean().sqrt()) / ref if ref > 0 else 0.0
        return _Projected(coef, err)

    # -- point evaluation -----------------------------------------------------------------
    def _evaluate(self, xy: Tensor, t: float | Tensor) -> Tensor:
        """``(u, v, ∇·u)`` of ``P u`` at points: ``xy (B, 2)``, ``t`` float or ``(B,)`` -> ``(B, 3)`` float64.

        :func:`~conserv_core.systems.flow.carry` asks for the velocity and then the
        divergence at the same points and time, so the last result is reused when both
        match (same tensor object, unmodified, same float time, same weights).
        """
        if xy.dim() != 2 or xy.shape[-1] != 2:
            raise ValueError(f"xy must have shape (B, 2); got {tuple(xy.shape)}")
        if isinstance(t, Tensor) and t.dim() == 0:
            t = float(t)
        self._check_weights()
        version = None if xy.is_inference() else xy._version
        last = self._last_eval
        if (last is not None and isinstance(t, (int, float)) and last[0] is xy and version is not None
                and last[1] == version and last[2] == float(t)):
            return last[3]
        if isinstance(t, (int, float)):
            t = _float_time(t)
            out = self._series(xy, self.coefficients(t))
            self._last_eval = (xy, version, t, out) if version is not None else None
            return out
        tt = torch.as_tensor(t)
        if tt.shape != (xy.shape[0],):
            raise ValueError(f"t must be a float or have shape (B,) = ({xy.shape[0]},); got {tuple(tt.shape)}")
        times, which = torch.unique(tt.detach().double().cpu(), return_inverse=True)
        ex, ey = series_phases(xy, *self._k_on(xy.device))
        out = torch.empty(xy.shape[0], 3, dtype=torch.float64, device=xy.device)
        which = which.to(xy.device)
        for j, tj in enumerate(times.tolist()):
            sel = (which == j).nonzero().squeeze(-1)
            out[sel] = series_sum(ex[sel], ey[sel], self.coefficients(tj).to(xy.device))
        self._last_eval = None
        return out

    def _k_on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        return self.kx.to(device), self.ky.to(device)

    def _series(self, xy: Tensor, coef: Tensor) -> Tensor:
        ex, ey = series_phases(xy, *self._k_on(xy.device))
        return series_sum(ex, ey, coef.to(xy.device))

    def velocity(self, xy: Tensor, t: float | Tensor) -> Tensor:
        """``P u_θ`` at arbitrary points: ``xy (B, 2)``, ``t`` float or ``(B,)`` -> ``(B, 2)``,
        in the dtype and on the device of ``xy``."""
        return self._evaluate(xy, t)[:, :2].to(xy.dtype)

    def divergence(self, xy: Tensor, t: float | Tensor) -> Tensor:
        """``∇·(P u_θ)`` at points, ``(B, 2) -> (B,)``, evaluated spectrally as the series of
        ``i k·ĉ_k``: round-off, since the projection makes ``k·ĉ_k = 0`` on every kept mode."""
        return self._evaluate(xy, t)[:, 2].to(xy.dtype)


def _state_tensors(model) -> list[Tensor]:
    """The parameters and buffers of ``model`` if it is an ``nn.Module``, else none."""
    if isinstance(model, torch.nn.Module):
        return list(model.parameters()) + list(model.buffers())
    return []


def _float_time(t) -> float:
    if isinstance(t, Tensor):
        if t.numel() != 1:
            raise ValueError(f"expected a single time; got shape {tuple(t.shape)}")
        t = t.item()
    t = float(t)
    if not math.isfinite(t):
        raise ValueError(f"t must be finite; got {t}")
    return t
