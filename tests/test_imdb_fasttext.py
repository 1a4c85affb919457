"""imdb_fasttext: the n-gram augmentation against its definition and the original's loops, the training subset, scoring,
the compare rows, and real dvc repro runs on a fixture where only word order carries the sentiment (both settings, then trigrams alone)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from benchmarks.imdb_ngrams import as_lists, loop_ngrams, stand_in
from stages import imdb_fasttext as ft
from stages.core.errors import ParamsError
from stages.core.layout import Layout, compare_dir, run_key
from stages.core.params import validate_example
from stages.core.run import Run
from stages.datasets.imdb import load
from tests.conftest import ROOT, add_run, assert_code_deps_match_imports, run, set_param
from tests.fixtures import write_imdb, write_imdb_word_order

EXAMPLE = "imdb_fasttext"
CURVES = ("loss", "val_loss", "accuracy", "val_accuracy")  # what Keras' fit logs per epoch, as history.csv has it


def ragged(*reviews: list[int]) -> tuple[np.ndarray, np.ndarray]:
    lengths = [len(r) for r in reviews]
    return np.array([w for r in reviews for w in r], np.int32), np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def table(ids: np.ndarray, offsets: np.ndarray, n: int, base: int) -> list[tuple[int, ...]]:
    """The definition: every distinct size-n window inside one review, as tuples in ascending order."""
    reviews = as_lists(ids, offsets)
    return sorted({tuple(r[i : i + n]) for r in reviews for i in range(len(r) - n + 1)})


def test_ngrams_of_the_documented_example():
    """[1, 4, 9, 4, 1, 4] (num_words 10): the sets, their ids in sorted order, and what each review gets appended."""
    train, test = ragged([1, 4, 9, 4, 1, 4]), ragged([4, 1, 4, 9], [9, 9])
    (bi_train, bi_test), bi_counts = ft.augment([train, test], 2, 10)
    assert table(*train, 2, 10) == [(1, 4), (4, 1), (4, 9), (9, 4)]  # ids 11, 12, 13, 14
    assert bi_counts == [4] and ft.max_features(bi_counts, 10) == 15
    # bigrams in order: (1,4) (4,9) (9,4) (4,1) (1,4)
    assert bi_train[0].tolist() == [1, 4, 9, 4, 1, 4, 11, 13, 14, 12, 11]
    # (4,1) (1,4) (4,9); (9,9) was never seen in training
    assert bi_test[0].tolist() == [4, 1, 4, 9, 12, 11, 13, 9, 9] and bi_test[1].tolist() == [0, 7, 9]

    (tri_train, tri_test), tri_counts = ft.augment([train, test], 3, 10)
    assert table(*train, 3, 10) == [(1, 4, 9), (4, 1, 4), (4, 9, 4), (9, 4, 1)]  # ids 15, 16, 17, 18
    assert tri_counts == [4, 4] and ft.max_features(tri_counts, 10) == 19
    assert tri_train[0].tolist() == [1, 4, 9, 4, 1, 4, 11, 13, 14, 12, 11, 15, 17, 18, 16]
    assert tri_test[0].tolist() == [4, 1, 4, 9, 12, 11, 13, 16, 15, 9, 9]
    (uni_train, _), uni_counts = ft.augment([train, test], 1, 10)
    assert uni_counts == [] and ft.max_features(uni_counts, 10) == 10 and uni_train[0].tolist() == train[0].tolist()


@pytest.mark.parametrize("ngram_range", [2, 3])
def test_augmentation_equals_the_original_loops(ngram_range):
    """On short stand-in reviews (Zipf-like ids, so many n-grams repeat and some test ones are unknown): the same ids as
    the original's algorithm, and each appended id is the n-gram of the definition's table at that place."""
    train, test = stand_in(300, seed=ngram_range, mean_length=30), stand_in(200, seed=9, mean_length=30)
    (aug_train, aug_test), counts = ft.augment([train, test], ngram_range, 20_000)
    ref_train, ref_test, features = loop_ngrams(as_lists(*train), as_lists(*test), ngram_range, 20_000)
    assert ft.max_features(counts, 20_000) == features
    for (ids, offsets), ref in ((aug_train, ref_train), (aug_test, ref_test)):
        assert as_lists(ids, offsets) == ref
    bigrams = table(*train, 2, 20_000)
    assert counts[0] == len(bigrams) and len(counts) == ngram_range - 1
    review = as_lists(*aug_train)[0]
    words = review[: np.diff(train[1])[0]]
    appended = review[len(words) : len(words) + len(words) - 1]
    assert [bigrams[i - 20_001] for i in appended] == list(zip(words, words[1:], strict=False))


def test_bitmap_and_table_lookups_agree():
    """Bigram keys (the bitmap's case) looked up both ways; keys of windows that cross a review's end are never known."""
    splits = [stand_in(400, seed=3, mean_length=20), stand_in(300, seed=4, mean_length=20)]
    keys = [ft.window_keys(ids, offsets, 2, 20_000, np.uint32) for ids, offsets in splits]
    crossing = keys[0] == 20_000**2
    assert crossing.sum() == 399  # one per review boundary
    by_bitmap, count = ft.bitmap_ids(keys, 20_000**2, 20_001)
    by_table, count_table = ft.table_ids([k.astype(np.int64) for k in keys], 20_000**2, 20_001)
    assert count == count_table == len(table(*splits[0], 2, 20_000))
    for a, b in zip(by_bitmap, by_table, strict=True):
        np.testing.assert_array_equal(a, b)
    assert (by_bitmap[0][crossing] == -1).all() and (by_bitmap[0][~crossing] >= 20_001).all()
    assert (by_bitmap[1][keys[1] < 20_000**2] == -1).any() and by_bitmap[1].max() < 20_001 + count  # unseen test bigrams


def test_preprocess_keeps_the_first_training_reviews(tmp_path, monkeypatch):
    """train_samples: the first N training reviews (and only their n-grams); every test review; too many is refused."""
    write_imdb(tmp_path / "raw", n=40, vocab=300)
    p = ft.Preprocess(num_words=100, ngram_range=2, train_samples=30, maxlen=80)
    monkeypatch.chdir(tmp_path)
    step = Run(EXAMPLE, "bi", "preprocess", p, Layout(run_key(EXAMPLE, "bi")), raw=tmp_path / "raw", _seed=1)
    ft.preprocess(step)
    meta = json.loads((tmp_path / step.paths.processed / "meta.json").read_text())
    train_ids, train_offsets, _ = load(tmp_path / "raw", 100)["train"]
    first = (train_ids[: train_offsets[30]], train_offsets[:31])
    assert meta["train"] == 30 and meta["test"] == 20 and meta["ngrams"] == {"2": len(table(*first, 2, 100))}
    assert np.load(tmp_path / step.paths.processed / "x_train.npy").shape == (30, 80)
    with pytest.raises(ParamsError, match=rf"'{EXAMPLE}.preprocess.train_samples' = 41: the training set has 40 "):
        ft.preprocess(
            Run(
                EXAMPLE, "bi", "preprocess", p.model_copy(update={"train_samples": 41}), step.paths, raw=tmp_path / "raw", _seed=1
            )
        )


def test_an_ngram_range_whose_keys_overflow_names_both_keys():
    data = yaml_params()
    data[EXAMPLE]["preprocess"]["ngram_range"] = 5
    with pytest.raises(ParamsError, match=rf"'{EXAMPLE}.preprocess.ngram_range' = 5 with '{EXAMPLE}.preprocess.num_words'"):
        validate_example(data, EXAMPLE, ft.Params, "params.yaml")


def yaml_params() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_score_by_hand():
    p = np.array([0.9, 0.2, 0.6, 0.4, 1.0])
    y = np.array([1, 0, 0, 1, 1])
    metrics = ft.score(p, y)
    assert metrics["test"]["accuracy"] == pytest.approx(3 / 5)
    clipped = 1 - 1e-7  # Keras clips probabilities before the logarithm
    expected = -(np.log(0.9) + np.log(0.8) + np.log(0.4) + np.log(0.4) + np.log(clipped)) / 5
    assert metrics["test"]["loss"] == pytest.approx(expected)
    # positives 0.9, 0.4, 1.0 against negatives 0.2, 0.6: 5 of the 6 pairs ranked right
    assert metrics["test"]["roc_auc"] == pytest.approx(5 / 6)
    assert metrics["confusion"] == [[1, 1], [1, 2]] and metrics["test_samples"] == 5
    assert ft.score(np.array([0.0, 0.0]), np.array([1, 0]))["test"]["loss"] == pytest.approx(-np.log(1e-7) / 2)


def test_roc_points_are_thinned_with_both_ends():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 5000)
    roc = ft.roc_points(rng.random(5000), y, max_points=20)
    assert len(roc["fpr"]) <= 20 and (roc["fpr"][0], roc["tpr"][0]) == (0, 0) and (roc["fpr"][-1], roc["tpr"][-1]) == (1, 1)


def test_summary_rows():
    table = ft.summary_rows({"bi": {"test": {"accuracy": 0.9, "loss": 0.3, "roc_auc": 0.95}}})
    assert table == {"variant": ["bi"], "test_accuracy": [0.9], "test_loss": [0.3], "test_roc_auc": [0.95]}


def test_word_order_pipeline_then_trigrams_alone(project):
    """Real DVC on a fixture (recorded as download@imdb's result) where only word order tells the sentiment:
    the bigram model beats the unigram model clearly; then a trigram setting runs only its own stages and compare."""
    write_imdb_word_order(project / "data/raw/imdb")
    run(["dvc", "commit", "-f", "download@imdb"], project)
    run(["dvc", "repro", f"compare@{EXAMPLE}"], project)

    metrics = {v: json.loads((project / Layout(run_key(EXAMPLE, v)).metrics).read_text())["test"] for v in ("uni", "bi")}
    assert metrics["uni"]["accuracy"] < 0.65 and metrics["bi"]["accuracy"] > 0.9, metrics
    assert metrics["bi"]["roc_auc"] > metrics["uni"]["roc_auc"] + 0.3, metrics
    bi = Layout(run_key(EXAMPLE, "bi"))
    meta = json.loads((project / bi.processed / "meta.json").read_text())
    assert meta["max_features"] == 20_001 + meta["ngrams"]["2"] and meta["maxlen"] == 40
    assert np.load(project / bi.processed / "x_train.npy").shape == (500, 40)
    history = pd.read_csv(project / bi.figures / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3, 4] and set(history.columns) == {"epoch", *CURVES}
    assert len(pd.read_csv(project / bi.figures / "roc.csv")) <= 50
    compared = project / compare_dir(EXAMPLE)
    stacked = pd.read_csv(compared / "history.csv")  # every setting's history.csv, one row per (setting, epoch)
    assert stacked[["epoch", "variant"]].values.tolist() == [[e, v] for v in ("uni", "bi") for e in (1, 2, 3, 4)]
    roc = pd.read_csv(compared / "roc.csv")
    assert list(roc.columns) == ["variant", "fpr", "tpr"] and roc.groupby("variant").size().max() <= 50
    assert (compared / "validation.png").is_file()
    steps = {f"{s}@{run_key(EXAMPLE, v)}" for s in ("preprocess", "train", "evaluate", "plot") for v in ("uni", "bi")}
    assert steps | {f"compare@{EXAMPLE}"} <= assert_code_deps_match_imports(project)

    set_param(project, f"{EXAMPLE}.variants.tri", {"preprocess": {"ngram_range": 3}})
    third = run_key(EXAMPLE, "tri")
    add_run(project, EXAMPLE, "tri", "data/raw/imdb", "stages/datasets/imdb.py")
    out = run(["dvc", "repro", f"compare@{EXAMPLE}"], project).stdout
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    assert ran == {f"{s}@{third}" for s in ("preprocess", "train", "evaluate", "plot")} | {f"compare@{EXAMPLE}"}
    tri = json.loads((project / Layout(third).processed / "meta.json").read_text())
    assert tri["ngrams"]["2"] == meta["ngrams"]["2"] and tri["max_features"] == 20_001 + tri["ngrams"]["2"] + tri["ngrams"]["3"]
    assert pd.read_csv(compared / "table.csv")["variant"].tolist() == ["uni", "bi", "tri"]
