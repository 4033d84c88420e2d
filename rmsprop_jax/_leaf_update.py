"""All RMSProp arithmetic: one step for one parameter leaf.

:func:`rmsprop_jax.rmsprop`, :func:`rmsprop_jax.scale_by_rms` and every preset
only configure :func:`update_leaf` through :class:`RmsConfig`; nothing else in the
package computes a moment, a scaling or a momentum.

One step, in this order:

1. ``g = -g`` if ``maximize``.
2. Coupled weight decay: ``g = g + weight_decay * p`` (PyTorch's ``weight_decay``).
3. ``nu = decay * nu + (1 - decay) * |g|^2``; if ``centered``,
   ``mu = decay * mu + (1 - decay) * g``. Each is stored, and the rest of the step
   uses the value its storage's ``keep`` returns (a 16-bit state's rounded value; the
   8-bit state's average before rounding), but at least its new term:
   ``nu = max(nu, (1 - decay) * |g|^2)`` where that value was rounded (where it was not,
   the float sum is at least its term already, and no ``max`` is traced; with a rounding
   storage it bounds the step, below).
4. With ``bias_correction``, ``nu_hat = nu / (1 - decay^t)`` (and ``mu_hat``).
5. ``v = nu_hat``, or ``max(nu_hat - |mu_hat|^2, 0)`` if ``centered`` (clamped:
   rounding can make the difference negative, which would give NaN).
6. ``s = g / sqrt(v + eps)`` (``eps_in_sqrt``) or ``s = g / (sqrt(v) + eps)``;
   ``s = 0`` where ``g == 0``, also for ``eps = 0``.
7. Momentum: ``buf = momentum * buf + lr * s`` and ``u = -buf``
   (``lr_in_momentum``: optax, TF, Keras), or ``buf = momentum * buf + s`` and
   ``u = -lr * buf`` (PyTorch); Nesterov looks ahead with ``s + momentum * buf``.
   With ``caution``, the step direction keeps only the entries whose sign agrees
   with ``g``, rescaled by ``1 / max(fraction kept, 1e-3)`` (the buffer itself is
   kept whole). Without momentum ``u = -lr * s``; without a learning rate
   (``scale_by_rms``) ``u = s``.
8. Decoupled weight decay: ``u = u - lr * weight_decay * p`` (AdamW, Keras, timm).

With coupled weight decay, where ``lr`` scales the step (no momentum, or ``lr_in_momentum``),
``lr * s`` is computed as ``(lr * g) / sqrt(v + eps)`` (:func:`_scaled`): the sum
``g + weight_decay * p`` is then recomputed in each fusion rather than written out.

Each new state entry is stored (:mod:`rmsprop_jax._storage`: a float dtype, 16-bit
ones stochastically rounded, or 8-bit block-wise codes) as soon as it is computed,
and the later steps start from the stored value. The step asks a storage for nothing but
``load`` and ``keep``; with each ``keep`` it gives a majorant of the new value (interval
arithmetic on the magnitudes of its ingredients, e.g. ``decay * |nu| + (1 - decay) * |g|^2``)
that an 8-bit storage evaluates per block. With a float32 or wider state this changes
nothing; with a narrower one the update is a function of the state as saved, and XLA
need not keep a copy of the old state to compute it. Because of step 3's bound,
without momentum ``|u| <= lr / sqrt(1 - decay)`` whatever the storage rounded.

Centered, where the plan says ``nu_holds_variance`` (a storage whose lossiness calls for it,
:attr:`rmsprop_jax._storage_protocol.Storage.keeps_centered_variance`): ``nu`` holds the variance itself,
``nu = decay * nu + decay * (1 - decay) * |g - mu_old|^2`` (the same recursion as
``E[g^2] - E[g]^2`` in exact arithmetic, bounded below by its new term in the same
way), because the difference of two independently quantized averages cancels
catastrophically when the gradient's mean dominates its spread
(``benchmarks/NOTES.md``, "8-bit: centered RMSProp in 8 bits"). Float states keep the frameworks' form, so their parity
does not move. ``bias_correction`` would bring the subtraction back
(``nu_hat - mu_hat^2`` differs from ``v / (1 - decay^t)``); the factories refuse
that combination.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rmsprop_jax import _dtypes as dtypes
from rmsprop_jax._storage_protocol import Bounds, Bulk, LeafStorages, Magnitudes, Majorant, Scalar, Storage, Stored

Seeds = tuple[jax.Array | None, jax.Array | None, jax.Array | None]
"""The rounding seeds of ``nu``, ``mu`` and ``trace`` (``None``: round to nearest)."""


@dataclasses.dataclass(frozen=True)
class RmsConfig:
    """Hyperparameters of :func:`update_leaf`, as the factories validated them.

    Numbers may be Python scalars or (traced) arrays; flags are static.
    ``momentum=None`` means no momentum buffer.
    """

    decay: Scalar = 0.9
    eps: Scalar = 1e-8
    eps_in_sqrt: bool = True
    centered: bool = False
    bias_correction: bool = False
    momentum: Scalar | None = None
    nesterov: bool = False
    lr_in_momentum: bool = True
    decoupled_weight_decay: bool = False
    maximize: bool = False
    caution: bool = False

    @property
    def eps_may_be_zero(self) -> bool:
        """Whether ``v + eps`` can be zero, so that ``0 / 0`` must be guarded."""
        return not (isinstance(self.eps, (int, float)) and self.eps > 0)


class LeafStep(NamedTuple):
    """What :func:`update_leaf` returns for one leaf: the update in the gradient's
    dtype and the new state entries in their storage dtypes."""

    update: jax.Array
    nu: Stored
    mu: Stored | None
    trace: Stored | None


def _scalar(value: jax.typing.ArrayLike) -> Scalar:
    """A Python number as it is (it stays a weak-typed constant in the jaxpr); anything else as an array."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return jnp.asarray(value)


def _abs_sq(x: jax.Array) -> jax.Array:
    return (x.conj() * x).real if jnp.iscomplexobj(x) else x * x


def _average(
    storage: Storage,
    stored_old: Stored,
    old: jax.Array,
    weight: Scalar,
    added: jax.Array,
    seed: jax.Array | None,
    majorant: Majorant,
    bulk: Bulk | None = None,
) -> tuple[Stored, jax.Array, bool]:
    """``weight * old + added`` as the state stores it: the stored array, its value as stored, and
    whether that is the value itself (a storage that rounds nothing returns it: ``keep``'s contract).
    ``old`` is ``stored_old`` loaded; ``bulk`` a lower bound of the new value's second-largest
    magnitude (``keep``'s contract)."""
    value = added + weight * old
    stored, kept = storage.keep(value, seed, Bounds(majorant, bulk, stored_old))
    return stored, kept, kept is value


def _floored(kept: jax.Array, term: jax.Array, exact: bool, centered: bool = False) -> jax.Array:
    """Step 3's floor ``max(kept, term)``, where the storage rounded the new average. Where it did
    not, the float sum of non-negative terms is at least ``term`` already, and a no-op ``max`` would
    still cost ops per leaf in the traced program, duplicated by XLA into each fusion that reads
    the variance (trace and compile time).

    A centered step keeps a ``max`` with 0 there instead, as cheap as a ``max`` gets (it shares
    the clamp's constant): without any ``max`` before the subtraction ``nu - mu^2``, XLA:CPU
    compiles that subtraction differently on leaves of odd size, which moves the last bits of
    the recorded trajectories (``tests/test_trajectories.py``). ``benchmarks/NOTES.md``,
    "Trace and compile time", has the measurements."""
    if not exact:
        return jnp.maximum(kept, term)
    return jnp.maximum(kept, 0) if centered else kept


def _step_bound(config: RmsConfig, lr: Scalar) -> Scalar | None:
    """A bound of ``|lr * s|`` (``|s|`` without ``lr_in_momentum``) known before the step, or ``None``.

    Step 3's floor ``nu >= (1 - decay) * |g|^2`` (also after bias correction, which only
    divides by ``1 - decay^t <= 1``) gives ``|s| <= 1 / sqrt(1 - decay)``, for either eps
    placement. Not for ``centered`` (the variance can be far below ``|g|^2``), nor for a decay
    that may be 1 (traced, or 1 itself).
    """
    decay = config.decay
    if config.centered or not isinstance(decay, (int, float)) or decay >= 1:
        return None
    bound = (1 - decay) ** -0.5
    return bound * jnp.abs(lr) if config.lr_in_momentum else bound


def _cautious(direction: jax.Array, g: jax.Array) -> jax.Array:
    """Cautious optimizers (Liang et al. 2024): zero the entries that disagree with g."""
    agrees = ((direction.conj() * g).real > 0).astype(jnp.finfo(direction.dtype).dtype)
    return direction * (agrees / jnp.maximum(jnp.mean(agrees), 1e-3))


def _gradient(
    config: RmsConfig, grad: jax.Array, param: jax.Array | None, weight_decay: Scalar | None, compute: jnp.dtype
) -> jax.Array:
    """Steps 1 and 2: the gradient in the compute dtype, negated if ``maximize``, with coupled decay."""
    g = dtypes.cast(grad, dtypes.like_param(grad.dtype, compute))
    if config.maximize:
        g = -g
    if weight_decay is not None and not config.decoupled_weight_decay:
        assert param is not None, "weight decay needs the param"
        g = g + weight_decay * dtypes.cast(param, g.dtype)
    return g


def _stored_variance(
    config: RmsConfig,
    g: jax.Array,
    nu: Stored,
    mu: Stored | None,
    storages: LeafStorages,
    seeds: Seeds,
    compute: jnp.dtype,
) -> tuple[Stored, Stored, jax.Array]:
    """Steps 3 to 5 where ``nu`` holds the variance: ``nu = decay * nu + decay * (1 - decay) * |g - mu|^2``."""
    assert mu is not None and storages.mu is not None, "centered needs mu"
    assert not config.bias_correction, "the factories refuse bias_correction with a stored variance"
    decay = config.decay
    mu_old = storages.mu.load(mu, g.dtype)
    factor = decay * (1 - decay)
    term = factor * _abs_sq(g - mu_old)

    def nu_majorant(m: Magnitudes) -> jax.Array:  # |g - mu| <= |g| + |mu|
        return decay * m.of_state(nu) + factor * jnp.square(m.of_value(g) + m.of_state(mu))

    def nu_bulk(m: Magnitudes) -> jax.Array:  # per half: at least decay * nu's largest, and |g - mu| >= |g| - |mu|
        spread = jnp.maximum(m.halves_of_value(g) - jnp.expand_dims(m.of_state(mu), -1), 0)
        return jnp.maximum(decay * m.halves_of_state(nu), factor * jnp.square(spread))

    new_nu, nu_kept, exact = _average(
        storages.nu, nu, storages.nu.load(nu, compute), decay, term, seeds[0], nu_majorant, nu_bulk
    )
    new_mu = _average(storages.mu, mu, mu_old, decay, (1 - decay) * g, seeds[1], *_mu_bounds(decay, g, mu))[0]
    return new_nu, new_mu, _floored(nu_kept, term, exact)


def _mu_bounds(decay: Scalar, g: jax.Array, mu: Stored) -> tuple[Majorant, Bulk]:
    """The majorant and the bulk of ``mu = decay * mu + (1 - decay) * g``."""

    def majorant(m: Magnitudes) -> jax.Array:
        return decay * m.of_state(mu) + (1 - decay) * m.of_value(g)

    def bulk(m: Magnitudes) -> jax.Array:  # per half: |decay * mu + (1 - decay) * g| >= either term less the other
        return jnp.abs(decay * m.halves_of_state(mu) - (1 - decay) * m.halves_of_value(g))

    return majorant, bulk


def _moments(
    config: RmsConfig,
    g: jax.Array,
    nu: Stored,
    mu: Stored | None,
    storages: LeafStorages,
    count: jax.Array | None,
    seeds: Seeds,
    compute: jnp.dtype,
) -> tuple[Stored, Stored | None, jax.Array]:
    """Steps 3 to 5: the new ``nu`` (and ``mu``) as stored, and the variance ``v`` the step divides by."""
    if storages.nu_holds_variance:
        return _stored_variance(config, g, nu, mu, storages, seeds, compute)
    decay = config.decay
    term = (1 - decay) * _abs_sq(g)

    def nu_majorant(m: Magnitudes) -> jax.Array:
        return decay * m.of_state(nu) + (1 - decay) * jnp.square(m.of_value(g))

    def nu_bulk(m: Magnitudes) -> jax.Array:  # per half: each term is at most the sum of the two
        return jnp.maximum(decay * m.halves_of_state(nu), (1 - decay) * jnp.square(m.halves_of_value(g)))

    new_nu, nu_kept, exact = _average(
        storages.nu, nu, storages.nu.load(nu, compute), decay, term, seeds[0], nu_majorant, nu_bulk
    )
    nu_hat = _floored(nu_kept, term, exact, config.centered)
    if config.bias_correction:
        assert count is not None, "bias_correction needs the step count"
        correction = (1 - decay**count).astype(compute)
        nu_hat = nu_hat / correction
    if not config.centered:
        return new_nu, None, nu_hat
    assert mu is not None and storages.mu is not None, "centered needs mu"

    mu_old = storages.mu.load(mu, g.dtype)
    new_mu, mu_kept, _ = _average(storages.mu, mu, mu_old, decay, (1 - decay) * g, seeds[1], *_mu_bounds(decay, g, mu))
    mu_hat = mu_kept / correction if config.bias_correction else mu_kept
    return new_nu, new_mu, jnp.maximum(nu_hat - _abs_sq(mu_hat), 0)


def _scaled(config: RmsConfig, variance: jax.Array, g: jax.Array, factor: Scalar | None = None) -> jax.Array:
    """Step 6: ``s = g / sqrt(v + eps)`` or ``g / (sqrt(v) + eps)``, and 0 where ``g == 0``; times
    ``factor`` where one is given (the learning rate that scales the step).

    With a ``factor`` the gradient is scaled first, ``(factor * g) / rms``: where ``g`` is a sum
    (coupled weight decay, ``g + wd * p``), XLA then recomputes it in each fusion that reads it
    instead of writing it out and reading it twice, because no read of ``g`` depends on the new
    state (``benchmarks/NOTES.md``, "Float32: timm's recipe in the fewest fusions"). It rounds
    differently from ``factor * (g / rms)`` (about 1 ulp), so :func:`update_leaf` asks for it only
    where ``g`` is such a sum, and the steps without coupled decay keep optax's bits.
    """
    if config.eps_in_sqrt:
        inverse_rms = jax.lax.rsqrt(variance + config.eps)
    else:
        inverse_rms = 1 / (jnp.sqrt(variance) + config.eps)
    scaled = inverse_rms * g if factor is None else (factor * g) * inverse_rms
    if config.eps_may_be_zero:
        scaled = jnp.where(g == 0, jnp.zeros_like(scaled), scaled)
    return scaled


def _with_momentum(
    config: RmsConfig,
    step: jax.Array,
    g: jax.Array,
    trace: Stored | None,
    storage: Storage | None,
    lr: Scalar,
    seed: jax.Array | None,
) -> tuple[jax.Array, Stored]:
    """Step 7 with momentum: the update before decoupled decay, and the new buffer as stored.
    ``step`` is what the buffer accumulates: ``lr * s`` with ``lr_in_momentum``, else ``s``."""
    assert config.momentum is not None and trace is not None and storage is not None, "momentum needs the trace"
    momentum = config.momentum

    def majorant(m: Magnitudes) -> jax.Array:  # traced only by a storage that reads it
        bound = _step_bound(config, lr)
        return momentum * m.of_state(trace) + (m.of_value(step) if bound is None else bound)

    new_trace, trace_kept, _ = _average(storage, trace, storage.load(trace, g.dtype), momentum, step, seed, majorant)
    velocity = step + momentum * trace_kept if config.nesterov else trace_kept
    if config.caution:
        velocity = _cautious(velocity, g)
    return (-velocity if config.lr_in_momentum else -lr * velocity), new_trace


def update_leaf(
    config: RmsConfig,
    grad: jax.Array,
    nu: Stored,
    mu: Stored | None,
    trace: Stored | None,
    *,
    storages: LeafStorages,
    param: jax.Array | None = None,
    learning_rate: jax.typing.ArrayLike | None = None,
    weight_decay: jax.typing.ArrayLike | None = None,
    count: jax.Array | None = None,
    rounding_seeds: Seeds = (None, None, None),
) -> LeafStep:
    """One RMSProp step for one leaf; the module docstring gives the formula.

    Args:
      config: The configuration.
      grad: The gradient (any real or complex floating dtype).
      nu: Second-moment state, as stored (the variance where ``storages.nu_holds_variance``).
      mu: First-moment state (``centered``), else ``None``.
      trace: Momentum buffer (``config.momentum`` set), else ``None``.
      storages: How ``nu``, ``mu`` and ``trace`` are stored (the leaf's plan).
      param: The parameter; needed only with ``weight_decay``.
      learning_rate: The step's learning rate; ``None`` returns the scaled
        gradient without sign flip (``scale_by_rms``).
      weight_decay: This leaf's weight decay, ``None`` for none.
      count: The step number, from 1, for ``bias_correction``.
      rounding_seeds: Seeds of the stochastic rounding of ``nu``, ``mu`` and
        ``trace`` into a narrow storage (:func:`dtypes.rounding_seed`);
        ``None`` rounds to nearest.

    Returns:
      A :class:`LeafStep`: the update and the state entries as stored.
    """
    compute = dtypes.compute_dtype(grad.dtype, storages.nu.dtype)
    weight_decay = None if weight_decay is None else _scalar(weight_decay)
    g = _gradient(config, grad, param, weight_decay, compute)
    new_nu, new_mu, variance = _moments(config, g, nu, mu, storages, count, rounding_seeds, compute)
    if learning_rate is None:
        return LeafStep(dtypes.cast(_scaled(config, variance, g), grad.dtype), new_nu, new_mu, None)
    lr = _scalar(learning_rate)
    if not isinstance(lr, (int, float)):
        lr = dtypes.cast(lr, compute)
    lr_scales_step = config.momentum is None or config.lr_in_momentum
    if lr_scales_step and weight_decay is not None and not config.decoupled_weight_decay:
        step = _scaled(config, variance, g, lr)
    else:
        scaled = _scaled(config, variance, g)
        step = lr * scaled if lr_scales_step else scaled
    new_trace = None
    if config.momentum is None:
        update = -step
    else:
        update, new_trace = _with_momentum(config, step, g, trace, storages.trace, lr, rounding_seeds[2])
    if weight_decay is not None and config.decoupled_weight_decay:
        assert param is not None, "weight decay needs the param"
        update = update - lr * weight_decay * dtypes.cast(param, g.dtype)
    return LeafStep(dtypes.cast(update, grad.dtype), new_nu, new_mu, new_trace)
