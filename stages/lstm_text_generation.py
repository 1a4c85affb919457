"""Character-level text generation with an LSTM (Keras' lstm_text_generation.py).

The original reads Nietzsche's writings (600,893 characters) lowercased (57
distinct characters), cuts them into 40-character windows every 3 characters
(x = text[i:i+40], y = text[i+40]; 200,285 windows), one-hot encodes them as
boolean arrays (N, 40, V) and (N, V), and trains LSTM(128) -> Dense(V, softmax)
with RMSprop(0.01) and categorical cross-entropy, batch 128, for 60 epochs
(keras-io's version: 40). After every epoch it picks a random 40-character seed
from the corpus and writes 400 characters at the temperatures 0.2, 0.5, 1.0 and
1.2, sampling with log(p)/T -> softmax -> one multinomial draw. keras-io logs a
training loss of 2.285 after epoch 1 and 1.202 after epoch 40.

Differences from the original:
* The corpus is a parameter (`preprocess.corpus`): `nietzsche` (downloaded and
  checksummed by download@nietzsche) or a UTF-8 text file of your own, Chinese
  included, inside the project and declared as its run's source
  (stages/datasets/text_file.py checks both before reading it). The recipe: put
  the file in the project (texts/mine.txt); in params.yaml, under
  `lstm_text_generation.variants`, add `mine: {preprocess: {corpus: texts/mine.txt}}`
  and under `runs` the run `lstm_text_generation-mine: {example: lstm_text_generation,
  variant: mine, source: texts/mine.txt, loader: stages/datasets/text_file.py}`;
  `dvc repro plot@lstm_text_generation-mine`.
  Lowercasing is a parameter too (on by default, as the original). Off, this
  file has 84 distinct characters, not the 58 that the notes' shapes show.
* Windows are not stored one-hot: preprocess keeps the text once as integer
  indices (uint8 when V <= 256, else uint16/int32) and each window as its start
  offset; the tf.data pipeline gathers the windows and one-hots them inside the
  graph, so the model still sees (None, maxlen, V). For Nietzsche that is
  about 1.4 MB instead of 464 MB of booleans.
* The end of the corpus (`preprocess.validation_fraction`, 5%) is held out:
  no training window reads past the boundary, and evaluate reports validation
  loss and bits per character (loss / ln 2), which the original never measured.
* Default epochs are fewer than 60 so the default run fits in about 20 minutes
  on two CPU cores; `dvc exp run -S lstm_text_generation.train.epochs=60` runs
  the original's length (40 for keras-io's).
* Samples are seeded (a numpy Generator seeded from params.yaml's seed and the
  epoch), so they repeat; all of them go to plots/<run>/training/samples.md,
  which a resumed run rebuilds whole from the list kept with its checkpoint.
* evaluate's final samples (a fixed seed window, every temperature) go to
  data/predictions/<run>/samples.json; plot renders them as
  plots/<run>/figures/samples.md, beside the metrics rather than in them.
* `python -m stages generate lstm_text_generation --seed-text "..."
  --temperature 0.5 --length 400` writes text from the trained model.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import Field, ValidationInfo, model_validator

from stages.core.errors import InputError, ParamsError
from stages.core.files import atomic_dir, load_array, read_json, save_arrays, write_csv, write_json, write_text
from stages.core.layout import META
from stages.core.metrics import write_metrics
from stages.core.params import ExampleParams, Section
from stages.core.run import Run
from stages.core.sequences import Predict, char_table, decode, encode, generate, one_hot_fn, predictor, window_starts

TEXT_DATASETS = ("nietzsche",)  # modules of stages/datasets/ with text_file(folder)
SAMPLES_JSON, SAMPLES_MD = "samples.json", "samples.md"


class Preprocess(Section):
    corpus: str = Field(
        min_length=1, description="'nietzsche' or a UTF-8 text file inside the project, its run's source in params.yaml runs"
    )
    lowercase: bool = Field(description="lowercase the text first, as the original")
    max_chars: int = Field(ge=0, description="use only the first max_chars characters; 0 = all")
    maxlen: int = Field(ge=1, description="characters per window")
    step: int = Field(ge=1, description="characters between window starts")
    validation_fraction: float = Field(ge=0, lt=1, description="end of the corpus held out for validation")


class Train(Section):
    units: int = Field(ge=1, description="LSTM units")
    batch_size: int = Field(ge=1)
    epochs: int = Field(ge=1)
    learning_rate: float = Field(gt=0, description="RMSprop")
    sample_length: int = Field(ge=0, description="characters generated per temperature after each epoch")
    temperatures: list[Annotated[float, Field(gt=0)]] = Field(min_length=1, description="sampling temperatures, each > 0")


class Evaluate(Section):
    batch_size: int = Field(ge=1)
    sample_length: int = Field(ge=0, description="characters of each final sample")
    temperatures: list[Annotated[float, Field(gt=0)]] = Field(min_length=1, description="sampling temperatures, each > 0")


class Plot(Section):
    dpi: int = Field(ge=10, description="resolution of the loss PNG")


class Params(ExampleParams):
    preprocess: Preprocess
    train: Train
    evaluate: Evaluate
    plot: Plot

    @model_validator(mode="after")
    def _check_across_keys(self, info: ValidationInfo) -> Params:
        """A corpus path that cannot be a project file, or a max_chars too short to split, stops every step."""
        key = self.key_namer(info)
        p = self.preprocess
        problem = corpus_path_problem(p.corpus)
        if problem:
            raise ParamsError(corpus_refusal(key("preprocess", "corpus"), p.corpus, problem))
        if p.max_chars and too_short(p.max_chars, p.maxlen, p.validation_fraction):
            split = split_point(p.max_chars, p.validation_fraction)
            raise ParamsError(
                f"'{key('preprocess', 'max_chars')}' = {p.max_chars} with '{key('preprocess', 'validation_fraction')}'"
                f" = {p.validation_fraction} leaves {split} training and {p.max_chars - split} held-out characters; each"
                f" part needs at least '{key('preprocess', 'maxlen')}' + 1 = {p.maxlen + 1} (use 0 for the whole corpus)."
            )
        return self


def dataset(params: Params) -> str | None:
    """The download this run reads, or None when the corpus is a file path."""
    return params.preprocess.corpus if params.preprocess.corpus in TEXT_DATASETS else None


def own_source(params: Params) -> tuple[str, str] | None:
    """A corpus file of your own: the run's source is that file, read by stages/datasets/text_file.py."""
    return None if dataset(params) else (params.preprocess.corpus, "stages/datasets/text_file.py")


def corpus_refusal(key: str, corpus: str, problem: str) -> str:
    """The one paragraph that refuses a corpus: why, then the recipe that makes a file usable."""
    return (
        f"'{key}' = {corpus!r} {problem}. A corpus is {', '.join(map(repr, TEXT_DATASETS))} (a downloaded dataset) "
        "or a UTF-8 file inside the project that the run's preprocess stage declares as a dependency. Put the file "
        "in the project, e.g. texts/mine.txt; in params.yaml, under lstm_text_generation.variants, add "
        "`mine: {preprocess: {corpus: texts/mine.txt}}` and under runs the run "
        "`lstm_text_generation-mine: {example: lstm_text_generation, variant: mine, source: texts/mine.txt, loader: stages/datasets/text_file.py}`; "
        "then run `dvc repro preprocess@lstm_text_generation-mine`."
    )


def corpus_path_problem(corpus: str) -> str | None:
    """Why `corpus` cannot name a file inside the project, judged from its text alone; None if it can."""
    if corpus in TEXT_DATASETS:
        return None
    if os.path.isabs(corpus) or corpus.startswith("~"):
        return "is an absolute path, outside the project"
    parts = Path(os.path.normpath(corpus)).parts
    if parts[:1] == ("..",):
        return "leads out of the project with '..'"
    if parts in ((), (".",)):
        return "names the project folder, not a file"
    return None


# --- pure functions ----------------------------------------------------------


def split_point(n_chars: int, validation_fraction: float) -> int:
    """Index of the first held-out character."""
    return n_chars - int(round(n_chars * validation_fraction))


def too_short(n_chars: int, maxlen: int, validation_fraction: float) -> bool:
    """Whether the training part, or a held-out part asked for, is too short for one window (maxlen + 1)."""
    split = split_point(n_chars, validation_fraction)
    return split < maxlen + 1 or (validation_fraction > 0 and n_chars - split < maxlen + 1)


def epoch_samples(
    predict: Predict,
    text_idx: np.ndarray,
    chars: list[str],
    maxlen: int,
    length: int,
    temperatures: list[float],
    seed: int,
    epoch: int,
) -> dict:
    """One epoch's samples: a seed window drawn by a generator seeded with (seed, epoch), then `length` chars per temperature."""
    rng = np.random.default_rng([seed, epoch])
    start = int(rng.integers(0, len(text_idx) - maxlen))
    seed_idx = text_idx[start : start + maxlen]
    generated = generate(predict, seed_idx, length, temperatures, len(chars), rng)
    return {
        "epoch": epoch,
        "seed_offset": start,
        "seed_text": decode(seed_idx, chars),
        "samples": [{"temperature": t, "text": decode(g, chars)} for t, g in zip(temperatures, generated, strict=True)],
    }


def samples_markdown(title: str, entries: list[dict]) -> str:
    """A readable file of samples: which epoch, seed and temperature each came from."""
    lines = [f"# {title}", ""]
    for entry in entries:
        where = f"epoch {entry['epoch']}" if entry.get("epoch") is not None else "final model"
        lines += [f"## {where}", "", f"Seed (offset {entry['seed_offset']}):", "", "```", entry["seed_text"], "```", ""]
        for s in entry["samples"]:  # each continuation after its seed, so that it does not start mid-word
            heading = f"### {where}, temperature {s['temperature']}"
            note = f"The seed, then {len(s['text'])} generated characters:"
            lines += [heading, "", note, "", "```", entry["seed_text"] + s["text"], "```", ""]
    return "\n".join(lines)


def score(val_loss: float | None, characters: int, vocab_size: int, val_windows: int) -> dict:
    """metrics/<run>.json: the corpus counts, and with a hold-out its loss in nats and in bits per character."""
    metrics: dict = {"characters": characters, "vocab_size": vocab_size, "val_windows": val_windows}
    if val_loss is not None:
        metrics.update(val_loss=val_loss, val_bits_per_char=val_loss / math.log(2))
    return metrics


def build_model(maxlen: int, vocab_size: int, units: int, learning_rate: float):
    """LSTM(units) -> Dense(V, softmax) on (None, maxlen, V) one-hot input."""
    import keras

    model = keras.Sequential(
        [keras.Input(shape=(maxlen, vocab_size)), keras.layers.LSTM(units), keras.layers.Dense(vocab_size, activation="softmax")]
    )
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=learning_rate), loss="categorical_crossentropy")
    return model


# --- steps -------------------------------------------------------------------


def corpus_text(run: Run) -> tuple[str, str]:
    """(where, text): the verified download, or a project file that stages/datasets/text_file.py lets through."""
    corpus = run.params.corpus
    if run.raw is not None:
        path = importlib.import_module(f"stages.datasets.{corpus}").text_file(run.raw)
        return str(path), path.read_bytes().decode("utf-8")  # checksummed by its download
    from stages.datasets import text_file

    try:
        return os.path.normpath(corpus), text_file.load(corpus, f"preprocess@{run.paths.key}")
    except text_file.Refused as err:
        raise ParamsError(corpus_refusal(run.param_key("corpus"), corpus, err.problem)) from None


def preprocess(run: Run) -> None:
    """The corpus as char indices, its character table, and the start of every training and held-out window."""
    p = run.params
    where, text = corpus_text(run)
    text = text.lower() if p.lowercase else text
    text = text[: p.max_chars] if p.max_chars else text
    split = split_point(len(text), p.validation_fraction)
    if too_short(len(text), p.maxlen, p.validation_fraction):
        raise InputError(
            f"corpus {where} has {len(text)} characters{' (after max_chars)' if p.max_chars else ''}; with "
            f"'{run.param_key('validation_fraction')}' = {p.validation_fraction} the training part ({split}) and the "
            f"held-out part ({len(text) - split}) each need at least '{run.param_key('maxlen')}' + 1 = {p.maxlen + 1}."
        )
    chars = char_table(text)
    text_idx = encode(text, chars)
    train_starts = window_starts(0, split, p.maxlen, p.step)
    val_starts = window_starts(split, len(text), p.maxlen, p.step)
    with atomic_dir(run.paths.processed) as out:
        save_arrays(out, {"text": text_idx, "train_starts": train_starts, "val_starts": val_starts})
        write_json(out / "chars.json", {"chars": chars})
        write_json(
            out / META,
            {
                "corpus": where,
                "characters": len(text),
                "vocab_size": len(chars),
                "maxlen": p.maxlen,
                "step": p.step,
                "split": split,
                "train_windows": len(train_starts),
                "val_windows": len(val_starts),
                "all_windows": len(window_starts(0, len(text), p.maxlen, p.step)),
                "lowercase": p.lowercase,
                "text": f"({len(text)},) {text_idx.dtype} char indices",
                "starts": "(N,) int32 window starts",
            },
        )
    counts = f"{len(text):,} characters, {len(chars)} symbols, {len(train_starts):,} training and {len(val_starts):,}"
    print(f"{where}: {counts} validation windows")


def load_processed(folder: Path) -> tuple[np.ndarray, list[str], dict]:
    return load_array(folder, "text"), read_json(folder / "chars.json")["chars"], read_json(folder / META)


def stored_samples(store: Path) -> list[dict]:
    return read_json(store)["entries"] if store.is_file() else []


def write_samples(run: Run, entries: list[dict]) -> None:
    write_text(run.paths.training / SAMPLES_MD, samples_markdown(f"Samples after each epoch ({run.paths.key})", entries))


def samples_callback(run: Run, text_idx: np.ndarray, chars: list[str], maxlen: int, store: Path):
    """After each epoch: seeded samples, replacing any of a redone epoch (a resumed run redoes the cut-short one)."""
    import keras

    p = run.params

    def on_epoch_end(epoch: int, logs: dict | None = None) -> None:
        if not p.sample_length:
            return
        model = predictor(callback.model)
        entry = epoch_samples(model, text_idx, chars, maxlen, p.sample_length, p.temperatures, run.seed, epoch + 1)
        kept = [e for e in stored_samples(store) if e["epoch"] <= epoch] + [entry]
        write_json(store, {"entries": kept})  # kept with the checkpoint, and discarded with it
        write_samples(run, kept)
        first = entry["samples"][0]
        print(f"\nepoch {epoch + 1}, seed {entry['seed_text']!r}, T={first['temperature']}: {first['text'][:120]!r}", flush=True)

    callback = keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)
    return callback


def train(run: Run) -> None:
    """RMSprop on the training windows, one-hot inside tf.data, with seeded samples after every epoch."""
    from stages import training

    with training.train_guard(run):
        p = run.params
        text_idx, chars, meta = load_processed(run.paths.processed)
        maxlen, vocab = meta["maxlen"], len(chars)
        train_starts = load_array(run.paths.processed, "train_starts")
        val_starts = load_array(run.paths.processed, "val_starts")
        training.seed_everything(run.seed)
        build = {"maxlen": maxlen, "vocab_size": vocab, "units": p.units, "learning_rate": p.learning_rate}
        model = build_model(**build)
        to_one_hot = one_hot_fn(text_idx, maxlen, vocab)
        validation = None
        if len(val_starts):
            validation, _ = training.batches([val_starts], p.batch_size, seed=run.seed, shuffle=False, map_fn=to_one_hot)
        store = run.paths.checkpoints / SAMPLES_JSON  # goes with a checkpoint that is discarded
        training.fit(
            model,
            lambda first: training.batches(
                [train_starts], p.batch_size, seed=run.seed, first_epoch=first, epochs=p.epochs, map_fn=to_one_hot
            ),
            run=run,
            epochs=p.epochs,
            validation_data=validation,
            callbacks=[samples_callback(run, text_idx, chars, maxlen, store)],
        )
        write_samples(run, stored_samples(store))  # whole, even when a resume had no epoch left to train
        training.save_trained(model, run, build, {"parameters": model.count_params()})


def evaluate(run: Run) -> None:
    """Validation loss and bits per character into metrics/<run>.json; the final model's samples into predictions."""
    from stages import training

    p = run.params
    text_idx, chars, meta = load_processed(run.paths.processed)
    val_starts = load_array(run.paths.processed, "val_starts")
    training.seed_everything(run.seed)
    model, _ = training.load_trained(run, build_model)
    val_loss = None
    if len(val_starts):
        to_one_hot = one_hot_fn(text_idx, meta["maxlen"], len(chars))
        data, _ = training.batches([val_starts], p.batch_size, seed=run.seed, shuffle=False, map_fn=to_one_hot)
        val_loss = float(model.evaluate(data, verbose=0))
    metrics = score(val_loss, meta["characters"], len(chars), len(val_starts))
    entry = epoch_samples(predictor(model), text_idx, chars, meta["maxlen"], p.sample_length, p.temperatures, run.seed, 0)
    with atomic_dir(run.paths.predictions) as out:
        write_json(out / SAMPLES_JSON, dict(entry, epoch=None))  # text, not numbers: `dvc metrics show` stays a table
    write_metrics(run.paths.metrics, metrics)
    if val_loss is not None:
        print(f"validation loss {val_loss:.4f} nats/char, {metrics['val_bits_per_char']:.4f} bits/char")


def plot(run: Run) -> None:
    """history.csv and loss.png from train's per-epoch losses; samples.md from evaluate's final samples."""
    from stages.plotting import HISTORY, epochs_png, history_columns, read_live_metrics

    curves = read_live_metrics(run.paths.training)
    if "loss" not in curves:
        raise InputError(
            f"{run.paths.training} has no per-epoch loss (plots/metrics/loss.tsv); run `dvc repro train@{run.paths.key}`."
        )
    columns = history_columns({name: curves[name] for name in ("loss", "val_loss") if name in curves})
    entry = read_json(run.paths.predictions / SAMPLES_JSON)
    with atomic_dir(run.paths.figures) as out:
        write_csv(out / HISTORY, columns)
        write_text(out / SAMPLES_MD, samples_markdown(f"Samples from the final model ({run.paths.key})", [entry]))
        panels = {"loss": "cross-entropy (nats/char, log scale)"}
        epochs_png(out / "loss.png", {run.paths.key: columns}, panels, f"Loss per epoch ({run.paths.key})", run.params.dpi)


# --- generate: a command of this example's own (stages/generate.py) ---------


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """`python -m stages generate lstm_text_generation --seed-text ...`: no stage runs it, so it lives apart."""
    from stages.generate import add_generate_command

    add_generate_command(subparsers)
