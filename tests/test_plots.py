"""Plots that say what they show (issue 11): dvc.yaml's plots, the templates in .dvc/plots, the shared helpers.

Every data plot has a title and axis labels (with units); losses are on a log
axis; per-epoch curves count epochs from 1; no series has more than
plotting.MAX_POINTS points; expected and predicted share one axis.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from stages import imdb_fasttext, mnist_siamese, plotting, stateful_lstm
from tests.conftest import ROOT, run

BUILT_IN = {"linear", "simple", "scatter", "scatter_jitter", "smooth", "confusion", "confusion_normalized"}
BUILT_IN |= {"bar_horizontal", "bar_horizontal_sorted"}
TEMPLATES = ROOT / ".dvc" / "plots"
LOG_TEMPLATES = {"lines_log", "bars_log"}


def plots() -> list[tuple[str, dict | None]]:
    """(id, definition) of every entry of dvc.yaml's plots; None for an image."""
    entries = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    return [(e, None) if isinstance(e, str) else next(iter(e.items())) for e in entries]


def y_fields(definition: dict) -> list[str]:
    y = definition["y"]
    values = y.values() if isinstance(y, dict) else [y]
    return [f for v in values for f in ([v] if isinstance(v, str) else v)]


def data_files(plot_id: str, definition: dict) -> list[str]:
    return list(definition["y"]) if isinstance(definition["y"], dict) else [plot_id]


def test_every_plot_has_a_title_and_axis_labels():
    for plot_id, definition in plots():
        if definition is None:
            assert plot_id.endswith(".png"), plot_id  # an image: its title and labels are drawn in it
            continue
        for key in ("title", "x_label", "y_label"):
            value = definition.get(key)
            assert isinstance(value, str) and value.strip(), f"{plot_id} has no {key}"
        assert "/" not in definition["title"].split(" (")[0], f"{plot_id}: a title, not a file path"
        template = definition.get("template", "linear")
        assert template in BUILT_IN or (TEMPLATES / f"{template}.json").is_file(), f"{plot_id}: no template {template}"


def test_losses_are_on_a_log_axis_that_says_so():
    for plot_id, definition in plots():
        if definition is None:
            continue
        lossy = any("loss" in f or "mse" in f for f in y_fields(definition))
        on_log = definition.get("template") in LOG_TEMPLATES
        assert lossy == on_log, f"{plot_id}: losses (and only they) go on a log axis"
        assert on_log == ("log scale" in definition["y_label"]), f"{plot_id}: the y label must say it is a log scale"


def test_per_epoch_plots_read_history_csv_with_epochs_from_1():
    """DVCLive's TSVs count steps from 0; every per-epoch plot reads a history.csv (epoch from 1) instead."""
    for plot_id, definition in plots():
        if definition is None:
            continue
        files = data_files(plot_id, definition)
        assert not any("/training/plots/" in f for f in files), f"{plot_id} reads DVCLive's 0-based steps"
        if definition["x"] == "epoch":
            assert all(f.endswith("/history.csv") for f in files), plot_id


def test_expected_and_predicted_share_one_axis():
    """One plot per stateful_lstm variant draws both series (never one each, on different scales)."""
    mine = [(i, set(y_fields(d))) for i, d in plots() if d and i.startswith("plots/stateful_lstm/")]
    both = [i for i, fields in mine if {"expected", "predicted"} <= fields]
    either = [i for i, fields in mine if {"expected", "predicted"} & fields]
    assert both == either and len(both) == len(yaml.safe_load((ROOT / "params.yaml").read_text())["stateful_lstm"]["variants"])


@pytest.mark.parametrize("template", sorted(p.stem for p in TEMPLATES.glob("*.json")))
def test_our_templates_fill_every_anchor(template):
    """DVC fills each template of .dvc/plots (as `dvc plots show` does), leaving no anchor and keeping our labels."""
    from dvc_render import VegaRenderer

    if template == "scatter_classes":
        rows = [{"pc1": 0.5, "pc2": 1.0, "label": 3, "rev": "workspace"}]
        properties = {"x": "pc1", "y": "pc2"}
    else:
        rows = [{"epoch": 1, "loss": 2.0, "variant": "a", "rev": "workspace"}]
        properties = {"x": "epoch", "y": "loss"}
    renderer = VegaRenderer(rows, "id", template=template, template_dir=str(TEMPLATES), title="T", x_label="X", y_label="Y")
    renderer.properties.update(properties)
    spec = renderer.get_filled_template()
    assert "<DVC_METRIC_" not in json.dumps(spec)
    assert spec["title"]["text"] == "T" and spec["encoding"]["x"]["title"] == "X" and spec["encoding"]["y"]["title"] == "Y"
    assert (spec["encoding"]["y"].get("scale", {}).get("type") == "log") == (template in LOG_TEMPLATES)


def test_history_columns_count_epochs_from_1_and_keep_gaps():
    curves = {
        "val_loss": (np.array([0, 2]), np.array([0.9, 0.7])),  # validated every other epoch
        "accuracy": (np.array([0, 1, 2]), np.array([0.5, 0.6, 0.7])),
        "loss": (np.array([0, 1, 2]), np.array([1.0, 0.8, 0.6])),
    }
    columns = plotting.history_columns(curves)
    assert list(columns) == ["epoch", "loss", "val_loss", "accuracy"]
    assert columns["epoch"].tolist() == [1, 2, 3] and columns["loss"].tolist() == [1.0, 0.8, 0.6]
    assert columns["val_loss"][[0, 2]].tolist() == [0.9, 0.7] and np.isnan(columns["val_loss"][1])


def test_history_columns_thin_a_long_run_evenly_to_max_points():
    steps = np.arange(2500)
    columns = plotting.history_columns({"loss": (steps, 1.0 / (steps + 1))})
    assert len(columns["epoch"]) == plotting.MAX_POINTS == 1000
    assert (columns["epoch"][0], columns["epoch"][-1]) == (1, 2500) and np.all(np.diff(columns["epoch"]) > 0)


def test_stack_histories_is_long_form_with_blanks_for_what_a_run_did_not_log():
    rows = pd.DataFrame(
        plotting.stack_histories(
            {"a": {"epoch": np.array([1, 2]), "loss": [2.0, 1.5], "val_loss": [2.5, 2.0]}, "b": {"epoch": [1], "loss": [3.0]}}
        )
    )
    assert list(rows.columns) == ["epoch", "variant", "loss", "val_loss"]
    assert rows[["epoch", "variant", "loss"]].values.tolist() == [[1, "a", 2.0], [2, "a", 1.5], [1, "b", 3.0]]
    assert rows["val_loss"].tolist()[:2] == [2.5, 2.0] and np.isnan(rows["val_loss"][2])


def test_draw_epochs_labels_the_axes_and_puts_a_loss_on_a_log_axis(tmp_path):
    history = {"epoch": np.array([1, 2, 3]), "loss": [2.0, 0.2, 0.02], "val_loss": [2.1, 0.5, 0.4], "accuracy": [0.1, 0.5, 0.9]}
    with plotting.png(tmp_path / "x.png") as fig:
        loss, accuracy = fig.subplots(1, 2)
        plotting.draw_epochs(loss, {"run": history}, "loss", "cross-entropy (nats, log scale)")
        plotting.draw_epochs(accuracy, {"a": history, "b": history}, "accuracy", "accuracy")
        assert (loss.get_xlabel(), loss.get_ylabel(), loss.get_yscale()) == ("epoch", "cross-entropy (nats, log scale)", "log")
        assert loss.get_title() and accuracy.get_yscale() == "linear"
        assert [line.get_xdata().tolist() for line in loss.get_lines()] == [[1, 2, 3], [1, 2, 3]]  # epochs from 1
        assert loss.get_lines()[0].get_color() != loss.get_lines()[1].get_color()  # one run: training and validation differ
        assert [line.get_label() for line in accuracy.get_lines()] == ["a training", "b training"]
    assert (tmp_path / "x.png").stat().st_size > 1000


@pytest.mark.parametrize("plot_section", [stateful_lstm.Plot, mnist_siamese.Plot, imdb_fasttext.Plot])
def test_no_series_may_keep_more_than_1000_points(plot_section):
    fields = {name: 100 for name in plot_section.model_fields}
    plot_section(**{**fields, "max_points": 1000})
    with pytest.raises(ValidationError, match="max_points"):
        plot_section(**{**fields, "max_points": 1001})


def test_the_built_project_plots_say_what_they_show(built_copy):
    """On the tiny built project: every history.csv counts epochs from 1, no plot file has a series over 1,000 points,
    and every plot `dvc plots show` renders has a title and axis titles (never DVC's default "y")."""
    histories = sorted(built_copy.glob("plots/**/history.csv"))
    assert len(histories) >= 5
    for path in histories:
        table = pd.read_csv(path)
        for _, rows in table.groupby("variant") if "variant" in table else [(None, table)]:
            assert rows["epoch"].tolist() == list(range(1, len(rows) + 1)), path
    for path in built_copy.glob("plots/**/figures/*.csv"):
        assert len(pd.read_csv(path)) <= plotting.MAX_POINTS or path.name == "confusion.csv", path
    rendered = json.loads(run(["dvc", "plots", "show", "--json"], built_copy).stdout)["data"]
    shown = [(plot_id, e["content"]) for plot_id, entries in rendered.items() for e in entries if e["type"] == "vega"]
    assert len(shown) >= 8
    for plot_id, spec in shown:
        assert spec["title"]["text"], plot_id
        titles = axis_titles(spec)
        assert {"x", "y"} <= {axis for axis, _ in titles}, plot_id
        for axis, title in titles:
            assert title and title not in {"x", "y", "dvc_inferred_y_value"}, (plot_id, axis, title)


def axis_titles(spec) -> list[tuple[str, str]]:
    """(axis, title) of every x and y encoding anywhere in a Vega-Lite spec (layers and facets included)."""
    found = []
    if isinstance(spec, dict):
        for axis in ("x", "y"):
            if isinstance(spec.get("encoding", {}).get(axis), dict) and "title" in spec["encoding"][axis]:
                found.append((axis, spec["encoding"][axis]["title"]))
        for value in spec.values():
            found += axis_titles(value)
    elif isinstance(spec, list):
        for value in spec:
            found += axis_titles(value)
    return found
