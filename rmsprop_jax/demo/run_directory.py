"""The demo's directories: writable outputs, and checkpoint directories that belong to one run."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any


def check_writable(directory: Path) -> None:
    """Creates ``directory`` if needed.

    Raises:
      OSError: it cannot be created or written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=directory):
        pass


def check_checkpoint_layout(directory: Path) -> None:
    """Refuses a checkpoint directory in rmsprop_jax 0.1's layout (``step_<n>`` directories).

    Checkpoints are now kept by Orbax's ``CheckpointManager`` (one directory per step,
    named by the step number); the old directories would be silently ignored.

    Raises:
      ValueError: ``directory`` holds ``step_<n>`` directories.
    """
    old = sorted(path.name for path in Path(directory).glob("step_*") if path.is_dir())
    if old:
        raise ValueError(
            f"{directory} holds checkpoints in the old step_<n> layout ({', '.join(old)}), which this version "
            "does not resume; use a new directory"
        )


def check_same_run(directory: Path, settings: dict[str, Any]) -> None:
    """Records a run's settings in ``run.json`` of its checkpoint directory.

    Raises:
      ValueError: the directory holds a run with other settings (its checkpoints
        would not resume this one), naming each difference.
    """
    record = directory / "run.json"
    current = json.loads(json.dumps(settings))
    if not record.exists():
        record.write_text(json.dumps(settings, indent=2) + "\n")
        return
    saved = json.loads(record.read_text())
    if saved != current:
        differences = ", ".join(
            f"{key} {saved.get(key)!r} there, {value!r} now"
            for key, value in current.items()
            if saved.get(key) != value
        )
        raise ValueError(f"it holds another run ({differences}); use a new directory")
