"""The pipeline as a user drives it: real `dvc repro`, `dvc metrics diff`, `dvc plots show`."""

from __future__ import annotations

import ast
import json
import re
import shutil
import signal
import subprocess

import pytest
import yaml

from stages.core.errors import StageError
from stages.core.layout import SEEDED_STEPS, Layout
from stages.core.params import STEPS
from stages.core.run import discover_examples, make_run

from conftest import ROOT, add_run, assert_code_deps_match_imports, git, run, set_param, subprocess_env

# The downloads ../shared/datasets cannot serve (the tests run offline), and the runs that wait on them.
UNAVAILABLE = {"download@mnist", "download@reuters", "download@imdb"}
RUNS_WITHOUT_DATA = (
    "mnist_irnn-irnn",
    "mnist_siamese-mlp",
    "mnist_sklearn_wrapper-grid",
    "reuters_mlp_relu_vs_selu-relu",
    "reuters_mlp_relu_vs_selu-selu",
    "imdb_fasttext-uni",
    "imdb_fasttext-bi",
)


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def resolved_stages(project) -> dict:
    """The stages as DVC resolves dvc.yaml (foreach expanded)."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        return {s.name: s for s in repo.index.stages}


def test_every_stage_declares_the_layout_paths_and_its_params():
    stages = resolved_stages(ROOT)
    runs = yaml.safe_load((ROOT / "params.yaml").read_text())["runs"]
    for key, item in runs.items():
        assert item["example"] in discover_examples()
        for step in STEPS:
            stage = stages[f"{step}@{key}"]
            assert sorted(o.def_path for o in stage.outs) == sorted(str(p) for p in Layout(key).outputs(step))
            # exactly what the step's Run exposes: its section, its variant's overrides, and seed where seeded
            params = {k for p in stage.params for k in p.params}
            expected = {f"{item['example']}.{step}", f"{item['example']}.variants.{item['variant']}"}
            assert params == expected | ({"seed"} if step in SEEDED_STEPS else set()), stage.name
            deps = {d.def_path for d in stage.deps}
            assert f"stages/{item['example']}.py" in deps and "stages/core" in deps


@pytest.mark.parametrize("example", discover_examples(ROOT / "params.yaml"))
def test_a_step_sees_only_its_own_section(example):
    """What the README promises ("each stage lists exactly the params keys it reads") holds by construction."""
    module, evaluate = make_run(example, None, "evaluate")
    assert type(evaluate.params) is module.Params.model_fields["evaluate"].annotation
    assert isinstance(evaluate.seed, int)
    _, plot = make_run(example, None, "plot")
    assert type(plot.params) is module.Params.model_fields["plot"].annotation
    assert set(type(plot.params).model_fields) == set(yaml.safe_load((ROOT / "params.yaml").read_text())[example]["plot"])
    with pytest.raises(StageError, match=rf"plot@{example}-\w+ reads 'seed', which its stage does not list in dvc.yaml"):
        _ = plot.seed


def test_each_stage_depends_on_exactly_the_code_it_runs(built_project):
    """The modules each stage imported (recorded by `python -m stages`) are exactly its code deps."""
    checked = assert_code_deps_match_imports(built_project)
    for run_key in ("stateful_lstm-lahead1", "lstm_text_generation-nietzsche"):
        assert {f"{step}@{run_key}" for step in STEPS} <= checked
    assert {"download@nietzsche", "download@mnist"} <= checked


@pytest.mark.parametrize("path", ["stages/__init__.py", "stages/core/__init__.py", "stages/datasets/__init__.py"])
def test_package_files_every_stage_imports_hold_only_a_docstring(path):
    """They are imported by every stage but listed by none, so they must hold no code."""
    body = ast.parse((ROOT / path).read_text()).body
    assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value.value, str)


def test_built_pipeline_is_complete_and_a_second_repro_runs_nothing(built_copy):
    """Everything is built except what waits on mnist.npz, which this machine cannot have.

    The stages ran with bytecode writing on (as on a user's machine); `--help`,
    importing every module and a second repro must leave `dvc status` unchanged.
    """
    assert list((built_copy / "stages").rglob("__pycache__/*.pyc")), "the runs should have written bytecode"
    run(["python", "-m", "stages", "--help"], built_copy)
    modules = [f"stages.{p.stem}" for p in (built_copy / "stages").glob("*.py") if p.stem != "__main__"]
    modules += [
        f"stages.{d.name}.{p.stem}"
        for d in (built_copy / "stages").iterdir()
        if d.is_dir() and d.name != "__pycache__"
        for p in d.glob("*.py")
    ]
    run(["python", "-c", "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]", *modules], built_copy)
    stages = resolved_stages(built_copy)
    missing_data = UNAVAILABLE | {"compare@reuters_mlp_relu_vs_selu", "compare@imdb_fasttext"}
    missing_data |= {f"{step}@{run}" for step in STEPS for run in RUNS_WITHOUT_DATA}
    for name, stage in stages.items():
        if name not in missing_data:
            for out in stage.outs:
                assert (built_copy / out.def_path).exists(), f"{name}: {out.def_path} missing"
    again = run(["dvc", "repro", "--keep-going"], built_copy, check=False)
    assert ran_stages(again.stdout) == UNAVAILABLE  # tried again, fail again; nothing else runs
    status = run(["dvc", "status", "--json"], built_copy, check=False)
    assert set(json.loads(status.stdout or "{}")) == missing_data


def test_changing_one_variant_reruns_only_that_variant(built_copy):
    set_param(built_copy, "stateful_lstm.variants.lahead20", {"preprocess": {"lahead": 21}})
    out = run(["dvc", "repro", "--keep-going"], built_copy, check=False)
    assert ran_stages(out.stdout) - UNAVAILABLE == {f"{s}@stateful_lstm-lahead20" for s in STEPS} | {"compare@stateful_lstm"}


def test_compare_puts_every_variant_side_by_side_and_a_new_variant_reruns_only_itself(built_copy):
    table = (built_copy / "plots/compare/stateful_lstm/table.csv").read_text().splitlines()
    assert table[0].startswith("variant,lahead,model_mse,naive_mse")
    assert [row.split(",")[:2] for row in table[1:]] == [["lahead1", "1"], ["lahead20", "20"], ["lahead5000", "5000"]]
    assert (built_copy / "plots/compare/stateful_lstm/predictions.png").stat().st_size > 10_000

    set_param(built_copy, "stateful_lstm.variants.lahead2", {"preprocess": {"lahead": 2}})
    add_run(built_copy, "stateful_lstm", "lahead2", "data/raw/damped_cosine", "stages/datasets/damped_cosine.py")
    out = run(["dvc", "repro", "--keep-going"], built_copy, check=False)
    assert ran_stages(out.stdout) - UNAVAILABLE == {f"{s}@stateful_lstm-lahead2" for s in STEPS} | {"compare@stateful_lstm"}
    variants = [row.split(",")[0] for row in (built_copy / "plots/compare/stateful_lstm/table.csv").read_text().splitlines()[1:]]
    assert variants == ["lahead1", "lahead2", "lahead20", "lahead5000"]


def test_train_param_change_reruns_only_its_downstream_and_diffs_across_branches(built_copy):
    """Change one training parameter on a branch: only that example's train/evaluate/plot re-run,
    and `dvc metrics diff`, `dvc params diff`, `dvc plots show/diff` report it against main."""
    git(built_copy, "add", "-A")
    git(built_copy, "commit", "-qm", "baseline results")
    git(built_copy, "checkout", "-qb", "faster-lr")
    set_param(built_copy, "stateful_lstm.train.learning_rate", 0.01)
    out = run(["dvc", "repro", "--keep-going"], built_copy, check=False)
    expected = {
        f"{step}@stateful_lstm-{v}" for step in ("train", "evaluate", "plot") for v in ("lahead1", "lahead20", "lahead5000")
    }
    assert ran_stages(out.stdout) - UNAVAILABLE == expected | {"compare@stateful_lstm"}
    git(built_copy, "add", "-A")
    git(built_copy, "commit", "-qm", "lr 0.01")

    diff = json.loads(run(["dvc", "metrics", "diff", "main", "--json"], built_copy).stdout)
    key = "metrics/stateful_lstm/lahead1.json"
    assert key in diff and "model.mse" in diff[key]
    assert diff[key]["model.mse"]["old"] != diff[key]["model.mse"]["new"]

    params = json.loads(run(["dvc", "params", "diff", "main", "--json"], built_copy).stdout)
    change = params["params.yaml"]["stateful_lstm.train.learning_rate"]
    assert (change["old"], change["new"]) == (0.001, 0.01)

    out_dir = built_copy / "plots-html"
    run(["dvc", "plots", "show", "-o", str(out_dir)], built_copy)
    html = (out_dir / "index.html").read_text()
    titles = {
        next(iter(p)): next(iter(p.values()))["title"]
        for p in yaml.safe_load((built_copy / "dvc.yaml").read_text())["plots"]
        if isinstance(p, dict)
    }
    for plot_id in ("plots/stateful_lstm/lahead20/figures/predictions.csv", "stateful_lstm training loss"):
        div = re.sub(r"[^A-Za-z0-9]", "_", plot_id)  # the page names a plot's <div> after its id, and shows its title
        assert f'<div id = "{div}">' in html and json.dumps(titles[plot_id])[1:-1] in html, f"{plot_id} is not on the plots page"
    assert re.search(r"<img[^>]+stateful_lstm_lahead20_figures_predictions\.png", html), "the PNG is not on the page"
    run(["dvc", "plots", "diff", "main", "-o", str(built_copy / "plots-diff")], built_copy)
    assert (built_copy / "plots-diff" / "index.html").is_file()


def test_repro_summary_reports_missing_data_and_keeps_going(built_copy):
    """No mirror: download@mnist fails for want of data; the rest is reported, exit code 0."""
    shutil.rmtree(built_copy / "logs", ignore_errors=True)
    out = run(["python", "-m", "stages", "repro"], built_copy, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    summary = out.stdout[out.stdout.index("Summary") :]
    assert re.search(r"download@mnist\s+failed\s+mnist/mnist.npz could not be downloaded", summary)
    assert re.search(r"plot@stateful_lstm-lahead1\s+up to date", summary)
    assert "set DATASETS_MIRROR" in summary


def test_cli_help_lists_examples_and_steps():
    out = run(["python", "-m", "stages", "--help"], ROOT).stdout
    commands = re.findall(r"^    (\w+)", out, flags=re.M)
    assert commands[:10] == [
        "download",
        "synthesize",
        "preprocess",
        "train",
        "evaluate",
        "plot",
        "compare",
        "repro",
        "summary",
        "check",
    ]
    assert f"examples: {', '.join(discover_examples())}\n" in out
    assert discover_examples() == [
        "imdb_fasttext",
        "lstm_benchmark",
        "lstm_text_generation",
        "mnist_irnn",
        "mnist_siamese",
        "mnist_sklearn_wrapper",
        "reuters_mlp_relu_vs_selu",
        "stateful_lstm",
    ]


def test_cli_reports_a_bad_param_without_traceback(project):
    run(["python", "-m", "stages", "synthesize", "damped_cosine"], project)
    run(["python", "-m", "stages", "preprocess", "stateful_lstm"], project)
    set_param(project, "stateful_lstm.train.epochs", "many")
    out = run(["python", "-m", "stages", "train", "stateful_lstm"], project, check=False)
    assert out.returncode == 2
    assert "'stateful_lstm.train.epochs' = 'many' is invalid" in out.stderr
    assert "Traceback" not in out.stderr
    assert "invalid" in (project / "logs" / "failures" / "train@stateful_lstm-lahead1.txt").read_text()


def test_cli_reports_a_missing_input(project):
    out = run(["python", "-m", "stages", "train", "stateful_lstm", "--variant", "lahead20"], project, check=False)
    assert out.returncode == 2
    assert "needs data/processed/stateful_lstm-lahead20" in out.stderr and "dvc repro" in out.stderr


def test_a_killed_write_leaves_nothing_git_or_dvc_sees(built_copy):
    """SIGKILL inside an atomic write: the temporary file and folder stay, but git and DVC ignore them."""
    git(built_copy, "add", "-A")
    git(built_copy, "commit", "-qm", "built")
    code = (
        "import os, signal\n"
        "from stages.core.files import atomic_dir, atomic_file, write_text\n"
        "with atomic_file('plots/stateful_lstm/lahead1/training/samples.md') as tmp:\n"
        "    tmp.write_text('half')\n"
        "    with atomic_dir('plots/stateful_lstm/lahead1/figures') as out:\n"
        "        write_text(out / 'predictions.csv', 'half')\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run(["python", "-c", code], cwd=built_copy, env=subprocess_env())
    assert killed.returncode == -signal.SIGKILL
    left = [p.name for p in (built_copy / "plots" / "stateful_lstm" / "lahead1").rglob(".*.tmp*")]
    assert any(n.startswith(".figures.") for n in left) and any(n.startswith(".samples.md.") for n in left), left
    assert git(built_copy, "status", "--porcelain", "--untracked-files=all") == ""
    status = json.loads(
        run(["dvc", "status", "--json", "train@stateful_lstm-lahead1", "plot@stateful_lstm-lahead1"], built_copy).stdout
    )
    assert status == {}


@pytest.mark.parametrize("example", discover_examples(ROOT / "params.yaml"))
def test_example_modules_follow_the_shape(example):
    """The README's checklist: docstring, a Params model, four typed and documented steps, a module a reader can hold."""
    path = ROOT / "stages" / f"{example}.py"
    tree = ast.parse(path.read_text())
    assert ast.get_docstring(tree) and len(ast.get_docstring(tree).splitlines()) > 5, "the docstring tells the original's story"
    names = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef | ast.ClassDef)}
    assert "Params" in names
    assert "dataset" in names, "dataset(params) names the module of stages/datasets/ the run reads"
    for step in ("preprocess", "train", "evaluate", "plot", *(("compare",) if "compare" in names else ())):
        fn = names[step]
        assert ast.get_docstring(fn), f"{example}.{step} has no docstring"
        (arg,) = fn.args.args
        assert ast.unparse(arg.annotation) in ("Run", "Comparison"), f"{example}.{step}({arg.arg}) is not typed"
    assert len(path.read_text().splitlines()) <= 400


def test_shared_modules_stay_under_400_lines():
    """The helpers every example leans on stay readable too (examples are checked above)."""
    examples = set(discover_examples(ROOT / "params.yaml"))
    sizes = {
        path.relative_to(ROOT).as_posix(): len(path.read_text().splitlines())
        for path in (ROOT / "stages").rglob("*.py")
        if path.stem not in examples
    }
    assert "stages/training.py" in sizes and not {p: n for p, n in sizes.items() if n > 400}


def test_models_are_declared_artifacts_of_the_runs():
    """Every committed run's model is a DVC artifact (type model, with a description), at the path train writes."""
    from dvc.repo import Repo

    runs = yaml.safe_load((ROOT / "params.yaml").read_text())["runs"]
    with Repo(str(ROOT)) as repo:
        (artifacts,) = repo.artifacts.read().values()
        stages = {s.name: s for s in repo.index.stages}
    assert set(artifacts) == set(runs)
    for key, artifact in artifacts.items():
        assert artifact.type == "model" and artifact.desc
        assert artifact.path in {o.def_path for o in stages[f"train@{key}"].outs}
