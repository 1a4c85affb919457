"""`dvc plots show` and `dvc plots diff` draw every plot of dvc.yaml with no network, checked in a real browser.

The page's template (.dvc/config: plots.html_template) is written by
stages/plots_page.py with Vega, Vega-Lite and vega-embed inlined. The browser
test opens the page DVC wrote in headless Chromium with every network request
refused, and asserts that each plot of dvc.yaml drew (a Vega view, or a loaded
image), that no script failed, and that the page asked for nothing but local files.
Chromium is driven through its DevTools protocol over a pipe (--remote-debugging-pipe),
so nothing is added to the page. Without Chromium the test is skipped, saying how
to install it; TESTS_REQUIRE_CHROMIUM=1 (set by .ci/run) makes that a failure.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stages import plots_page

from conftest import ROOT, git, run

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
OFFLINE_FLAGS = (  # every request that is not a local file goes to a closed loopback port, and no name resolves
    "--proxy-server=127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg")

# Each plot on the page: a <div id=...> directly in <body> (dvc_render's layout). A Vega view draws into
# a canvas or svg of class "marks"; vega-embed's menu icon is an svg too, so it is not counted.
PLOTS_JS = """JSON.stringify({
  ready: document.readyState,
  plots: Object.fromEntries([...(document.body ? document.body.children : [])].filter(d => d.tagName === 'DIV' && d.id).map(d => {
    const marks = [...d.querySelectorAll('canvas.marks, svg.marks')].filter(m => m.getBoundingClientRect().width > 0);
    const images = [...d.querySelectorAll('img')].map(i => i.complete && i.naturalWidth > 0);
    return [d.id, {marks: marks.length, images: images}];
  }))
})"""

# Runs Chromium with the two pipe ends on fds 3 and 4, where --remote-debugging-pipe expects them.
LAUNCHER = """import fcntl, os, sys
ends = [fcntl.fcntl(int(fd), fcntl.F_DUPFD_CLOEXEC, 10) for fd in sys.argv[1:3]]
os.dup2(ends[0], 3)
os.dup2(ends[1], 4)
os.execvp(sys.argv[3], sys.argv[3:])
"""


def find_chromium() -> str | None:
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        message = (
            "no Chromium: the offline plots page is checked in a headless browser. Install it with "
            "`sudo apt-get install chromium` (Debian; `chromium-browser` on Ubuntu), or set CHROMIUM=/path/to/chrome"
        )
        if os.environ.get("TESTS_REQUIRE_CHROMIUM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


class Browser:
    """Headless Chromium on DevTools' pipe transport: JSON messages, NUL-terminated, on its fds 3 (in) and 4 (out)."""

    def __init__(self, chromium: str, profile: Path, timeout: float = 60.0):
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout  # for each page: open() sets it again
        to_chrome, self._write = os.pipe()
        self._read, from_chrome = os.pipe()
        self.log = profile.with_suffix(".stderr")
        args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
        args += ["--no-default-browser-check", "--remote-debugging-pipe", f"--user-data-dir={profile}", *OFFLINE_FLAGS]
        with open(self.log, "wb") as stderr:  # a small launcher puts the pipe ends on fds 3 and 4, then becomes Chromium
            self.proc = subprocess.Popen(
                [sys.executable, "-c", LAUNCHER, str(to_chrome), str(from_chrome), *args],
                pass_fds=(to_chrome, from_chrome),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        os.close(to_chrome)
        os.close(from_chrome)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, session: str | None = None, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params} | ({"sessionId": session} if session else {})
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise AssertionError(f"Chromium: {method} failed: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def _receive(self) -> dict:
        while b"\0" not in self._buffer:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise AssertionError(f"Chromium did not answer in time; its log:\n{self.stderr()}")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise AssertionError(f"Chromium exited; its log:\n{self.stderr()}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def open(self, page: Path, vega_ids: set[str], still: float = 3.0) -> tuple[dict, list[str]]:
        """Open `page` in a new tab, wait until every id in `vega_ids` drew; return its plots and problems.

        A loaded page that has not changed for `still` seconds is taken as
        finished, drawn or not. Problems: uncaught exceptions, console and browser errors, and every
        request for anything but a local file (there is no network to answer it).
        """
        self.deadline = time.monotonic() + self.timeout
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.send(f"{domain}.enable", session)
        self.send("Page.navigate", session, url=page.resolve().as_uri())
        state, changed = None, time.monotonic()
        while True:
            reply = self.send("Runtime.evaluate", session, expression=PLOTS_JS, returnByValue=True)
            if "exceptionDetails" in reply:  # between documents while the page is navigated to
                assert time.monotonic() < self.deadline, reply["exceptionDetails"]
                time.sleep(0.2)
                continue
            state, previous = json.loads(reply["result"]["value"]), state
            if state != previous:
                changed = time.monotonic()
            drawn = all(state["plots"].get(i, {}).get("marks") for i in vega_ids)
            loaded = all(all(p["images"]) for p in state["plots"].values())
            if state["ready"] == "complete" and (drawn and loaded or time.monotonic() - changed > still):
                break  # all drew, or nothing more happens
            assert time.monotonic() < self.deadline - 5, f"the page did not finish drawing: {state}"
            time.sleep(0.2)
        time.sleep(0.5)  # errors of the last views, if any
        self.send("Runtime.evaluate", session, expression="0")  # collects the events sent meanwhile
        self.send("Target.closeTarget", targetId=target)
        problems = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if event.get("sessionId") != session:
                continue
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                problems.append(f"script error: {details.get('exception', {}).get('description') or details['text']}")
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                problems.append(f"console.{params['type']}: {' '.join(str(a.get('value', '')) for a in params['args'])}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                problems.append(f"browser error: {params['entry']['text']} {params['entry'].get('url', '')}")
            elif method == "Network.requestWillBeSent" and not params["request"]["url"].startswith(LOCAL_SCHEMES):
                problems.append(f"network request: {params['request']['url']}")
        return state["plots"], problems

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self.send("Browser.close")
                except (AssertionError, OSError):
                    pass
                self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        finally:
            os.close(self._write)
            os.close(self._read)


@pytest.fixture()
def browser(chromium, tmp_path):
    browser = Browser(chromium, tmp_path / "chromium-profile")
    yield browser
    browser.close()


def html_id(name: str) -> str:
    """The id dvc_render gives a plot's <div> (Renderer.remove_special_chars)."""
    return name.translate({ord(c): "_" for c in r"!@#$%^&*()[]{};,<>?\/:.|`~=_+ "})


def plot_files(project: Path) -> dict[str, dict[str, list[str]]]:
    """Every plot of dvc.yaml: its name -> {data file: the columns DVC reads from it}."""
    plots = {}
    for entry in yaml.safe_load((project / "dvc.yaml").read_text())["plots"]:
        name, props = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
        props = props or {}
        if isinstance(props.get("y"), dict):
            files = {path: [props["x"], *([c] if isinstance(c, str) else c)] for path, c in props["y"].items()}
        else:
            y = props.get("y", [])
            files = {name: [props["x"], *([y] if isinstance(y, str) else y)] if "x" in props else []}
        plots[name] = files
    return plots


def write_stand_in(path: Path, columns: list[str]) -> None:
    """A few rows of numbers in `columns` (or a small PNG) for a plot whose run this machine cannot build."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in IMAGE_SUFFIXES:
        from PIL import Image  # (matplotlib's image library)

        Image.new("RGB", (40, 30), (200, 60, 60)).save(path)
        return
    sep = "\t" if path.suffix == ".tsv" else ","
    rows = [sep.join(columns)] + [sep.join(str(i + k) for k in range(len(columns))) for i in range(4)]
    path.write_text("\n".join(rows) + "\n")


def assert_every_plot_drew(plots: dict, problems: list[str], expected: dict[str, bool], revisions: int) -> None:
    """`expected`: each plot's div id -> whether it is an image plot."""
    assert not problems, "the page failed offline:\n" + "\n".join(problems[:20])
    assert set(plots) == set(expected), f"plots missing from the page: {sorted(set(expected) - set(plots))}"
    undrawn = sorted(i for i, image in expected.items() if not image and not plots[i]["marks"])
    assert not undrawn, f"{len(undrawn)} Vega plots did not draw: {undrawn}"
    images = {i: plots[i]["images"] for i, image in expected.items() if image}
    broken = sorted(i for i, loaded in images.items() if len(loaded) != revisions or not all(loaded))
    assert not broken, f"images that did not load: {broken}"


def test_plots_show_and_diff_draw_every_plot_offline(browser, project, tmp_path):
    """The committed results (and stand-ins where this machine cannot build a run) on one page, in a browser, offline.

    The committed results cover stateful_lstm, lstm_text_generation and
    lstm_benchmark; every other plot of dvc.yaml gets a few rows of stand-in
    numbers in the columns dvc.yaml names, so every plot definition and template
    is drawn. With DVC's own page (Vega from a CDN) the same check fails.
    """
    for name in git(ROOT, "ls-files", "plots", "metrics").splitlines():  # the committed results
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, project / name)
    plots = plot_files(project)
    stand_ins = sorted(name for name, files in plots.items() if not all((project / f).exists() for f in files))
    missing: dict[str, list[str]] = {}  # a file may feed several plots: the columns of all of them
    for name in stand_ins:
        for path, columns in plots[name].items():
            if not (project / path).exists():
                missing[path] = list(dict.fromkeys(missing.get(path, []) + columns))
    for path, columns in missing.items():
        write_stand_in(project / path, columns)
    assert len(stand_ins) < len(plots) and any(not n.endswith(IMAGE_SUFFIXES) for n in set(plots) - set(stand_ins))
    expected = {html_id(name): name.endswith(IMAGE_SUFFIXES) for name in plots}
    vega_ids = {i for i, image in expected.items() if not image}

    # the template as `make setup` writes it, from this checkout's code
    (project / plots_page.TEMPLATE).unlink()
    run(["python", "-m", "stages.plots_page"], project)
    git(project, "add", "-A")
    git(project, "commit", "-qm", "results")

    out = run(["dvc", "plots", "show", "-o", "shown"], project)
    assert "failed to load" not in out.stdout + out.stderr, out.stdout + out.stderr
    shown, problems = browser.open(project / "shown" / "index.html", vega_ids)
    assert_every_plot_drew(shown, problems, expected, revisions=1)

    run(["dvc", "plots", "diff", "HEAD", "-o", "diffed"], project)  # two revisions on each plot: HEAD and workspace
    diffed, problems = browser.open(project / "diffed" / "index.html", vega_ids)
    assert_every_plot_drew(diffed, problems, expected, revisions=2)

    # the check itself: DVC's own page (one small plot of it) needs the CDN, so offline it draws nothing
    default = tmp_path / "default.html"
    from dvc_render.html import PAGE_HTML

    default.write_text(PAGE_HTML)
    small = "plots/compare/stateful_lstm/table.csv"
    run(["dvc", "plots", "show", small, "--html-template", str(default), "-o", "cdn"], project)
    cdn, problems = browser.open(project / "cdn" / "index.html", {html_id(small)}, still=1.0)
    assert html_id(small) in cdn and not any(plot["marks"] for plot in cdn.values())
    assert any(p.startswith("network request: https://cdn.jsdelivr.net/") for p in problems)
    assert any("vegaEmbed is not defined" in p for p in problems)


def test_the_template_is_where_dvc_config_points_and_make_setup_writes_it():
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:  # DVC reads a relative html_template from .dvc/ (dvc/commands/plots.py)
        configured = Path(repo.dvc_dir) / repo.config["plots"]["html_template"]
    assert configured.resolve() == (ROOT / plots_page.TEMPLATE).resolve()
    assert f"PLOTS_PAGE := {plots_page.TEMPLATE}\n" in (ROOT / "Makefile").read_text()
    assert f"/{plots_page.TEMPLATE}\n" in (ROOT / ".gitignore").read_text()


def test_page_keeps_dvc_placeholders_and_drops_the_cdn_scripts():
    text = plots_page.page("window.vegaEmbed = 1;", "Vega x", "1.0")
    assert "{plot_divs}" in text and "{refresh_tag}" in text and "{scripts}" not in text
    assert "<script>\nwindow.vegaEmbed = 1;\n    </script>" in text
    from dvc_render.html import HTML

    filled = HTML(text).embed()  # as DVC fills it
    assert "window.vegaEmbed = 1;" in filled and not re.search(r"\{(plot_divs|scripts|refresh_tag)\}", filled)
    for bad in ("{plot_divs}", "{scripts}", "a</script>b"):
        with pytest.raises(RuntimeError, match="cannot be inlined"):
            plots_page.page(f"x = '{bad}';", "Vega x", "1.0")


def test_vegalite_version_is_the_newest_5():
    assert plots_page.vegalite_version(["5.8", "5.14", "5.21", "6.1", "6.4"]) == "5.21"
    with pytest.raises(RuntimeError, match="no Vega-Lite 5"):
        plots_page.vegalite_version(["6.1"])
