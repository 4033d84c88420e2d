"""The public factories :func:`rmsprop` and :func:`scale_by_rms`, and the transformation they build.

The factories validate their arguments into :class:`_Options`; the transformation is optax's
factory pattern in small module-level parts: :func:`_init` plans the state
(:mod:`rmsprop_jax._plan`) and allocates it; :func:`_update` checks its inputs against the
plan, computes the step's scalars, runs :func:`~rmsprop_jax._leaf_update.update_leaf` once per
group of the plan (a leaf, or a stacked group under ``jax.vmap``) and scatters the results
back. This module names no storage and no layout: it asks the plan. The presets call
:func:`build_rmsprop` with their own configuration and argument names.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import optax

from rmsprop_jax import _dtypes as dtypes
from rmsprop_jax import _layouts as layouts
from rmsprop_jax import _nnx_compat as compat
from rmsprop_jax import _placement as placement
from rmsprop_jax import _plan as plans
from rmsprop_jax import _state_options as state_options
from rmsprop_jax import _storage as storage
from rmsprop_jax import _storage_kinds as kinds
from rmsprop_jax import _validation as validation
from rmsprop_jax._dtypes import ResolvedStateDtype
from rmsprop_jax._leaf_rules import Choice
from rmsprop_jax._leaf_update import LeafStep, RmsConfig, Scalar, Seeds
from rmsprop_jax._placement import OffloadRule
from rmsprop_jax._state import FIELDS, MU, NU, TRACE, Field, RmsPropState
from rmsprop_jax._state_options import StateOptions, StateSetup
from rmsprop_jax._state_policy import StateDtypeOrPolicy, StatePolicy, may_round
from rmsprop_jax._traced_once import Arguments, Scalars, leaf_step, leaf_steps

DEFAULT_STATE = StateOptions()
"""The state's options where a factory passes none: a float state per leaf, in device memory."""

MaskOrFn: TypeAlias = Any | Callable[[optax.Params], Any] | None
"""optax's weight-decay mask type (``optax.MaskOrFn``): a pytree of bools, a callable returning one, or None."""

_FLAGS = (
    "eps_in_sqrt",
    "centered",
    "bias_correction",
    "nesterov",
    "lr_in_momentum",
    "decoupled_weight_decay",
    "maximize",
    "caution",
)


def _check_config(config: RmsConfig, initial_scale: Scalar, policy: StatePolicy, names: Mapping[str, str]) -> None:
    """Validates what every factory shares, and the state dtypes known before ``init`` against it.

    Errors name each argument as ``names`` maps it (a preset's own names), else as
    :func:`rmsprop` spells it.
    """

    def name(key: str) -> str:
        return names.get(key, key)

    validation.check_interval(name("decay"), config.decay, 0.0, 1.0)
    if validation.any_equal(config.decay, 1.0):  # nu would stay at initial_scale: every update lr * g / sqrt(eps)
        raise ValueError(
            f"Invalid {name('decay')} value: 1.0 ({name('decay')} must be in [0, 1): at 1 the average never "
            "moves. Under optax.inject_hyperparams with 16-bit params, 0.999 rounds to 1.0: pass "
            "hyperparam_dtype=jnp.float32)"
        )
    validation.check_interval(name("eps"), config.eps, 0.0)
    validation.check_interval(name("initial_scale"), initial_scale, 0.0)
    for flag in _FLAGS:
        validation.check_bool(name(flag), getattr(config, flag))
    if config.caution and config.momentum is None:
        raise ValueError(
            f"Invalid {name('caution')} value: True (caution masks the momentum direction; momentum is None)"
        )
    if config.momentum is not None:
        validation.check_interval(name("momentum"), config.momentum, 0.0, 1.0, high_inclusive=False)
    elif config.nesterov:
        raise ValueError(f"Invalid {name('nesterov')} value: True (nesterov needs momentum; momentum is None)")
    if config.centered and validation.any_equal(config.eps, 0.0):
        raise ValueError(
            f"Invalid {name('eps')} value: 0.0 (centered needs {name('eps')} > 0: the variance estimate of a "
            "constant gradient is exactly 0, and g / 0 has no finite value)"
        )
    for value in policy.known_values():
        kinds.check_options(value, config.centered, config.bias_correction, names)


@dataclasses.dataclass(frozen=True, eq=False)
class _Options:
    """Everything a transformation was built with, validated."""

    config: RmsConfig
    initial_scale: Scalar
    state: StateSetup
    learning_rate: optax.ScalarOrSchedule | None = None
    weight_decay: optax.ScalarOrSchedule = 0.0
    weight_decay_mask: MaskOrFn = None

    @property
    def state_dtype(self) -> StatePolicy:
        return self.state.state_dtype

    @property
    def has_count(self) -> bool:
        """Whether the state keeps a step count (schedules, bias correction, stochastic rounding)."""
        schedules = callable(self.learning_rate) or callable(self.weight_decay)
        return self.config.bias_correction or may_round(self.state_dtype) or schedules

    @property
    def applies_weight_decay(self) -> bool:
        return not (isinstance(self.weight_decay, (int, float)) and self.weight_decay == 0)

    def fields(self) -> tuple[Field, ...]:
        """The state arrays each leaf keeps."""
        present = {"nu": True, "mu": self.config.centered, "trace": self.config.momentum is not None}
        return tuple(field for field in FIELDS if present[field.name])

    def decayed(self, params: optax.Params) -> list[bool]:
        """Per-leaf weight-decay flags of ``params`` (all ``True`` where no weight decay applies)."""
        num_leaves = compat.structure(params).num_leaves
        if not self.applies_weight_decay:
            return [True] * num_leaves
        return _decayed_leaves(self.weight_decay_mask, params, num_leaves)

    def state_dtypes(self, params: optax.Params) -> list[ResolvedStateDtype]:
        """Each leaf's ``state_dtype``, as the policy chooses it (a callable's choices checked here)."""
        chosen = [choice.value for choice in self.state_dtype.choose(params)]
        if self.state_dtype.function is not None:
            names = {"state_dtype": self.state_dtype.argument}
            for value in set(chosen):
                kinds.check_options(value, self.config.centered, self.config.bias_correction, names)
        return chosen

    def offloaded(self, params: optax.Params) -> list[bool]:
        """Each leaf's ``offload_state`` flag."""
        return [choice.value for choice in self.state.offload.choose(params)]

    def request(self) -> plans.Request:
        momentum = self.config.momentum is not None
        thresholds = self.state.thresholds
        return plans.Request(
            self.state_dtypes,
            self.config.centered,
            momentum,
            thresholds.largest(self.config.centered, momentum and self.learning_rate is not None),
            self.state.pack_small_leaves,
            self.decayed,
            thresholds,
            self.offloaded,
        )


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


def _present(count: jax.Array | None) -> jax.Array:
    """The state's step count where the configuration keeps one (schedules, bias correction, rounding)."""
    assert count is not None, "this configuration keeps a step count"
    return count


def _is_placeholder(params: optax.Params) -> bool:
    """Whether ``init`` was called by ``optax.tree_map_params``, with a placeholder that has no leaves."""
    return type(params).__name__ == "_ParamsPlaceholder"


def _placeholder_state(options: _Options, placeholder: Any) -> RmsPropState:
    """``init`` under ``optax.tree_map_params``: the placeholder wherever the state follows the params."""
    policy = options.state_dtype
    if policy.function is not None:
        raise ValueError(
            "optax.tree_map_params cannot map a state built with a callable state_dtype: it chooses each "
            "leaf's storage from the params, which tree_map_params hides. Map rmsprop_jax.state_as_float32(state) "
            "instead, or pass state_dtype as one value or a pytree prefix of values."
        )
    for value in policy.known_values():
        kinds.check_mappable(value)
    if options.state.pack_small_leaves:
        raise ValueError(
            "optax.tree_map_params cannot map a state built with pack_small_leaves=True: its layout "
            "(which leaves share a stacked group) depends on the params, which tree_map_params hides. Map "
            "rmsprop_jax.state_as_float32(state) instead (per leaf, in the params' structure), or build the "
            "optimizer with pack_small_leaves=False."
        )
    fields = {field.name: placeholder for field in options.fields()}
    count = jnp.zeros([], jnp.int32) if options.has_count else None
    return RmsPropState(count=count, nu=fields["nu"], mu=fields.get("mu"), trace=fields.get("trace"))


def _allocated(plan: plans.StatePlan, params: optax.Params, field: Field, fill: Scalar) -> Any:
    """One state field holding ``fill``, each leaf in its planned storage, in the planned layout."""
    param_leaves = plan.treedef.flatten_up_to(params)
    kept: list[storage.Storage] = []
    for leaf in plan.leaves:
        of_field = leaf.storages.of(field)
        assert of_field is not None, "every leaf keeps every field of this configuration"
        kept.append(of_field)
    values = storage.filled(kept, [compat.value_of(param) for param in param_leaves], fill)
    entries = plan.layout.placed(plan.packing, plans.gathered(plan, values), param_leaves)
    return plans.laid_out(plan, entries, param_leaves)


def _init(options: _Options, params: optax.Params) -> RmsPropState:
    """The state of ``params``: planned once, then allocated as planned."""
    if _is_placeholder(params):
        return _placeholder_state(options, params)
    params = validation.checked_params(params)
    plan = plans.plan_state(params, options.request())
    fills = {"nu": options.initial_scale, "mu": 0, "trace": 0}

    def placed(members: tuple[int, ...], stored: Any) -> Any:  # a group lives where its first member's rule says
        return placement.returned(stored, plan.leaves[members[0]].on_host)

    fields = {
        field.name: plan.layout.map_entries(_allocated(plan, params, field, fills[field.name]), placed)
        for field in options.fields()
    }
    return RmsPropState(
        count=jnp.zeros([], jnp.int32) if options.has_count else None,
        nu=fields["nu"],
        mu=fields.get("mu"),
        trace=fields.get("trace"),
    )


def _state_plan(options: _Options, state: Any) -> plans.StatePlan:
    """The plan of the state ``update`` was given; raises where the state is not this optimizer's."""
    if not isinstance(state, RmsPropState):
        raise ValueError(
            f"update expects the RmsPropState that this optimizer's init built, got a {type(state).__name__}"
        )
    present = {field.name for field in FIELDS if getattr(state, field.name) is not None}
    wanted = {field.name for field in options.fields()}
    if state.nu is None:  # an empty params tree: no field has a leaf
        present = wanted
    if present != wanted or (state.count is None) == options.has_count:
        raise ValueError(
            f"This state was built by another configuration: it holds {sorted(present)} "
            f"{'with' if state.count is not None else 'without'} a step count; this optimizer keeps "
            f"{sorted(wanted)} {'with' if options.has_count else 'without'} one (centered, momentum, schedules, "
            "bias_correction and a state_dtype that rounds (16-bit, 8-bit) decide). Build the state with this "
            "optimizer's init, or move one across with rmsprop_jax.convert_state(state, tx.init(params))."
        )
    plan = plans.read(state)
    for leaf, wanted in zip(plan.leaves, _wanted_state_dtypes(options.state_dtype, plan), strict=True):
        kept = leaf.storages.nu
        if wanted is _ANY:
            continue
        chosen = "" if options.state_dtype.single else f" ({wanted.rule})"
        why = kinds.disagreement(kept, wanted.value, leaf.path, chosen, leaf.shape)
        if why is not None:
            raise ValueError(why)
    return plan


_ANY: Choice[ResolvedStateDtype] = Choice(None, "")


def _wanted_state_dtypes(policy: StatePolicy, plan: plans.StatePlan) -> list[Choice[ResolvedStateDtype]]:
    """Each leaf's ``state_dtype`` as the policy chose it, read over the state's tree (``_ANY`` where a
    callable chose it: its choice needs the params, which ``update`` may lack)."""
    if policy.function is not None:
        return [_ANY] * len(plan.leaves)
    return policy.choose(plan.stand_in_params())


def _gradient_leaves(
    plan: plans.StatePlan, state: RmsPropState, updates: optax.Updates, params: optax.Params | None
) -> list[Any]:
    """The gradient's leaves at the state's leaves (variables whole, ``None`` where the gradient is
    ``None``, a Python number as an array); raises, naming the leaf, unless its tree, shapes and
    dtypes fit the state (and the params, where they are given)."""
    leaves = plans.leaves_of("gradient", plan, updates)
    param_leaves: list[Any] | None = None
    for index, (leaf, planned) in enumerate(zip(leaves, plan.leaves, strict=True)):
        value = compat.value_of(leaf)
        if value is None:
            continue
        if isinstance(value, (int, float, complex)):
            leaves[index] = leaf = compat.with_value(leaf, jnp.asarray(value))
            value = compat.value_of(leaf)
        dtype = jnp.result_type(value)
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"Gradient leaf {planned.path} has dtype {jnp.dtype(dtype).name}: gradients must be floating "
                "(an integer or bool leaf has no gradient; leave it out of the params, e.g. with "
                "eqx.filter(model, eqx.is_inexact_array) or optax.masked)."
            )
        if jnp.shape(value) != planned.shape:
            raise ValueError(
                f"Gradient leaf {planned.path} has shape {jnp.shape(value)} but its "
                f"optimizer state has shape {planned.shape} (nothing is broadcast)."
            )
        if not jnp.issubdtype(dtype, jnp.complexfloating):
            continue
        signed = planned.storages.mu or planned.storages.trace
        if params is not None and param_leaves is None:
            param_leaves = plans.leaves_of("params", plan, params)
        param = None if param_leaves is None else compat.value_of(param_leaves[index])
        real_param = param is not None and not jnp.iscomplexobj(param)
        if real_param or (signed is not None and not _complex(signed)):
            raise TypeError(
                f"Gradient leaf {planned.path} is complex ({jnp.dtype(dtype).name}) but its param is real: "
                "a complex update would turn the param complex. Take the real part of the gradient, or "
                "make the param complex before tx.init."
            )
    return leaves


def _complex(kept: storage.Storage) -> bool:
    return jnp.issubdtype(kept.dtype, jnp.complexfloating)


def _decay_inputs(
    options: _Options,
    plan: plans.StatePlan,
    state: RmsPropState,
    gradient_leaves: list[Any],
    params: optax.Params | None,
) -> tuple[list[bool], list[Any]]:
    """Each leaf's weight-decay flag and param (``False`` and ``None`` without weight decay)."""
    num_leaves = len(plan.leaves)
    weight_decay = options.weight_decay
    if not options.applies_weight_decay or num_leaves == 0:
        return [False] * num_leaves, [None] * num_leaves
    if params is None:
        if validation.is_traced(weight_decay) or _concrete_zero(weight_decay):
            # inject_hyperparams makes the default 0 an array: without params, the step runs
            # undecayed and a non-zero value (known only when the step runs) raises there.
            validation.raise_if_nonzero(weight_decay, _needs_params_message())
            return [False] * num_leaves, [None] * num_leaves
        raise ValueError(_needs_params_message())
    param_leaves = plans.leaves_of("params", plan, params)
    flags = options.decayed(params)
    for leaf, planned, gradient in zip(param_leaves, plan.leaves, gradient_leaves, strict=True):
        value = compat.value_of(leaf)
        if gradient is not None and value is None:
            raise ValueError(f"Params leaf {planned.path} is None but its gradient is not: weight decay needs it.")
        if value is not None and jnp.shape(value) != planned.shape:
            raise ValueError(
                f"Params leaf {planned.path} has shape {jnp.shape(value)} but its optimizer state has shape "
                f"{planned.shape} (nothing is broadcast)."
            )
    changed = [
        plan.leaves[i].path for group in plan.groups if len(group) > 1 for i in group if flags[i] != flags[group[0]]
    ]
    if changed:
        raise ValueError(
            f"weight_decay_mask decays {', '.join(changed)} otherwise than the other leaves of its packed group, "
            "and the packed groups were formed by that flag: the mask changed since init; build the state "
            "again with tx.init(params)."
        )
    return flags, [_array(compat.value_of(p)) for p in param_leaves]


def _array(value: Any) -> Any:
    """A Python number as an array (``None`` and arrays as they are)."""
    return jnp.asarray(value) if isinstance(value, (int, float, complex)) else value


def _needs_params_message() -> str:
    return (
        "weight_decay needs the params: call update(grads, state, params). (With "
        "optax.inject_hyperparams and a weight_decay of 0, update works without them.)"
    )


def _concrete_zero(value: Any) -> bool:
    """Whether a weight decay is a known 0 (an array of inject_hyperparams, outside a trace)."""
    return not callable(value) and not validation.is_traced(value) and validation.all_equal(value, 0.0)


def _step_scalars(options: _Options, count: jax.Array | None) -> tuple[jax.Array | None, Any, Any]:
    """The new step count, and this step's learning rate and weight decay (schedules read the old count)."""
    lr = options.learning_rate
    if callable(lr):
        lr = validation.checked_schedule_value("learning_rate", lr(_present(count)))
    weight_decay = options.weight_decay
    if callable(weight_decay):
        weight_decay = validation.checked_schedule_value("weight_decay", weight_decay(_present(count)))
    if options.has_count:
        count = jnp.asarray(optax.safe_increment(_present(count)))
    return count, lr, weight_decay


def _seeds(storages: storage.LeafStorages, count: jax.Array | None, group: tuple[int, ...]) -> Seeds:
    """The rounding seeds of a group's arrays (one per member when stacked); ``None`` where exact."""
    leaf: int | list[int] = group[0] if len(group) == 1 else list(group)
    seeds = []
    for field in FIELDS:
        kept = storages.of(field)
        rounded = kept is not None and kept.rounds
        seeds.append(dtypes.rounding_seed(_present(count), leaf, field.number) if rounded else None)
    return seeds[0], seeds[1], seeds[2]


def _group_inputs(
    plan: plans.StatePlan,
    number: int,
    inputs: tuple[list[Any], list[Any], list[bool], dict[Field, list[Any]]],
    scalars: tuple[jax.Array | None, Any, Any],
) -> tuple[storage.LeafStorages, Scalars, Arguments]:
    """One group's storages, step scalars and arrays (stacked for a group of several leaves).

    A ``None`` gradient of a stacked group's member steps as zeros; its rows are put back
    unchanged afterwards (:func:`_kept_rows`)."""
    grads, params, flags, stored = inputs
    count, lr, weight_decay = scalars
    group = plan.groups[number]
    storages = plan.leaves[group[0]].storages
    mu, trace = (stored[field][number] if field in stored else None for field in (MU, TRACE))
    present = next(grads[index] for index in group if grads[index] is not None)
    grad = plan.layout.gather([jnp.zeros_like(present) if grads[i] is None else grads[i] for i in group])
    param = None
    if params[group[0]] is not None:
        param = plan.layout.gather([jnp.zeros_like(present) if params[i] is None else params[i] for i in group])
    seeds = _seeds(storages, count, group)
    step_scalars = (lr, weight_decay if flags[group[0]] else None, count)
    return storages, step_scalars, (grad, stored[NU][number], mu, trace, param, seeds)


def _kept_rows(step: LeafStep, old: dict[Field, Any], rows: list[int]) -> LeafStep:
    """A stacked group's step with the rows of ``None`` gradients holding their old state."""
    if not rows:
        return step
    kept = {}
    for field in FIELDS:
        new = getattr(step, field.name)
        if new is not None:
            for row in rows:
                new = new.at[row].set(old[field][row])
        kept[field.name] = new
    return step._replace(**kept)


def _steps(
    options: _Options,
    plan: plans.StatePlan,
    inputs: tuple[list[Any], list[Any], list[bool], dict[Field, list[Any]]],
    scalars: tuple[jax.Array | None, Any, Any],
) -> list[LeafStep | None]:
    """Every group's step (``None`` for a group whose gradients are all ``None``): single leaves
    together (:func:`leaf_steps`), each stacked group vmapped."""
    grads, stored = inputs[0], inputs[3]
    live = [n for n, group in enumerate(plan.groups) if any(grads[i] is not None for i in group)]
    requests = {number: _group_inputs(plan, number, inputs, scalars) for number in live}
    single = [number for number in live if len(plan.groups[number]) == 1]
    steps: dict[int, LeafStep | None] = dict(
        zip(single, leaf_steps(options.config, [requests[n] for n in single]), strict=True)
    )
    for number, (storages, step_scalars, arguments) in requests.items():
        if number not in steps:
            step = jax.vmap(functools.partial(leaf_step, options.config, storages, step_scalars))(*arguments)
            group = plan.groups[number]
            old = {field: arrays[number] for field, arrays in stored.items()}
            steps[number] = _kept_rows(step, old, [k for k, i in enumerate(group) if grads[i] is None])
    return [steps.get(number) for number in range(len(plan.groups))]


def _scattered(
    plan: plans.StatePlan,
    gradient_leaves: list[Any],
    steps: list[LeafStep | None],
    stored: dict[Field, list[Any]],
    on_host: dict[Field, list[bool]],
    fields: tuple[Field, ...],
) -> tuple[list[Any], dict[str, Any]]:
    """The steps' updates per leaf (``None`` for a ``None`` gradient), and each state field in the
    plan's layout (a group that did not step keeps its arrays), each array in the memory it came from.

    A group's updates are read at the layout's runtime offsets (the stacked layout's
    :func:`rmsprop_jax._layout_stacked.member_offsets`):
    one kernel per member shape rather than one per member, so that packing compiles no slower
    than per leaf on trees whose small leaves come in many shapes. Sharded gradients keep
    constant offsets (:func:`rmsprop_jax._placement.local_anchor`).
    """
    updates: list[Any] = [None] * len(plan.leaves)
    several = [group for group, step in zip(plan.groups, steps, strict=True) if len(group) > 1 and step is not None]
    offsets = None
    anchor = None
    if several:
        first = next(gradient_leaves[i] for i in several[0] if gradient_leaves[i] is not None)
        anchor = placement.local_anchor(first)
    if anchor is not None:
        offsets = plan.layout.member_offsets(anchor, max(len(group) for group in several))
    for group, step in zip(plan.groups, steps, strict=True):
        if step is None:
            continue
        for index, update in zip(group, plan.layout.scatter(step.update, len(group), offsets), strict=True):
            if gradient_leaves[index] is not None:
                updates[index] = compat.with_value(gradient_leaves[index], update)
    out = {}
    for field in fields:  # an empty tree's state has no arrays: stored and on_host lack its fields
        arrays = [
            placement.returned(stored[field][number] if step is None else getattr(step, field.name), host)
            for number, (step, host) in enumerate(zip(steps, on_host.get(field, []), strict=True))
        ]
        out[field.name] = plans.laid_out(plan, arrays, gradient_leaves)
    return updates, out


def _update(
    options: _Options,
    updates: optax.Updates,
    state: RmsPropState,
    params: optax.Params | None = None,
    **extra_args: Any,
) -> tuple[optax.Updates, RmsPropState]:
    """One step of every leaf, as the state's arrays say each is kept."""
    del extra_args
    plan = _state_plan(options, state)
    gradient_leaves = _gradient_leaves(plan, state, updates, params)
    flags, param_leaves = _decay_inputs(options, plan, state, gradient_leaves, params)
    scalars = _step_scalars(options, state.count)
    grads = [compat.value_of(leaf) for leaf in gradient_leaves]
    stored = plans.field_arrays(state, plan)
    on_host = {field: [placement.on_host(array) for array in arrays] for field, arrays in stored.items()}
    stored = {field: [placement.fetched(array) for array in arrays] for field, arrays in stored.items()}
    steps = _steps(options, plan, (grads, param_leaves, flags, stored), scalars)
    new_updates, fields = _scattered(plan, gradient_leaves, steps, stored, on_host, options.fields())
    new_state = RmsPropState(
        count=scalars[0] if options.has_count else None,
        nu=fields["nu"],
        mu=fields.get("mu"),
        trace=fields.get("trace"),
    )
    return jax.tree.unflatten(plan.treedef, new_updates), new_state


def _rms_transformation(options: _Options) -> optax.GradientTransformationExtraArgs:
    """The transformation of validated options (optax's factory pattern)."""
    # optax types init and update with the abstract OptState; ours return and take an RmsPropState.
    return optax.GradientTransformationExtraArgs(
        functools.partial(_init, options),  # pyright: ignore[reportArgumentType]
        functools.partial(_update, options),  # pyright: ignore[reportArgumentType]
    )


def scale_by_rms(
    decay: Scalar = 0.9,
    eps: Scalar = 1e-8,
    initial_scale: Scalar = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
    *,
    centered: bool = False,
    state_dtype: StateDtypeOrPolicy = None,
    pack_small_leaves: bool = False,
    offload_state: OffloadRule = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Rescales updates by the root of an exponential moving average of their square.

    The RMSProp scaling without the learning rate: ``g / sqrt(E[g^2] + eps)``, or
    with ``centered=True``, ``g / sqrt(E[g^2] - E[g]^2 + eps)``. Chain it with
    :func:`optax.scale_by_learning_rate` (and :func:`optax.trace` for momentum) to
    put clipping or other transforms between the scaling and the learning rate;
    ``rmsprop(lr, ...)`` equals that chain.

    The positional arguments are :func:`optax.scale_by_rms`'s, in its order; ``centered``
    (which optax's lacks) is keyword-only.

    Args:
      decay: As in :func:`rmsprop` (so are the next ones: the same names, defaults and checks).
      eps: As in :func:`rmsprop`.
      initial_scale: As in :func:`rmsprop`.
      eps_in_sqrt: As in :func:`rmsprop`.
      bias_correction: As in :func:`rmsprop`.
      centered: As in :func:`rmsprop`.
      state_dtype: As in :func:`rmsprop`.
      pack_small_leaves: As in :func:`rmsprop`; without momentum only ``centered`` packs.
      offload_state: As in :func:`rmsprop`.

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
        decay=decay, eps=eps, eps_in_sqrt=eps_in_sqrt, centered=centered, bias_correction=bias_correction
    )
    return build_rmsprop(
        config, {}, None, initial_scale=initial_scale, state=StateOptions(state_dtype, pack_small_leaves, offload_state)
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
    state_dtype: StateDtypeOrPolicy = None,
    caution: bool = False,
    pack_small_leaves: bool = False,
    offload_state: OffloadRule = False,
) -> optax.GradientTransformationExtraArgs:
    r"""RMSProp in one transformation: every variant, one fused step per leaf.

    A drop-in for :func:`optax.rmsprop` (same positional arguments and defaults,
    same updates to float32 rounding) with the options other frameworks need. One
    step, in order: negate the gradient if ``maximize``; add coupled weight decay
    ``weight_decay * p`` to it; update ``nu = decay * nu + (1 - decay) * g^2`` (and
    ``mu`` if centered); scale ``s = g / sqrt(v + eps)`` with ``v`` the (clamped,
    optionally bias-corrected) second moment or variance; apply momentum; subtract
    decoupled weight decay ``lr * weight_decay * p``.

    Deviations from :func:`optax.rmsprop`, all deliberate (the docs' Numerics page lists
    them): invalid arguments raise ``ValueError``; the centered variance is clamped at zero;
    16-bit params keep a float32 state; with ``eps = 0`` zero gradients give zero updates.

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
        ``"bfloat16"``, written with stochastic rounding), or ``"8bit"`` (``uint8``
        codes and one float32 scale per block of about 256 entries, for every leaf of at
        least 4096 entries whatever its shape; about 1.02 bytes per entry), or ``"4bit"``
        (``nu`` in half a byte per entry with one float32 scale per 128 or fewer, ``mu`` and
        the momentum buffer in 8 bits, on the leaves 8 bits reach). ``None``:
        float32 for 16-bit params, else the param's dtype. The docs' Numerics page says which leaves and
        what 8 and 4 bits change; :func:`rmsprop_jax.state_report` shows it per leaf. Per leaf, as optax
        takes masks: a pytree prefix of such values (``{"embed": "float32", "blocks": "8bit"}``,
        matched to the params by path keys) or a callable ``fn(path, param)`` returning one
        (under :func:`optax.inject_hyperparams`, pass it in ``static_args``).
      caution: Whether to apply the momentum direction only where its sign
        agrees with the gradient, rescaled to keep its mean magnitude
        (Cautious Optimizers; needs ``momentum``). timm's ``caution``.
      pack_small_leaves: Whether to keep the state of small same-shape leaves
        stacked in groups, so that models with hundreds of small leaves step and
        compile faster with momentum or ``centered`` (the same results bit for bit).
        The docs' Scaling page says what packs; :func:`rmsprop_jax.packing_plan`
        shows the groups.
      offload_state: Whether to keep the state in host memory (``pinned_host``): ``True`` for
        every leaf, or per leaf as ``state_dtype`` (a pytree prefix of bools, or a callable
        ``fn(path, param) -> bool``). ``update`` brings each array to the device inside the
        step and writes it back; params and updates stay where they are. The docs' Scaling
        page has the cost (each step moves the state's bytes both ways) and the wrappers that
        cannot run on host arrays.

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
        state=StateOptions(state_dtype, pack_small_leaves, offload_state),
    )


def build_rmsprop(
    config: RmsConfig,
    names: Mapping[str, str],
    learning_rate: optax.ScalarOrSchedule | None,
    *,
    initial_scale: Scalar = 0.0,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    weight_decay_mask: MaskOrFn = None,
    state: StateOptions = DEFAULT_STATE,
    thresholds: layouts.Thresholds = layouts.DEFAULT_THRESHOLDS,
) -> optax.GradientTransformationExtraArgs:
    """Validates a configuration and builds its transformation: :func:`rmsprop`'s body.

    The presets call it with their framework's configuration and ``names``, the
    map from :func:`rmsprop`'s argument names to their own:
    ``{"decay": "alpha", "learning_rate": "lr"}`` makes a bad ``decay`` raise
    ``Invalid alpha value: ...``, so each framework's users see their own
    argument names while the rules live here once. ``learning_rate=None`` builds
    :func:`scale_by_rms` (no learning rate, no weight decay). ``state`` holds the state's
    options whole (dtype or policy, packing, placement), validated here once. ``thresholds``
    (what packs) is for benchmarks and experiments; the public factories keep the defaults.
    """
    setup = state_options.validated(state, names, thresholds)
    _check_config(config, initial_scale, setup.state_dtype, names)
    if learning_rate is not None:
        validation.check_scalar_or_schedule(names.get("learning_rate", "learning_rate"), learning_rate)
    validation.check_scalar_or_schedule(names.get("weight_decay", "weight_decay"), weight_decay)
    if weight_decay_mask is not None and not callable(weight_decay_mask):
        jax.tree.map(lambda flag: validation.check_bool("weight_decay_mask", flag), weight_decay_mask)
    return _rms_transformation(_Options(config, initial_scale, setup, learning_rate, weight_decay, weight_decay_mask))
