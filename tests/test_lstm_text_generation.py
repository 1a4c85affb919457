"""lstm_text_generation: hold-out, chars.json, seeded samples, scoring, corpus errors, tiny training, and real dvc repros.

The token-sequence helpers it uses (character table, windows, sampler): tests/test_sequences.py.
"""

from __future__ import annotations

import json
import math
import re
import sys

import numpy as np
import pytest
import yaml

from stages import lstm_text_generation as ltg
from stages.core.errors import ParamsError
from stages.core.files import read_json, write_json
from stages.core.layout import Layout
from stages.core.params import validate_example
from stages.core.run import Run, make_run
from stages.core.sequences import char_table, decode, encode, one_hot_fn, window_starts

from conftest import ROOT, SHARED_DATASETS, add_run, assert_code_deps_match_imports, run, set_param

ENGLISH = "The will to power is the will to life; what does not kill us makes us stronger. " * 40
RNG = np.random.default_rng(0)
# > 256 distinct characters, so indices need uint16
CHINESE = "".join(chr(0x4E00 + int(i)) for i in RNG.integers(0, 300, size=3000)) + "。天下大势，分久必合，合久必分。"


def fake_predict(vocab: int):
    """A deterministic stand-in for the model: probabilities that depend on the window."""

    def predict(x):
        idx = x.argmax(-1)  # (B, maxlen)
        logits = np.sin(np.arange(vocab)[None, :] * (1 + idx.sum(1, keepdims=True) % 7))
        p = np.exp(3 * logits)
        return p / p.sum(1, keepdims=True)

    return predict


def test_holdout_windows_do_not_cross_the_boundary():
    n, maxlen, step = len(ENGLISH), 40, 3
    split = ltg.split_point(n, 0.05)
    train, val = window_starts(0, split, maxlen, step), window_starts(split, n, maxlen, step)
    assert train.max() + maxlen < split and val.min() == split and val.max() + maxlen < n
    assert list(window_starts(0, n, maxlen, step)) == list(range(0, n - maxlen, step))


def test_character_table_round_trips_through_json(tmp_path):
    for text, dtype in [(ENGLISH, np.uint8), (CHINESE, np.uint16)]:
        chars = char_table(text)
        write_json(tmp_path / "chars.json", {"chars": chars})
        assert "\\u" not in (tmp_path / "chars.json").read_text(encoding="utf-8")  # readable, not escaped
        loaded = read_json(tmp_path / "chars.json")["chars"]
        assert loaded == chars
        idx = encode(text, loaded)
        assert idx.dtype == dtype and decode(idx, loaded) == text


def test_epoch_samples_repeat():
    chars = char_table(ENGLISH)
    idx = encode(ENGLISH, chars)
    predict = fake_predict(len(chars))
    a = ltg.epoch_samples(predict, idx, chars, 10, 50, [0.2, 1.2], seed=7, epoch=3)
    b = ltg.epoch_samples(predict, idx, chars, 10, 50, [0.2, 1.2], seed=7, epoch=3)
    c = ltg.epoch_samples(predict, idx, chars, 10, 50, [0.2, 1.2], seed=8, epoch=3)
    assert a == b and a != c
    assert [len(s["text"]) for s in a["samples"]] == [50, 50]
    md = ltg.samples_markdown("t", [a])
    assert "epoch 3, temperature 0.2" in md and "epoch 3, temperature 1.2" in md and a["seed_text"] in md


def test_samples_md_shows_each_continuation_after_its_seed():
    """The seed ends where it ends (often mid-word): each sample's block starts with the seed, then the continuation."""
    entry = {"epoch": 2, "seed_offset": 5, "seed_text": "perhaps a", "samples": [{"temperature": 0.5, "text": "nd more"}]}
    blocks = ltg.samples_markdown("t", [entry]).split("```")[1::2]  # the fenced blocks, in order
    assert [b.strip("\n") for b in blocks] == ["perhaps a", "perhaps and more"]
    assert "The seed, then 7 generated characters:" in ltg.samples_markdown("t", [entry])


def test_a_corpus_needs_one_window_on_each_side_of_the_split():
    assert ltg.split_point(1000, 0.05) == 950
    assert not ltg.too_short(1000, 40, 0.05)  # 950 training and 50 held-out characters, each > 40
    assert ltg.too_short(1000, 50, 0.05)  # the held-out part (50) has no window of 50 + 1
    assert not ltg.too_short(51, 50, 0.0) and ltg.too_short(50, 50, 0.0)  # no hold-out asked for: only the training part
    assert ltg.too_short(0, 1, 0.0)


def test_score_gives_bits_per_char_and_the_counts():
    """A uniform guess over 8 symbols costs ln 8 nats: exactly 3 bits per character."""
    metrics = ltg.score(math.log(8), characters=1000, vocab_size=8, val_windows=17)
    assert metrics == {
        "characters": 1000,
        "vocab_size": 8,
        "val_windows": 17,
        "val_loss": math.log(8),
        "val_bits_per_char": pytest.approx(3.0, rel=1e-15),
    }
    assert ltg.score(None, characters=1000, vocab_size=8, val_windows=0) == {
        "characters": 1000,
        "vocab_size": 8,
        "val_windows": 0,
    }


def test_tiny_model_loss_falls():
    from stages import training

    training.seed_everything(0)
    text = ENGLISH[:800]
    chars = char_table(text)
    idx = encode(text, chars)
    starts = window_starts(0, len(text), 10, 2)
    model = ltg.build_model(10, len(chars), 32, 0.01)
    data, steps = training.batches([starts], 64, seed=0, epochs=4, map_fn=one_hot_fn(idx, 10, len(chars)))
    assert model.input_shape == (None, 10, len(chars))
    losses = model.fit(data, epochs=4, steps_per_epoch=steps, verbose=0).history["loss"]
    assert losses[-1] < 0.8 * losses[0]


def test_dvc_repro_on_nietzsche(project):
    run(["dvc", "repro", "plot@lstm_text_generation-nietzsche"], project, DATASETS_MIRROR=str(SHARED_DATASETS))
    key = "lstm_text_generation-nietzsche"
    meta = read_json(project / "data/processed" / key / "meta.json")
    assert meta["characters"] == 4000 and meta["maxlen"] == 40 and meta["step"] == 3
    assert np.load(project / "data/processed" / key / "text.npy").dtype == np.uint8
    chars = read_json(project / "data/processed" / key / "chars.json")["chars"]
    assert chars == sorted(set(chars)) and all(c == c.lower() for c in chars)

    metrics = read_json(project / Layout(key).metrics)
    assert metrics.pop("computed_on")["keras"]
    assert {"val_loss", "val_bits_per_char", "vocab_size"} <= set(metrics)
    assert all(isinstance(v, (int, float)) for v in metrics.values())  # numbers only: dvc metrics show stays a table
    assert metrics["val_bits_per_char"] == pytest.approx(metrics["val_loss"] / np.log(2))
    # evaluate keeps the final samples as data; plot renders them (and nothing is relayed: no history.json)
    assert sorted(p.name for p in (project / "data/predictions" / key).iterdir()) == ["samples.json"]
    final = read_json(project / "data/predictions" / key / "samples.json")
    assert final["epoch"] is None and [s["temperature"] for s in final["samples"]] == [0.2, 0.5, 1.0, 1.2]
    rendered = (project / Layout(key).figures / "samples.md").read_text(encoding="utf-8")
    assert rendered == ltg.samples_markdown(f"Samples from the final model ({key})", [final])
    assert "final model, temperature 0.2" in rendered and final["seed_text"] + final["samples"][1]["text"] in rendered
    assert not list(project.glob("**/history.json"))
    model_json = read_json(project / "models" / key / "model.json")
    assert model_json["build"] == {"maxlen": 40, "vocab_size": len(chars), "units": 32, "learning_rate": 0.01}
    assert model_json["info"]["parameters"] == 4 * (32 * (len(chars) + 32) + 32) + (32 + 1) * len(chars)

    samples = (project / Layout(key).training / "samples.md").read_text(encoding="utf-8")
    for epoch in (1, 2):
        for t in (0.2, 1.0):
            assert f"epoch {epoch}, temperature {t}" in samples
    assert "Seed (offset" in samples
    assert (project / "models" / key / "model.weights.h5").is_file()
    loss_csv = (project / Layout(key).figures / "history.csv").read_text().splitlines()
    assert loss_csv[0] == "epoch,loss,val_loss" and len(loss_csv) == 3
    tsv = (project / Layout(key).training / "plots" / "metrics" / "val_loss.tsv").read_text().splitlines()
    assert [row.split(",")[2] for row in loss_csv[1:]] == [f"{float(line.split()[1]):.6g}" for line in tsv[1:]]
    assert (project / Layout(key).figures / "loss.png").stat().st_size > 1000

    out = run(
        [
            sys.executable,
            "-m",
            "stages",
            "generate",
            "lstm_text_generation",
            "--seed-text",
            "The will to",
            "--temperature",
            "0.5",
            "--length",
            "25",
        ],
        project,
    )
    assert out.stdout.startswith("The will to") and len(out.stdout.rstrip("\n")) == len("The will to") + 25
    assert_code_deps_match_imports(project)  # preprocess imported nietzsche.py, and no step the text_file loader


def test_samples_survive_a_resume(tmp_path, monkeypatch):
    """A resumed run keeps the epochs sampled before the interruption and redoes the cut-short one."""
    monkeypatch.chdir(tmp_path)
    chars = char_table(ENGLISH)
    idx = encode(ENGLISH, chars)
    params = ltg.Train(units=8, batch_size=16, epochs=3, learning_rate=0.01, sample_length=12, temperatures=[0.5])
    run_ = Run("lstm_text_generation", "t", "train", params, Layout("lstm_text_generation-t"), _seed=3)
    store = run_.paths.checkpoints / "samples.json"
    earlier = ltg.epoch_samples(fake_predict(len(chars)), idx, chars, 10, 12, [0.5], 3, 1)
    stale = dict(earlier, epoch=2, seed_text="from an epoch whose checkpoint was never written")
    write_json(store, {"entries": [earlier, stale]})
    callback = ltg.samples_callback(run_, idx, chars, 10, store)
    callback.set_model(ltg.build_model(10, len(chars), 8, 0.01))
    callback.on_epoch_end(1)  # epoch 2, run again after the resume
    entries = read_json(store)["entries"]
    assert [e["epoch"] for e in entries] == [1, 2] and entries[0] == json.loads(json.dumps(earlier))
    assert "never written" not in (run_.paths.training / "samples.md").read_text(encoding="utf-8")
    assert "## epoch 1" in (run_.paths.training / "samples.md").read_text(encoding="utf-8")


def test_plot_reads_the_dvclive_losses_and_renders_the_final_samples(tmp_path, monkeypatch):
    """Without a hold-out train logs no val_loss: history.csv then has the training loss only, epochs counted from 1."""
    monkeypatch.chdir(tmp_path)
    run_ = Run("lstm_text_generation", "t", "plot", ltg.Plot(dpi=20), Layout("lstm_text_generation-t"))
    (run_.paths.training / "plots" / "metrics").mkdir(parents=True)
    (run_.paths.training / "plots" / "metrics" / "loss.tsv").write_text("step\tloss\n0\t2.5\n1\t2.0312345678\n")
    chars = char_table(ENGLISH)
    final = dict(ltg.epoch_samples(fake_predict(len(chars)), encode(ENGLISH, chars), chars, 10, 12, [0.5], 3, 0), epoch=None)
    write_json(run_.paths.predictions / "samples.json", final)
    ltg.plot(run_)
    assert (run_.paths.figures / "history.csv").read_text() == "epoch,loss\n1,2.5\n2,2.03123\n"
    md = (run_.paths.figures / "samples.md").read_text(encoding="utf-8")
    assert md.startswith("# Samples from the final model (lstm_text_generation-t)")
    assert final["seed_text"] + final["samples"][0]["text"] in md
    assert (run_.paths.figures / "loss.png").stat().st_size > 1000


def add_corpus_run(project, name: str, source: str, **preprocess) -> None:
    """The module docstring's recipe, in params.yaml alone: a variant and its run."""
    set_param(project, f"lstm_text_generation.variants.{name}", {"preprocess": {"corpus": source, **preprocess}})
    add_run(project, "lstm_text_generation", name, source, "stages/datasets/text_file.py")


def test_declared_chinese_corpus_preprocesses_and_is_locked(project):
    """The recipe works: texts/mine.txt (Chinese), its run and its variant; dvc.lock lists the file as a dep."""
    (project / "texts").mkdir()
    (project / "texts" / "mine.txt").write_text(CHINESE, encoding="utf-8")
    add_corpus_run(project, "mine", "texts/mine.txt", max_chars=0)
    run(["dvc", "repro", "preprocess@lstm_text_generation-mine"], project)
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    deps = [d["path"] for d in lock["stages"]["preprocess@lstm_text_generation-mine"]["deps"]]
    assert "texts/mine.txt" in deps
    folder = project / "data/processed/lstm_text_generation-mine"
    meta = read_json(folder / "meta.json")
    assert meta["corpus"] == "texts/mine.txt"
    assert meta["characters"] == len(CHINESE) and meta["vocab_size"] == len(set(CHINESE)) > 256
    assert np.load(folder / "text.npy").dtype == np.uint16
    assert read_json(folder / "chars.json")["chars"] == sorted(set(CHINESE))
    assert_code_deps_match_imports(project)  # the run's loader, stages/datasets/text_file.py, is what preprocess imported

    # The same declared file, no longer UTF-8: one paragraph naming the file, no traceback.
    (project / "texts" / "mine.txt").write_bytes("Götterdämmerung ".encode("latin-1") * 10)
    result = run(
        [sys.executable, "-m", "stages", "preprocess", "lstm_text_generation", "--variant", "mine"], project, check=False
    )
    assert result.returncode == 2 and "text file texts/mine.txt is not valid UTF-8 (byte 1: invalid" in result.stderr
    assert "Traceback" not in result.stderr


RECIPE = re.escape(
    "Put the file in the project, e.g. texts/mine.txt; in params.yaml, under lstm_text_generation.variants, add "
    "`mine: {preprocess: {corpus: texts/mine.txt}}` and under runs the run "
    "`lstm_text_generation-mine: {example: lstm_text_generation, variant: mine, source: texts/mine.txt, loader: stages/datasets/text_file.py}`"
)


@pytest.mark.parametrize(
    "corpus, why",
    [
        ("/etc/passwd", "is an absolute path, outside the project"),
        ("../outside.txt", "leads out of the project with '..'"),
        ("texts/../../outside.txt", "leads out of the project with '..'"),
    ],
)
def test_corpus_outside_the_project_is_refused_by_params(corpus, why):
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["lstm_text_generation"]["variants"]["mine"] = {"preprocess": {"corpus": corpus}}
    with pytest.raises(
        ParamsError, match=re.escape(f"'lstm_text_generation.variants.mine.preprocess.corpus' = {corpus!r} {why}") + ".*" + RECIPE
    ):
        validate_example(data, "lstm_text_generation", ltg.Params)


def test_corpus_symlink_leading_outside_is_refused_before_reading(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "texts").mkdir(parents=True)
    (project / "texts" / "mine.txt").symlink_to(tmp_path / "secret.txt")  # need not exist: it is never read
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["lstm_text_generation"]["variants"]["mine"] = {"preprocess": {"corpus": "texts/mine.txt"}}
    params["runs"]["lstm_text_generation-mine"] = {
        "example": "lstm_text_generation",
        "variant": "mine",
        "source": "texts/mine.txt",
        "loader": "stages/datasets/text_file.py",
    }
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(project)
    _, run_ = make_run("lstm_text_generation", "mine", "preprocess")
    with pytest.raises(
        ParamsError,
        match=re.escape(
            f"'lstm_text_generation.variants.mine.preprocess.corpus' = 'texts/mine.txt' "
            f"is a symlink to {tmp_path / 'secret.txt'}, outside the project"
        ),
    ):
        ltg.corpus_text(run_)


def test_undeclared_project_file_is_refused_before_reading(project):
    """A corpus file that the run's entry in params.yaml does not name (so no stage lists it) is refused, naming both keys."""
    (project / "notes.txt").write_text(ENGLISH, encoding="utf-8")
    set_param(project, "lstm_text_generation.preprocess.corpus", "notes.txt")
    result = run([sys.executable, "-m", "stages", "preprocess", "lstm_text_generation"], project, check=False)
    assert result.returncode == 2, result.stderr
    assert (
        "'runs.lstm_text_generation-nietzsche.source' = 'data/raw/nietzsche', 'runs.lstm_text_generation-nietzsche.loader' "
        "= 'stages/datasets/nietzsche.py' disagree(s) with the example's params, which make this run read notes.txt with "
        "stages/datasets/text_file.py" in " ".join(result.stderr.split())
    )
    assert "Traceback" not in result.stderr and not (project / "data/processed").exists()

    # A variant naming the file, without its run: nothing declares the file either, and the message gives the entry.
    set_param(project, "lstm_text_generation.preprocess.corpus", "nietzsche")
    set_param(project, "lstm_text_generation.variants.notes", {"preprocess": {"corpus": "notes.txt"}})
    result = run(
        [sys.executable, "-m", "stages", "preprocess", "lstm_text_generation", "--variant", "notes"], project, check=False
    )
    assert result.returncode == 2, result.stderr
    assert (
        "variant 'lstm_text_generation.variants.notes' has no run: dvc.yaml builds a run's stages from params.yaml's "
        "'runs' mapping. Add under 'runs' the line `lstm_text_generation-notes: {example: lstm_text_generation, "
        "variant: notes, source: notes.txt, loader: stages/datasets/text_file.py}`" in " ".join(result.stderr.split())
    )
    assert not (project / "data/processed").exists()


@pytest.mark.skipif(not (SHARED_DATASETS / "nietzsche" / "nietzsche.txt").is_file(), reason="needs ../shared/datasets")
def test_real_nietzsche_counts():
    """The notes' numbers: 600,893 characters, 57 symbols lowercased, 200,285 windows before the hold-out."""
    text = (SHARED_DATASETS / "nietzsche" / "nietzsche.txt").read_bytes().decode("utf-8")
    assert len(text) == 600_893
    assert len(char_table(text.lower())) == 57
    assert len(window_starts(0, len(text), 40, 3)) == 200_285
    assert len(char_table(text)) == 84  # the notes' shapes say 58
