"""The public factories: :func:`rmsprop` and :func:`scale_by_rms`.

Both validate their arguments, build an :class:`~rmsprop_jax._leaf_update.RmsConfig`
and hand it to :func:`_rms_transformation`, which maps
:func:`~rmsprop_jax._leaf_update.update_leaf` over the leaves of a pytree. The
presets call :func:`build_rmsprop` with their own configuration and argument names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypeAlias

import jax
import jax.numpy as jnp
import optax

from rmsprop_jax import _dtypes as dtypes
from rmsprop_jax import _packing as packing
from rmsprop_jax import _storage as storage
from rmsprop_jax import _validation as validation
from rmsprop_jax._dtypes import ResolvedStateDtype, StateDtype
from rmsprop_jax._leaf_update import LeafStep, LeafStorages, RmsConfig, Scalar, update_leaf
from rmsprop_jax._state import RmsPropState

MaskOrFn: TypeAlias = Any | Callable[[optax.Params], Any] | None
"""optax's weight-decay mask type (``optax.MaskOrFn``): a pytree of bools, a callable returning one, or None."""


def _check_config(
    config: RmsConfig, initial_scale: Scalar, state_dtype: StateDtype, names: Mapping[str, str]
) -> ResolvedStateDtype:
    """Validates what every factory shares; returns the resolved state dtype.

    Errors name each argument as ``names`` maps it (a preset's own names), else as
    :func:`rmsprop` spells it.
    """

    def name(key: str) -> str:
        return names.get(key, key)

    validation.check_interval(name("decay"), config.decay, 0.0, 1.0)
    validation.check_interval(name("eps"), config.eps, 0.0)
    validation.check_interval(name("initial_scale"), initial_scale, 0.0)
    for flag in (
        "eps_in_sqrt",
        "centered",
        "bias_correction",
        "nesterov",
        "lr_in_momentum",
        "decoupled_weight_decay",
        "maximize",
        "caution",
    ):
        validation.check_bool(name(flag), getattr(config, flag))
    if config.caution and config.momentum is None:
        raise ValueError(
            f"Invalid {name('caution')} value: True (caution masks the momentum direction; momentum is None)"
        )
    if config.momentum is not None:
        validation.check_interval(name("momentum"), config.momentum, 0.0, 1.0, high_inclusive=False)
    elif config.nesterov:
        raise ValueError(f"Invalid {name('nesterov')} value: True (nesterov needs momentum; momentum is None)")
    if config.bias_correction and validation.any_equal(config.decay, 1.0):
        raise ValueError(
            f"Invalid {name('decay')} value: 1.0 (bias_correction divides by 1 - decay**t: decay must be < 1)"
        )
    if config.centered and validation.any_equal(config.eps, 0.0):
        raise ValueError(
            f"Invalid {name('eps')} value: 0.0 (centered needs {name('eps')} > 0: the variance estimate of a "
            "constant gradient is exactly 0, and g / 0 has no finite value)"
        )
    resolved = dtypes.resolve_state_dtype(name("state_dtype"), state_dtype)
    if resolved == dtypes.EIGHT_BIT and config.centered and config.bias_correction:
        raise ValueError(
            f"Invalid {name('bias_correction')} value: True (with {name('centered')}=True and "
            f"{name('state_dtype')}='8bit' the state keeps the variance itself, and bias correction would "
            "subtract two corrected averages again, the cancellation the stored variance avoids: use a "
            "float state_dtype, or centered without bias_correction)"
        )
    return resolved


def _present(count: jax.Array | None) -> jax.Array:
    """The state's step count where the configuration keeps one (schedules, bias correction, rounding)."""
    assert count is not None, "this configuration keeps a step count"
    return count


def _structure_error(what: str, expected: Any, got: Any) -> ValueError:
    return ValueError(
        f"The {what} tree does not match the optimizer state's tree "
        f"(nothing is broadcast).\n  state: {expected}\n  {what}: {got}"
    )


def _leaf_path(tree: Any, index: int) -> str:
    path, _ = jax.tree_util.tree_flatten_with_path(tree)[0][index]
    return jax.tree_util.keystr(path) or "<root>"


def _decayed_leaves(mask: MaskOrFn, params: optax.Params, num_leaves: int) -> list[bool]:
    """Per-leaf flags from an optax-style mask: a pytree of bools (same structure
    as the params, or a prefix of it) or a callable returning one."""
    if mask is None:
        return [True] * num_leaves
    mask_tree = mask(params) if callable(mask) else mask
    try:
        expanded = jax.tree.map(lambda m, sub: jax.tree.map(lambda _: m, sub), mask_tree, params)
    except ValueError as error:
        raise ValueError(
            f"weight_decay_mask must be a pytree of bools with the params' structure (or a prefix of it): {error}"
        ) from None
    flags = jax.tree.leaves(expanded)
    for flag in flags:
        if not isinstance(flag, bool):
            raise ValueError(f"weight_decay_mask leaves must be Python bools, got {flag!r}")
    return flags


def _state_tree(params: optax.Params, fill: Scalar, signed: bool, state_dtype: ResolvedStateDtype) -> optax.Updates:
    return jax.tree.map(lambda p: storage.initial(p, fill, signed, state_dtype), params)


def _refuse_unsupported_params(params: optax.Params, state_dtype: ResolvedStateDtype) -> None:
    """The 8-bit state refuses complex params and optax's ``tree_map_params`` placeholder, by name."""
    if state_dtype != dtypes.EIGHT_BIT:
        return
    if _is_placeholder(params):
        raise ValueError(
            "optax.tree_map_params cannot map an 8-bit RMSProp state: its leaves are uint8 codes and "
            "float32 block scales, not arrays shaped like the params. Map "
            "rmsprop_jax.state_as_float32(state) instead, or convert the state with "
            "rmsprop_jax.convert_state(state, like) to a float state_dtype first."
        )
    for path, param in jax.tree_util.tree_flatten_with_path(params)[0]:
        if jnp.iscomplexobj(param):
            raise ValueError(
                f"Invalid state_dtype value: '8bit' for the complex param {jax.tree_util.keystr(path) or '<root>'} "
                f"({param.dtype}): the 8-bit state stores real codes; use state_dtype=None, 'float32' or "
                "'bfloat16' for complex params (optax.multi_transform can give them their own optimizer)"
            )


def _leaf_storages(nu: storage.Stored, mu: storage.Stored | None, trace: storage.Stored | None) -> LeafStorages:
    return LeafStorages(
        storage.storage_of(nu, signed=False),
        None if mu is None else storage.storage_of(mu, signed=True),
        None if trace is None else storage.storage_of(trace, signed=True),
    )


class _StateLayout(NamedTuple):
    """A state's arrays as ``update`` steps them: per group of the plan, or per leaf (groups of one)."""

    plan: packing.PackingPlan | None
    groups: tuple[tuple[int, ...], ...]
    shapes: list[tuple[int, ...]]
    nu: list[Any]
    mu: list[Any]
    trace: list[Any]

    @classmethod
    def of(cls, state: RmsPropState, updates: optax.Updates, config: RmsConfig) -> _StateLayout:
        """The layout of ``state``; raises when the gradient tree is not the params' tree."""
        treedef = jax.tree.structure(updates)
        plan = state.nu.plan if isinstance(state.nu, packing.Packed) else None
        if plan is not None:
            expected, got, groups = plan.treedef, packing.structure(updates), plan.groups
        else:
            expected = jax.tree.structure(state.nu, is_leaf=storage.is_stored_leaf)
            got, groups = treedef, tuple((index,) for index in range(treedef.num_leaves))
        if got != expected:
            raise _structure_error("gradient", expected, treedef)

        def field(tree: Any, present: bool) -> list[Any]:
            if not present:
                return [None] * len(groups)
            if isinstance(tree, packing.Packed):
                return [storage.as_stored(packing.value_of(x)) for x in tree.groups]
            return storage.leaves_of(treedef, tree)

        nus = field(state.nu, True)
        shapes = list(plan.shapes) if plan is not None else [storage.shape_of(nu) for nu in nus]
        return cls(
            plan,
            groups,
            shapes,
            nus,
            field(state.mu, config.centered),
            field(state.trace, config.momentum is not None),
        )


def _is_placeholder(params: optax.Params) -> bool:
    """Whether ``init`` was called by ``optax.tree_map_params``, with a placeholder that has no leaves."""
    return type(params).__name__ == "_ParamsPlaceholder"


def _refuse_placeholder(params: optax.Params) -> None:
    if _is_placeholder(params):
        raise ValueError(
            "optax.tree_map_params cannot map a state built with pack_small_leaves=True: its layout "
            "(which leaves share a stacked group) depends on the params, which tree_map_params hides. Map "
            "rmsprop_jax.state_as_float32(state) instead (per leaf, in the params' structure), or build the "
            "optimizer with pack_small_leaves=False."
        )


def _packed_state(state: RmsPropState, plan: packing.PackingPlan, params: optax.Params) -> RmsPropState:
    """``state`` (per leaf) in ``plan``'s layout; each group placed as its members' sharding says."""
    param_leaves = plan.treedef.flatten_up_to(params)

    def field(tree: Any) -> Any:
        return None if tree is None else packing.pack(plan, plan.treedef.flatten_up_to(tree), param_leaves)

    return RmsPropState(count=state.count, nu=field(state.nu), mu=field(state.mu), trace=field(state.trace))


def _rms_transformation(
    config: RmsConfig,
    *,
    initial_scale: Scalar,
    state_dtype: ResolvedStateDtype,
    learning_rate: optax.ScalarOrSchedule | None = None,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    weight_decay_mask: MaskOrFn = None,
    pack_small_leaves: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """Maps :func:`update_leaf` over a pytree (or over its packed groups), with the state layout it needs."""
    rounding = dtypes.needs_stochastic_rounding(state_dtype)
    has_count = config.bias_correction or rounding or callable(learning_rate) or callable(weight_decay)
    applies_weight_decay = not (isinstance(weight_decay, (int, float)) and weight_decay == 0)
    largest_packed = packing.largest_packed(config.centered, config.momentum is not None and learning_rate is not None)

    def plan_for(params: optax.Params, nu: Any) -> packing.PackingPlan:
        treedef = packing.structure(params)
        decays = (
            _decayed_leaves(weight_decay_mask, params, treedef.num_leaves)
            if applies_weight_decay
            else [True] * treedef.num_leaves
        )
        nus = [storage.as_stored(packing.value_of(x)) for x in treedef.flatten_up_to(nu)]

        def key(index: int, leaf: Any) -> Any:
            if isinstance(nus[index], storage.Quantized):
                return None
            sharding = packing.sharding_key(leaf)
            if sharding is None:
                return None
            return (jnp.dtype(packing.value_of(leaf).dtype), storage.dtype_of(nus[index]), decays[index], sharding)

        return packing.plan_for(params, largest_packed, key)

    def init_fn(params: optax.Params) -> RmsPropState:
        _refuse_unsupported_params(params, state_dtype)
        if pack_small_leaves:
            _refuse_placeholder(params)
        state = RmsPropState(
            count=jnp.zeros([], jnp.int32) if has_count else None,
            nu=_state_tree(params, initial_scale, False, state_dtype),
            mu=_state_tree(params, 0, True, state_dtype) if config.centered else None,
            trace=_state_tree(params, 0, True, state_dtype) if config.momentum is not None else None,
        )
        if pack_small_leaves:
            plan = plan_for(params, state.nu)
            if plan.packs:
                return _packed_state(state, plan, params)
        return state

    def update_fn(
        updates: optax.Updates,
        state: RmsPropState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, RmsPropState]:
        del extra_args
        grads, treedef = jax.tree.flatten(updates)
        layout = _StateLayout.of(state, updates, config)
        for index, grad in enumerate(grads):
            if jnp.shape(grad) != layout.shapes[index]:
                raise ValueError(
                    f"Gradient leaf {_leaf_path(updates, index)} has shape {jnp.shape(grad)} but its "
                    f"optimizer state has shape {layout.shapes[index]} (nothing is broadcast)."
                )
        groups, nus, mus, traces = layout.groups, layout.nu, layout.mu, layout.trace

        decays = [False] * len(grads)
        param_leaves: list[Any] = [None] * len(grads)
        if applies_weight_decay and grads:
            if params is None:
                raise ValueError(
                    "weight_decay needs the params: call update(grads, state, params). "
                    "(Under optax.inject_hyperparams a weight_decay of 0 is an array too: "
                    "pass static_args=('weight_decay',) to keep it out of the step.)"
                )
            if jax.tree.structure(params) != treedef:
                raise _structure_error("params", treedef, jax.tree.structure(params))
            param_leaves = treedef.flatten_up_to(params)
            decays = _decayed_leaves(weight_decay_mask, params, treedef.num_leaves)

        count = state.count
        lr = learning_rate(_present(count)) if callable(learning_rate) else learning_rate
        step_weight_decay = weight_decay(_present(count)) if callable(weight_decay) else weight_decay
        if has_count:
            count = jnp.asarray(optax.safe_increment(_present(count)))

        new_updates: list[Any] = [None] * len(grads)
        new_nu, new_mu, new_trace = [], [], []
        for group, nu, mu, trace in zip(groups, nus, mus, traces, strict=True):
            decayed = {decays[index] for index in group}
            if len(decayed) > 1:
                raise ValueError(
                    "weight_decay_mask marks some leaves of one packed group as decayed and others not ("
                    + ", ".join(_leaf_path(updates, index) for index in group)
                    + "): the mask changed since init; build the state again with tx.init(params)."
                )

            def one_leaf(
                grad: jax.Array,
                nu: storage.Stored,
                mu: storage.Stored | None,
                trace: storage.Stored | None,
                param: jax.Array | None,
                seeds: tuple[jax.Array | None, jax.Array | None, jax.Array | None],
                decayed: bool = decayed.pop(),
            ) -> LeafStep:
                return update_leaf(
                    config,
                    grad,
                    nu,
                    mu,
                    trace,
                    storages=_leaf_storages(nu, mu, trace),
                    param=param,
                    learning_rate=lr,
                    weight_decay=step_weight_decay if decayed else None,
                    count=count,
                    rounding_seeds=seeds,
                )

            seeds: tuple[jax.Array | None, jax.Array | None, jax.Array | None] = (None, None, None)
            leaf: int | list[int] = group[0] if len(group) == 1 else list(group)
            if rounding:
                nu_seed, mu_seed, trace_seed = (dtypes.rounding_seed(_present(count), leaf, f) for f in range(3))
                seeds = (nu_seed, mu_seed, trace_seed)
            grad = packing.stack([grads[index] for index in group])
            param = None if param_leaves[group[0]] is None else packing.stack([param_leaves[i] for i in group])
            if len(group) == 1:
                step = one_leaf(grad, nu, mu, trace, param, seeds)
            else:  # the same per-leaf step on each member of the stacked group
                step = jax.vmap(one_leaf)(grad, nu, mu, trace, param, seeds)
            for index, update in zip(group, packing.unstack(step.update, len(group)), strict=True):
                new_updates[index] = update
            new_nu.append(step.nu)
            if mu is not None:
                new_mu.append(step.mu)
            if trace is not None:
                new_trace.append(step.trace)

        def rebuild(leaves: list[Any], present: bool) -> Any:
            if not present:
                return None
            if layout.plan is not None:
                return packing.Packed(layout.plan, leaves)
            return jax.tree.unflatten(treedef, leaves)

        new_state = RmsPropState(
            count=count if has_count else None,
            nu=rebuild(new_nu, True),
            mu=rebuild(new_mu, config.centered),
            trace=rebuild(new_trace, config.momentum is not None),
        )
        return jax.tree.unflatten(treedef, new_updates), new_state

    # optax types init and update with the abstract OptState; ours return and take an RmsPropState.
    return optax.GradientTransformationExtraArgs(init_fn, update_fn)  # pyright: ignore[reportArgumentType]


def scale_by_rms(
    decay: Scalar = 0.9,
    eps: Scalar = 1e-8,
    initial_scale: Scalar = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    bias_correction: bool = False,
    *,
    state_dtype: StateDtype = None,
    pack_small_leaves: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Rescales updates by the root of an exponential moving average of their square.

    The RMSProp scaling without the learning rate: ``g / sqrt(E[g^2] + eps)``, or
    with ``centered=True``, ``g / sqrt(E[g^2] - E[g]^2 + eps)``. Chain it with
    :func:`optax.scale_by_learning_rate` (and :func:`optax.trace` for momentum) to
    put clipping or other transforms between the scaling and the learning rate;
    ``rmsprop(lr, ...)`` equals that chain.

    Args:
      decay: As in :func:`rmsprop` (so are the next ones: the same names, defaults and checks).
      eps: As in :func:`rmsprop`.
      initial_scale: As in :func:`rmsprop`.
      eps_in_sqrt: As in :func:`rmsprop`.
      centered: As in :func:`rmsprop`.
      bias_correction: As in :func:`rmsprop`.
      state_dtype: As in :func:`rmsprop`.
      pack_small_leaves: As in :func:`rmsprop`; without momentum only ``centered`` packs.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` whose state is a
      :class:`rmsprop_jax.RmsPropState`.

    Raises:
      ValueError: an argument is out of range; it is named in the message.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> import rmsprop_jax
      >>> tx = optax.chain(
      ...     optax.clip_by_global_norm(1.0),
      ...     rmsprop_jax.scale_by_rms(decay=0.9),
      ...     optax.scale_by_learning_rate(0.1),
      ... )
      >>> params = jnp.array([1.0, -2.0])
      >>> state = tx.init(params)
      >>> updates, state = tx.update(jnp.array([0.5, 0.5]), state, params)
      >>> print(updates)
      [-0.3162277 -0.3162277]

    References:
      Those of :func:`rmsprop` (Hinton 2012, Graves 2013).
    """
    config = RmsConfig(
        decay=decay,
        eps=eps,
        eps_in_sqrt=eps_in_sqrt,
        centered=centered,
        bias_correction=bias_correction,
    )
    resolved = _check_config(config, initial_scale, state_dtype, {})
    validation.check_bool("pack_small_leaves", pack_small_leaves)
    return _rms_transformation(
        config, initial_scale=initial_scale, state_dtype=resolved, pack_small_leaves=pack_small_leaves
    )


def rmsprop(
    learning_rate: optax.ScalarOrSchedule,
    decay: Scalar = 0.9,
    eps: Scalar = 1e-8,
    initial_scale: Scalar = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: Scalar | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
    *,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    decoupled_weight_decay: bool = False,
    weight_decay_mask: MaskOrFn = None,
    lr_in_momentum: bool = True,
    maximize: bool = False,
    state_dtype: StateDtype = None,
    caution: bool = False,
    pack_small_leaves: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""RMSProp in one transformation: every variant, one fused step per leaf.

    A drop-in for :func:`optax.rmsprop` (same positional arguments and defaults,
    same updates to float32 rounding) with the options other frameworks need. One
    step, in order: negate the gradient if ``maximize``; add coupled weight decay
    ``weight_decay * p`` to it; update ``nu = decay * nu + (1 - decay) * g^2`` (and
    ``mu`` if centered); scale ``s = g / sqrt(v + eps)`` with ``v`` the (clamped,
    optionally bias-corrected) second moment or variance; apply momentum; subtract
    decoupled weight decay ``lr * weight_decay * p``.

    Deviations from :func:`optax.rmsprop`, all deliberate: invalid arguments raise
    ``ValueError`` (optax accepts them silently); the centered variance is clamped
    at zero (optax can return NaN); float16/bfloat16 params keep a float32 state;
    with ``eps = 0``, zero gradients give zero updates (optax: NaN).

    Args:
      learning_rate: A non-negative float, or an optax schedule (a callable from
        step count to learning rate).
      decay: Decay rate of the moving averages, in ``[0, 1]``.
      eps: Non-negative term added to the denominator; positive when
        ``centered``. With ``eps = 0`` zero gradients still give zero updates.
      initial_scale: Non-negative initial value of the second moment (PyTorch
        uses 0, TF1 uses 1).
      eps_in_sqrt: Whether ``eps`` is added inside the square root (optax, Keras, TF1, timm) or
        outside it (PyTorch); :data:`rmsprop_jax.presets.CONVENTIONS` lists each framework.
      centered: Whether to divide by the root of the variance estimate
        ``E[g^2] - E[g]^2`` (clamped at zero) instead of the second moment.
      momentum: Momentum decay in ``[0, 1)``; ``None`` keeps no buffer.
      nesterov: Whether to use Nesterov momentum (needs ``momentum``).
      bias_correction: Whether to divide the moving averages by ``1 - decay^t``.
      weight_decay: Non-negative weight decay coefficient, or a schedule of it
        (a callable from step count to coefficient).
      decoupled_weight_decay: ``False``: add ``weight_decay * p`` to the gradient
        before the moments (PyTorch). ``True``: subtract
        ``learning_rate * weight_decay * p`` from the parameter, outside the
        moments and momentum (AdamW, Keras, timm).
      weight_decay_mask: Which params decay: a pytree of bools with the params'
        structure (or a prefix of it), or a callable ``params -> pytree``.
        Under :func:`optax.inject_hyperparams`, pass a callable mask in
        ``static_args``.
      lr_in_momentum: ``True``: the momentum buffer accumulates
        ``learning_rate * s`` (optax, TF, Keras). ``False``: it accumulates ``s``
        and the learning rate multiplies the buffer (PyTorch). The two differ
        only when the learning rate changes over time.
      maximize: Whether to maximize the objective (negate the gradient first).
      state_dtype: Storage of the state: a floating dtype or its name (e.g.
        ``"bfloat16"``), or ``"8bit"``. ``None``: float32 for float16/bfloat16
        params, else the param's dtype. A 16-bit state is written with
        stochastic rounding. ``"8bit"`` keeps every state array of a leaf with at
        least 4096 entries as ``uint8`` codes plus one float32 scale per 16 x 16
        tile (or run of 256), about 1.02 bytes per entry, stochastically rounded
        (smaller leaves, and shapes whose shards no block fits, keep the default
        dtype; complex params are refused; centered keeps the variance itself
        and refuses ``bias_correction``). Read any state with
        :func:`rmsprop_jax.state_as_float32`; change it mid-run with
        :func:`rmsprop_jax.convert_state`. Under :func:`optax.inject_hyperparams`
        pass a dtype object in ``static_args`` (it is callable) or give its name.
      caution: Whether to apply the momentum direction only where its sign
        agrees with the gradient, rescaled to keep its mean magnitude
        (Cautious Optimizers; needs ``momentum``). timm's ``caution``.
      pack_small_leaves: Whether to keep the state of small same-shape leaves
        stacked in groups (one array per group, on a new leading axis), so that a
        model with hundreds of small leaves (biases, norm scales) steps and
        compiles several times faster with momentum or ``centered``. The results
        are the same bit for bit; ``state.nu`` is then no longer shaped like the
        params: read it with :func:`rmsprop_jax.state_as_float32` and see the
        grouping with :func:`rmsprop_jax.packing_plan`. Plain RMSProp packs
        nothing (it would not gain); leaves above 16384 entries with momentum
        (8192 centered with momentum, 2048 centered without), 8-bit leaves, and
        leaves whose sharding ``init`` cannot see (under ``jax.jit`` on a mesh
        with Auto axes) stay per leaf.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` whose state is a
      :class:`rmsprop_jax.RmsPropState`.

    Raises:
      ValueError: an argument is out of range or of the wrong kind; it is named
        in the message.

    Example:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import optax
      >>> import rmsprop_jax
      >>> def loss(x): return jnp.sum(x ** 2)
      >>> tx = rmsprop_jax.rmsprop(learning_rate=0.003)
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> state = tx.init(params)
      >>> for _ in range(5):
      ...   grads = jax.grad(loss)(params)
      ...   updates, state = tx.update(grads, state, params)
      ...   params = optax.apply_updates(params, updates)
      ...   print(f"{loss(params):.2E}")
      1.39E+01
      1.38E+01
      1.37E+01
      1.37E+01
      1.36E+01

    References:
      Hinton, `Lecture 6e: rmsprop
      <https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf>`_, 2012.

      Graves, `Generating Sequences With Recurrent Neural Networks
      <https://arxiv.org/abs/1308.0850>`_, 2013.

      Loshchilov and Hutter, `Decoupled Weight Decay Regularization
      <https://arxiv.org/abs/1711.05101>`_, 2019.

      Liang et al., `Cautious Optimizers: Improving Training with One Line of Code
      <https://arxiv.org/abs/2411.16085>`_, 2024.
    """
    config = RmsConfig(
        decay=decay,
        eps=eps,
        eps_in_sqrt=eps_in_sqrt,
        centered=centered,
        bias_correction=bias_correction,
        momentum=momentum,
        nesterov=nesterov,
        lr_in_momentum=lr_in_momentum,
        decoupled_weight_decay=decoupled_weight_decay,
        maximize=maximize,
        caution=caution,
    )
    return build_rmsprop(
        config,
        {},
        learning_rate,
        initial_scale=initial_scale,
        weight_decay=weight_decay,
        weight_decay_mask=weight_decay_mask,
        state_dtype=state_dtype,
        pack_small_leaves=pack_small_leaves,
    )


def build_rmsprop(
    config: RmsConfig,
    names: Mapping[str, str],
    learning_rate: optax.ScalarOrSchedule,
    *,
    initial_scale: Scalar = 0.0,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    weight_decay_mask: MaskOrFn = None,
    state_dtype: StateDtype = None,
    pack_small_leaves: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """Validates a configuration and builds its transformation: :func:`rmsprop`'s body.

    The presets call it with their framework's configuration and ``names``, the
    map from :func:`rmsprop`'s argument names to their own:
    ``{"decay": "alpha", "learning_rate": "lr"}`` makes a bad ``decay`` raise
    ``Invalid alpha value: ...``, so each framework's users see their own
    argument names while the rules live here once.
    """
    resolved = _check_config(config, initial_scale, state_dtype, names)
    validation.check_scalar_or_schedule(names.get("learning_rate", "learning_rate"), learning_rate)
    validation.check_scalar_or_schedule(names.get("weight_decay", "weight_decay"), weight_decay)
    validation.check_bool(names.get("pack_small_leaves", "pack_small_leaves"), pack_small_leaves)
    if weight_decay_mask is not None and not callable(weight_decay_mask):
        jax.tree.map(lambda flag: validation.check_bool("weight_decay_mask", flag), weight_decay_mask)
    return _rms_transformation(
        config,
        initial_scale=initial_scale,
        state_dtype=resolved,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        weight_decay_mask=weight_decay_mask,
        pack_small_leaves=pack_small_leaves,
    )
