"""Orbax save and restore: bit-identical resume, and refusal to restore into another layout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import run_steps

import rmsprop_jax
from rmsprop_jax import checkpoint, presets

PARAMS = {"w": jnp.arange(12.0).reshape(3, 4) / 7, "b": jnp.linspace(-1.0, 1.0, 4)}


def _grads(params, step):
    return jax.tree.map(lambda p: jnp.sin(3.0 * p + step) * (1.0 + p * p), params)


def _steps(tx, params, state, start, stop):
    return run_steps(tx, params, (_grads, range(start, stop)), state=state)[:2]


@pytest.mark.parametrize(
    "make",
    [
        lambda: rmsprop_jax.rmsprop(optax.cosine_decay_schedule(1e-2, 20), momentum=0.9, centered=True),
        lambda: rmsprop_jax.rmsprop(1e-2, momentum=0.9, state_dtype="bfloat16"),  # count keys the rounding
        lambda: presets.pytorch(lr=1e-2, momentum=0.9, weight_decay=1e-3),
    ],
    ids=["schedule+centered", "bfloat16-state", "pytorch"],
)
def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(make, tmp_path):
    tx = make()
    full_params, full_state = _steps(tx, PARAMS, tx.init(PARAMS), 0, 20)
    params, state = _steps(tx, PARAMS, tx.init(PARAMS), 0, 8)
    checkpoint.save(tmp_path / "step8", {"params": params, "opt_state": state})
    target = {"params": PARAMS, "opt_state": make().init(PARAMS)}
    restored = checkpoint.restore(tmp_path / "step8", target)
    assert isinstance(restored["opt_state"], rmsprop_jax.RmsPropState)
    resumed_params, resumed_state = _steps(tx, restored["params"], restored["opt_state"], 8, 20)
    jax.tree.map(np.testing.assert_array_equal, resumed_params, full_params)
    jax.tree.map(np.testing.assert_array_equal, resumed_state, full_state)


@pytest.mark.parametrize(
    ("other", "message"),
    [
        (lambda: rmsprop_jax.rmsprop(1e-3, momentum=0.9, centered=True), "mu/b: in the target, not in the checkpoint"),
        (lambda: rmsprop_jax.rmsprop(1e-3), "trace/w: in the checkpoint, not in the target"),
        (
            lambda: rmsprop_jax.rmsprop(1e-3, momentum=0.9, state_dtype="bfloat16"),
            "nu/w: dtype float32 in the checkpoint, bfloat16 in the target",
        ),
        (
            lambda: rmsprop_jax.rmsprop(optax.constant_schedule(1e-3), momentum=0.9),
            "count: in the target, not in the checkpoint",
        ),
        (lambda: presets.keras(momentum=0.9, clipnorm=1.0), "in the target, not in the checkpoint"),
    ],
    ids=["centered", "no-momentum", "bfloat16-state", "schedule-count", "keras-clipnorm"],
)
def test_restoring_into_another_layout_names_the_mismatch(other, message, tmp_path):
    state = rmsprop_jax.rmsprop(1e-3, momentum=0.9).init(PARAMS)
    checkpoint.save(tmp_path / "ckpt", state)
    with pytest.raises(ValueError, match="does not match the target") as error:
        checkpoint.restore(tmp_path / "ckpt", other().init(PARAMS))
    assert message in str(error.value)


def test_restoring_into_other_shapes_names_the_leaf(tmp_path):
    tx = rmsprop_jax.rmsprop(1e-3)
    checkpoint.save(tmp_path / "ckpt", tx.init(PARAMS))
    other = tx.init({"w": jnp.zeros((3, 5)), "b": jnp.zeros(4)})
    with pytest.raises(ValueError, match=r"nu/w: shape \(3, 4\) in the checkpoint, \(3, 5\) in the target"):
        checkpoint.restore(tmp_path / "ckpt", other)


def test_mismatches_is_empty_for_equal_layouts_and_abstract_targets():
    state = rmsprop_jax.rmsprop(1e-3, momentum=0.9).init(PARAMS)
    assert checkpoint.mismatches(state, jax.eval_shape(lambda: state)) == []


def test_a_tree_with_python_numbers_round_trips(tmp_path):
    tx = rmsprop_jax.rmsprop(1e-3, momentum=0.9)
    item = {"params": PARAMS, "opt_state": tx.init(PARAMS), "step": 100, "loss": 0.25}
    checkpoint.save(tmp_path / "ckpt", item)
    restored = checkpoint.restore(tmp_path / "ckpt", item)
    assert restored["step"] == 100 and restored["loss"] == 0.25
    jax.tree.map(np.testing.assert_array_equal, restored["opt_state"], item["opt_state"])
    with pytest.raises(ValueError, match="step: dtype int64 in the checkpoint, float64 in the target"):
        checkpoint.restore(tmp_path / "ckpt", {**item, "step": 100.0})


def test_save_refuses_what_it_could_not_restore(tmp_path):
    with pytest.raises(ValueError, match=r"cannot checkpoint leaf meta/name: a str, not an array or a real number"):
        checkpoint.save(tmp_path / "ckpt", {"w": PARAMS["w"], "meta": {"name": "run 1"}})
    assert not (tmp_path / "ckpt").exists()


def test_saving_twice_to_one_path_is_a_clear_error(tmp_path):
    checkpoint.save(tmp_path / "ckpt", PARAMS)
    with pytest.raises(ValueError, match=r"it exists already.*CheckpointManager"):
        checkpoint.save(tmp_path / "ckpt", PARAMS)


def _manager(directory, keep=2):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=keep)
    return ocp, ocp.CheckpointManager(directory, options=options, item_handlers=ocp.StandardCheckpointHandler())


def test_restore_from_a_checkpoint_manager_takes_its_latest_step_and_checks_the_layout(tmp_path):
    tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9)
    ocp, manager = _manager(tmp_path / "run")
    params, state = PARAMS, tx.init(PARAMS)
    for step in (4, 8, 12):
        params, state = _steps(tx, params, state, step - 4, step)
        manager.save(step, args=ocp.args.StandardSave({"params": params, "opt_state": state}))
    manager.wait_until_finished()
    assert manager.all_steps() == [8, 12]  # keeps the last two
    target = {"params": PARAMS, "opt_state": tx.init(PARAMS)}
    _, reopened = _manager(tmp_path / "run")  # as a new process would
    restored = checkpoint.restore(reopened, target)
    jax.tree.map(np.testing.assert_array_equal, restored, {"params": params, "opt_state": state})
    at_8 = checkpoint.restore(reopened, target, step=8)
    assert not np.array_equal(at_8["params"]["w"], params["w"])
    with pytest.raises(ValueError, match=r"holds no checkpoint of step 4 \(steps held: \[8, 12\]\)"):
        checkpoint.restore(reopened, target, step=4)
    with pytest.raises(ValueError, match="step 12 does not match the target"):
        checkpoint.restore(reopened, {"params": PARAMS, "opt_state": rmsprop_jax.rmsprop(1e-2).init(PARAMS)})
    with pytest.raises(ValueError, match="step= needs a CheckpointManager"):
        checkpoint.restore(tmp_path / "run", target, step=8)


def test_an_empty_manager_says_so(tmp_path):
    _, manager = _manager(tmp_path / "run")
    with pytest.raises(ValueError, match="holds no checkpoint yet"):
        checkpoint.restore(manager, PARAMS)


def test_a_manager_without_the_standard_handler_is_told_what_to_pass(tmp_path):
    ocp, manager = _manager(tmp_path / "run")
    manager.save(1, args=ocp.args.StandardSave(PARAMS))
    manager.wait_until_finished()
    with pytest.raises(ValueError, match=r"item_handlers=orbax\.checkpoint\.StandardCheckpointHandler"):
        checkpoint.restore(ocp.CheckpointManager(tmp_path / "run"), PARAMS)


PARAMS_8BIT = {"w": jnp.asarray(np.random.default_rng(0).standard_normal((64, 128)), jnp.float32), "b": jnp.zeros(16)}


@pytest.mark.parametrize("variant", [{}, {"momentum": 0.9, "centered": True}], ids=["plain", "centered+momentum"])
def test_an_8bit_state_resumes_bit_identically(variant, tmp_path):
    def make() -> optax.GradientTransformation:
        return rmsprop_jax.rmsprop(optax.cosine_decay_schedule(1e-2, 20), state_dtype="8bit", **variant)

    tx = make()
    full = _steps(tx, PARAMS_8BIT, tx.init(PARAMS_8BIT), 0, 20)
    params, state = _steps(tx, PARAMS_8BIT, tx.init(PARAMS_8BIT), 0, 8)
    assert state.nu["w"].codes.dtype == jnp.uint8
    checkpoint.save(tmp_path / "step8", {"params": params, "opt_state": state})
    restored = checkpoint.restore(tmp_path / "step8", {"params": PARAMS_8BIT, "opt_state": make().init(PARAMS_8BIT)})
    resumed = _steps(tx, restored["params"], restored["opt_state"], 8, 20)
    jax.tree.map(np.testing.assert_array_equal, resumed, full)


def test_restoring_an_8bit_state_into_a_float32_one_names_the_mismatch_and_the_converter(tmp_path):
    eight_bit = rmsprop_jax.rmsprop(1e-3, momentum=0.9, state_dtype="8bit")
    state = _steps(eight_bit, PARAMS_8BIT, eight_bit.init(PARAMS_8BIT), 0, 3)[1]
    checkpoint.save(tmp_path / "ckpt", state)
    float32 = rmsprop_jax.rmsprop(1e-3, momentum=0.9)
    with pytest.raises(ValueError, match="nu/w/codes: in the checkpoint, not in the target") as error:
        checkpoint.restore(tmp_path / "ckpt", float32.init(PARAMS_8BIT))
    assert "rmsprop_jax.convert_state" in str(error.value)
    # What the message says to do: restore as saved, then convert.
    restored = checkpoint.restore(tmp_path / "ckpt", eight_bit.init(PARAMS_8BIT))
    converted = rmsprop_jax.convert_state(restored, float32.init(PARAMS_8BIT))
    assert converted.nu["w"].dtype == jnp.float32
    np.testing.assert_array_equal(converted.nu["w"], rmsprop_jax.state_as_float32(state).nu["w"])


def test_restoring_a_float32_state_into_a_bfloat16_one_says_to_convert(tmp_path):
    tx = rmsprop_jax.rmsprop(1e-3, momentum=0.9)
    checkpoint.save(tmp_path / "ckpt", tx.init(PARAMS))
    bfloat16 = rmsprop_jax.rmsprop(1e-3, momentum=0.9, state_dtype="bfloat16")
    with pytest.raises(ValueError, match="nu/w: dtype float32 in the checkpoint, bfloat16 in the target") as error:
        checkpoint.restore(tmp_path / "ckpt", bfloat16.init(PARAMS))
    assert "another state_dtype" in str(error.value) and "rmsprop_jax.convert_state" in str(error.value)


def test_a_missing_path_an_empty_directory_and_a_file_say_there_is_no_checkpoint(tmp_path):
    state = rmsprop_jax.rmsprop(1e-2).init(PARAMS)
    with pytest.raises(ValueError, match=r"no checkpoint at .*nope: the path does not exist"):
        checkpoint.restore(tmp_path / "nope", state)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no checkpoint at .*empty: the directory is empty"):
        checkpoint.restore(tmp_path / "empty", state)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"no checkpoint at .*other: it holds no Orbax checkpoint"):
        checkpoint.restore(tmp_path / "other", state)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"no checkpoint at .*file: it is a file"):
        checkpoint.restore(tmp_path / "file", state)


@pytest.mark.parametrize("damage", ["metadata", "data"])
def test_a_damaged_checkpoint_says_it_cannot_be_read(damage, tmp_path):
    tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9, state_dtype="8bit", pack_small_leaves=True)
    params = {"w": jnp.ones((64, 64)), "b1": jnp.ones(8), "b2": jnp.ones(8)}
    state = tx.init(params)
    checkpoint.save(tmp_path / "ckpt", state)
    files = [p for p in (tmp_path / "ckpt").rglob("*") if p.is_file() and p.stat().st_size > 0]
    if damage == "metadata":
        files = [p for p in files if p.name == "_METADATA"]
    else:  # the array data: tensorstore's chunks, truncated as a full disk leaves them
        files = [p for p in files if "ocdbt.process" in p.as_posix() or p.parent.name == "d"]
    assert files
    for path in files:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(ValueError, match=r"the checkpoint at .*ckpt cannot be read: it is damaged or truncated"):
        checkpoint.restore(tmp_path / "ckpt", state)


def test_8bit_blocks_cut_for_another_sharding_are_named_as_such(tmp_path):
    """An 8-bit leaf's blocks fit its shards: after a mesh change the same codes come with scales
    of another shape, and the message says so instead of blaming state_dtype."""
    from rmsprop_jax import _codec_8bit as codec

    params = {"w": jnp.ones((64, 1024))}
    state = rmsprop_jax.rmsprop(1e-2, state_dtype="8bit").init(params)
    checkpoint.save(tmp_path / "ckpt", state)
    other = codec.encode(jnp.ones((64, 1024)), codec.Layout("runs", 1, 128), codec.UNSIGNED, None)  # 128-wide shards
    target = state._replace(nu={"w": other})
    assert target.nu["w"].scales.shape != state.nu["w"].scales.shape
    with pytest.raises(ValueError, match="8-bit block layout differs") as error:
        checkpoint.restore(tmp_path / "ckpt", target)
    assert "state_dtype" not in str(error.value).split("differs", 1)[1].split(".", 1)[0]
    assert "sharding" in str(error.value) and "convert_state" in str(error.value)
