"""A tbweights run, a local `tensorboard` serving it, and headless Chromium reading the pages.

Shared by `tests/test_browser.py` (checks what TensorBoard renders) and
`docs/screenshots.py` (takes the pictures in `docs/images/`). Everything stays on
127.0.0.1: TensorBoard binds to it, and Chromium starts with its background
networking, component updates and sync turned off. Selenium gets the paths of
Debian's `chromium` and `chromedriver`, so Selenium Manager never downloads a browser.

TensorBoard 2.21's page mixes two UI toolkits. The Time Series dashboard is
Angular and lives in the ordinary DOM. The Histograms, Distributions, Scalars and
Text dashboards are Polymer elements whose content sits in shadow roots, so the
queries below walk every shadow root (`DEEP_ALL`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loopback import free_port, get_json
from tbweights import WeightWriter

RUN = "mlp"
STEPS = (0, 10, 20, 30)
# A name with Markdown and HTML characters: the text dashboard must show it verbatim.
ODD_NAME = "head.odd|name<b>"
ODD_TAG = "head/odd_name_b_"
HISTOGRAM_TAGS = ("fc1/weight", "fc1/bias", "fc2/weight", "fc2/bias", ODD_TAG)
TENSOR_NAMES = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", ODD_NAME)
TEXT_TAGS = tuple(tag + "/stats" for tag in HISTOGRAM_TAGS)
OVERVIEW_TAG = "tbweights/overview"
INIT_CHECK_TAG = "tbweights/init_check"
SCALAR_TAG = "fc1/weight/l2_norm"
# fc2.weight contains one NaN at every step, and the text summary and the init check must say so.
NAN_TENSOR = "fc2.weight"
NAN_TAG = "fc2/weight"
SAMPLES_FLAG = "--samples_per_plugin=text=1000,histograms=1000"

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
STARTUP_SECONDS = 120


def write_run(logdir: Path, steps: tuple[int, ...] = STEPS) -> Path:
    """Log a 16-32-4 MLP and a head at `steps`, with scalars, change tracking, the init check and a NaN."""
    rng = np.random.default_rng(7)

    def torch_default(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, size=shape).astype(np.float32)

    weights = {
        "fc1.weight": torch_default((32, 16), 16),
        "fc1.bias": torch_default((32,), 16),
        "fc2.weight": torch_default((4, 32), 32),
        "fc2.bias": torch_default((4,), 32),
        ODD_NAME: torch_default((3, 4), 4),
    }
    run_dir = logdir / RUN
    with WeightWriter(run_dir, scalars=True, track_change=True, check_init=True) as writer:
        for step in steps:
            weights[NAN_TENSOR][1, 3] = np.nan
            writer.log(weights, step)
            # A training step: the weights drift and spread a little.
            weights = {
                name: 1.03 * w + rng.normal(0.0, 0.02, w.shape).astype(np.float32) for name, w in weights.items()
            }
    return run_dir


def _run_loaded(port: int, steps: tuple[int, ...]) -> bool:
    """True once TensorBoard serves every step of the run's histograms, text and scalars."""
    text_tags = get_json(port, "/data/plugin/text/tags").get(RUN, [])
    if OVERVIEW_TAG not in text_tags or INIT_CHECK_TAG not in text_tags:
        return False
    scalar_tags = get_json(port, "/data/plugin/scalars/tags").get(RUN, {})
    if SCALAR_TAG not in scalar_tags:
        return False
    for tag in HISTOGRAM_TAGS:
        if tag not in get_json(port, "/data/plugin/histograms/tags").get(RUN, {}):
            return False
        served = [
            step for _wall, step, _buckets in get_json(port, "/data/plugin/histograms/histograms", run=RUN, tag=tag)
        ]
        if served != list(steps):
            return False
    return True


@contextmanager
def tensorboard(logdir: Path, *extra_flags: str, steps: tuple[int, ...] = STEPS) -> Iterator[str]:
    """Run `tensorboard --logdir` on 127.0.0.1 and yield its base URL once it serves all `steps` of the run."""
    port = free_port()
    command = [
        sys.executable, "-m", "tensorboard.main",
        "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port),
        "--reload_interval", "1", *extra_flags,
    ]  # fmt: skip
    stderr = tempfile.TemporaryFile()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                stderr.seek(0)
                raise RuntimeError(f"tensorboard exited with {process.returncode}: {stderr.read().decode()[-2000:]}")
            try:
                if _run_loaded(port, steps):
                    break
            except OSError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"tensorboard on port {port} did not load run {RUN!r} within {STARTUP_SECONDS} s")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        stderr.close()


def missing_browser() -> str | None:
    """Why headless Chromium cannot run here, or None when it can."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} not found: install Debian's {package} (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[dev]'"
    return None


@contextmanager
def chromium(width: int = 1400, height: int = 900) -> Iterator[Any]:
    """Start headless Chromium through chromedriver, with a fresh profile and console logging."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="tbweights-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        # --window-size sets the outer window; the screenshots want this viewport.
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# JavaScript run in the page. `deepAll(selector)` matches in the document and in every
# shadow root below it. `deepText(node)` is the visible text of a node and its shadow
# roots, without style and script elements.
DEEP_ALL = """
function deepAll(selector, root = document) {
  const found = [...root.querySelectorAll(selector)];
  for (const el of root.querySelectorAll('*')) {
    if (el.shadowRoot) found.push(...deepAll(selector, el.shadowRoot));
  }
  return found;
}
function deepText(node) {
  if (node.nodeType === Node.TEXT_NODE) return node.textContent;
  if (node.nodeType !== Node.ELEMENT_NODE && node.nodeType !== Node.DOCUMENT_FRAGMENT_NODE
      && node.nodeType !== Node.DOCUMENT_NODE) return '';
  if (node.tagName === 'STYLE' || node.tagName === 'SCRIPT') return '';
  if (node.nodeType === Node.ELEMENT_NODE && !node.checkVisibility()) return '';
  let text = node.shadowRoot ? deepText(node.shadowRoot) : '';
  for (const child of node.childNodes) text += deepText(child) + ' ';
  return text;
}
"""

# Per legacy loader element (tf-histogram-loader, tf-text-loader, ...): its tag and how much it drew.
LOADERS_JS = (
    DEEP_ALL
    + """
return deepAll(arguments[0]).map(loader => ({
  tag: loader.tag,
  run: loader.run,
  paths: deepAll('path', loader.shadowRoot).filter(p => (p.getAttribute('d') || '').length > 20).length,
  tables: deepAll('table', loader.shadowRoot).map(table => [...table.rows].map(
      row => [...row.cells].map(cell => cell.textContent.trim()))),
  text: deepText(loader.shadowRoot),
}));
"""
)

# The time-series histogram cards: their tag and how many filled paths they drew.
TIMESERIES_HISTOGRAMS_JS = """
return [...document.querySelectorAll('histogram-card-component')].map(card => ({
  tag: card.querySelector('tb-truncated-path').getAttribute('title'),
  paths: card.querySelectorAll('tb-histogram path').length,
}));
"""

VISIBLE_TEXT_JS = DEEP_ALL + "return deepText(document.body);"


@dataclass
class Loader:
    tag: str
    run: str
    paths: int
    tables: list[list[list[str]]]
    text: str


def loaders(driver: Any, element: str) -> list[Loader]:
    """The legacy dashboard's card loaders (`tf-histogram-loader`, `tf-text-loader`, ...)."""
    return [Loader(**item) for item in driver.execute_script(LOADERS_JS, element)]


def open_dashboard(driver: Any, base_url: str, dashboard: str) -> None:
    """Load TensorBoard on one dashboard (`timeseries`, `histograms`, `text`, ...)."""
    driver.get(f"{base_url}/#{dashboard}")


def console_errors(driver: Any, base_url: str) -> list[str]:
    """SEVERE console messages from TensorBoard's own origin since the last call."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and entry["message"].startswith(base_url)
    ]


# Legacy dashboards leave some categories (tag groups) closed, such as `tbweights` in the
# Text dashboard. This script clicks the heading of each closed one, as a user would.
EXPAND_JS = (
    DEEP_ALL
    + """
const dashboard = deepAll(arguments[0])[0];
if (!dashboard) return null;
const opened = [];
for (const view of deepAll('tf-category-paginated-view', dashboard.shadowRoot)) {
  if (view.category && view.category.name && !view.opened) {
    view.shadowRoot.querySelector('button.heading').click();
    opened.push(view.category.name);
  }
}
return opened;
"""
)


def expand_groups(driver: Any, dashboard_element: str) -> list[str]:
    """Open every closed tag group of a legacy dashboard such as `tf-text-dashboard`."""
    return list(driver.execute_script(EXPAND_JS, dashboard_element) or [])


def drawn_loaders(element: str, tags: tuple[str, ...]) -> Any:
    """A wait condition: every tag has a loader that drew at least one path; returns them by tag."""

    def condition(driver: Any) -> dict[str, Loader] | None:
        found = {loader.tag: loader for loader in loaders(driver, element) if loader.run == RUN}
        if all(tag in found and found[tag].paths > 0 for tag in tags):
            return found
        expand_groups(driver, element.replace("-loader", "-dashboard"))
        return None

    return condition


def text_tables(tags: tuple[str, ...], steps: int) -> Any:
    """A wait condition: every text tag rendered one HTML table per step; returns tables by tag."""

    def condition(driver: Any) -> dict[str, list[list[list[str]]]] | None:
        expand_groups(driver, "tf-text-dashboard")
        found = {loader.tag: loader.tables for loader in loaders(driver, "tf-text-loader")}
        if all(len(found.get(tag, [])) >= steps for tag in tags):
            return found
        return None

    return condition


def wait_for(driver: Any, condition: Any, what: str, timeout: float = 90) -> Any:
    """Poll `condition(driver)` until it returns something truthy; fail naming `what`."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.5).until(condition, f"timed out waiting for {what}")


def visible_text(driver: Any) -> str:
    """The page's text, shadow roots included, with whitespace runs collapsed."""
    return " ".join(str(driver.execute_script(VISIBLE_TEXT_JS)).split())


# The rendered width of a text tag's first visible table and the words in it that the
# browser split across two lines. TensorBoard's CSS (`word-break: break-word`) lets a squeezed table cell
# break a word, a number included, at any character.
BROKEN_WORDS_JS = (
    DEEP_ALL
    + r"""
const table = deepAll('tf-text-loader')
  .filter(loader => loader.tag === arguments[0])
  .map(loader => deepAll('table', loader.shadowRoot)[0])
  .find(table => table && table.getBoundingClientRect().width > 0);
const broken = [];
for (const cell of table.querySelectorAll('td, th')) {
  const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (const match of node.textContent.matchAll(/\S+/g)) {
      const range = document.createRange();
      range.setStart(node, match.index);
      range.setEnd(node, match.index + match[0].length);
      const lines = new Set([...range.getClientRects()].map(rect => Math.round(rect.top)));
      if (lines.size > 1) broken.push(match[0]);
    }
  }
}
return [Math.round(table.getBoundingClientRect().width), broken];
"""
)


def broken_words(driver: Any, tag: str) -> tuple[int, list[str]]:
    """The width in CSS pixels of the text tag's first table, and the words it shows broken."""
    width, words = driver.execute_script(BROKEN_WORDS_JS, tag)
    return int(width), [str(word) for word in words]
