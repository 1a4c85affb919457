"""A train stage's resume state: per-epoch checkpoints, and the fingerprint that says whose they are.

`training.fit` saves one after every epoch and resumes from it when a train
stage runs again after an interruption, but only if it was made by the same
run: the same train params, variant, seed, input data and training code
(`run_fingerprint`). Anything else is discarded with one line saying why, so a
result in dvc.lock is always what its params, data and code give. Only train
stages import this module (through training.fit and training.save_trained).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from stages.core.files import atomic_file, read_json, write_json

STAGES_DIR = Path(__file__).resolve().parent


# --- what made a checkpoint --------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_fingerprint(run) -> dict[str, Any]:
    """What a run's training depends on, as JSON: resume only when all of it is unchanged.

    train: the run's merged train section; variant; seed; data: the hash of
    every file under data/processed/<run>; code: the hashes of the example's
    module, this file and stages/core/*.py (the code that trains).
    """
    processed = Path(run.paths.processed)
    data = {f.relative_to(processed).as_posix(): _sha256(f) for f in sorted(processed.rglob("*")) if f.is_file()}
    sources = [
        STAGES_DIR / f"{run.example}.py",
        STAGES_DIR / "training.py",
        STAGES_DIR / "checkpoints.py",
        *sorted((STAGES_DIR / "core").glob("*.py")),
    ]
    code = {f.relative_to(STAGES_DIR.parent).as_posix(): _sha256(f) for f in sources}
    fingerprint = {
        "variant": run.variant,
        "train": run.params.model_dump(mode="json"),
        "seed": run.seed,
        "data": data,
        "code": code,
    }
    return json.loads(json.dumps(fingerprint))  # the form it has once read back from state.json


def _changed_keys(old: Any, new: dict[str, Any], limit: int = 4) -> str:
    old = old if isinstance(old, dict) else {}
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    more = f", and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def fingerprint_differences(old: Any, new: dict[str, Any]) -> list[str]:
    """Why a checkpoint made under `old` does not belong to a run with `new` (empty: it does)."""
    if not isinstance(old, dict):
        return ["it records no fingerprint of what made it (written by an older version)"]
    reasons = []
    if old.get("variant") != new["variant"]:
        reasons.append(f"variant changed ({old.get('variant')} -> {new['variant']})")
    if old.get("train") != new["train"]:
        reasons.append(f"train params changed ({_changed_keys(old.get('train'), new['train'])})")
    if old.get("seed") != new["seed"]:
        reasons.append(f"seed changed ({old.get('seed')} -> {new['seed']})")
    if old.get("data") != new["data"]:
        reasons.append(f"input data changed ({_changed_keys(old.get('data'), new['data'])})")
    if old.get("code") != new["code"]:
        reasons.append(f"code changed ({_changed_keys(old.get('code'), new['code'])})")
    return reasons


# --- the checkpoint ----------------------------------------------------------


class ResumableCheckpoint:
    """Per-epoch weights + optimizer state + logs in one folder, written atomically.

    The folder holds `epoch-<k>.weights.h5` and `state.json` ({"epoch": k,
    "weights": file, "history": [...], "fingerprint": {...}}). state.json is
    replaced only after its weights file is complete, so whatever a kill
    interrupts, state.json points at a whole checkpoint. An example may keep
    files of its own in the folder (lstm_text_generation's samples.json): they
    go whenever the checkpoint is discarded.
    """

    def __init__(self, folder: str | os.PathLike, fingerprint: dict[str, Any] | None = None):
        self.folder = Path(folder)
        self.state_path = self.folder / "state.json"
        self.fingerprint = fingerprint

    def load(self) -> dict[str, Any] | None:
        """The state of a whole checkpoint, or None when state.json or its weights file is missing or unreadable."""
        try:
            state = read_json(self.state_path)
            state["epoch"], state["history"] = int(state["epoch"]), list(state["history"])
            whole = (self.folder / state["weights"]).is_file()
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return state if whole else None

    def restore(self, model, epochs: int) -> tuple[int, list[dict[str, float]]]:
        """Load the last checkpoint into `model`; return (epochs done, history).

        A checkpoint made by other params, data or code, one past `epochs`, or
        one whose weights do not fit `model` is discarded with one printed line,
        and (0, []) comes back with `model` as it was.
        """
        if not self.state_path.is_file():
            self.clear()  # leftovers of a run killed before its first checkpoint
            return 0, []
        state = self.load()
        if state is None:
            reasons = ["its state.json or weights file is unreadable"]
        elif self.fingerprint is not None:
            reasons = fingerprint_differences(state.get("fingerprint"), self.fingerprint)
        else:
            reasons = []
        if not reasons and state["epoch"] > epochs:
            reasons = [f"it is at epoch {state['epoch']}, past the {epochs} epochs this run trains"]
        if not reasons:
            try:
                _load_weights_or_keep(model, self.folder / state["weights"])
            except Exception as err:  # noqa: BLE001 -- Keras raises several kinds for a weights file of another shape
                detail = " ".join(str(err).split())[:240]
                reasons = [f"its weights do not fit this model ({type(err).__name__}: {detail})"]
        if reasons:
            print(f"Discarding checkpoint {self.folder}: {', '.join(reasons)}; training from epoch 0.", flush=True)
            self.clear()
            return 0, []
        return state["epoch"], state["history"]

    def save(self, model, epoch: int, history: list[dict[str, float]]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch:05d}.weights.h5"
        with atomic_file(self.folder / name, suffix=".weights.h5") as tmp:
            model.save_weights(tmp)
        write_json(self.state_path, {"epoch": epoch, "weights": name, "history": history, "fingerprint": self.fingerprint})
        for old in self.folder.glob("epoch-*.weights.h5"):
            if old.name != name:
                old.unlink()

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _load_weights_or_keep(model, path: Path) -> None:
    """Load weights (optimizer state included); if that fails, put `model` back as it was, then raise."""
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    variables = list(model.weights) + (list(model.optimizer.variables) if model.optimizer is not None else [])
    before = [v.numpy() for v in variables]
    try:
        model.load_weights(path)
    except Exception:
        for variable, value in zip(variables, before, strict=True):
            variable.assign(value)
        raise
