"""Take the TensorBoard screenshots in docs/images/ from a run that tbweights writes.

    PYTHONPATH=src python docs/screenshots.py [--out docs/images]

It needs Debian's `chromium` and `chromium-driver`, the `dev` extra (selenium) and
Pillow (a dependency of tensorboard).
The run, the server and the browser are those of tests/test_browser.py
(tests/browser_support.py): a 16-32-4 MLP and a small head logged with scalars,
change tracking and the init check, here at 21 steps (0 to 200), served by
`tensorboard` on 127.0.0.1. Every picture is taken after the charts or tables it
shows have rendered.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import browser_support as support  # noqa: E402

WIDTH, HEIGHT = 1400, 900
# More steps than the tests log, so the charts show a course rather than four points.
STEPS = tuple(range(0, 201, 10))
# Charts animate into place after their data arrives (an estimate from watching them).
SETTLE_SECONDS = 1.5
FC_TAGS = tuple(tag for tag in support.HISTOGRAM_TAGS if tag.startswith("fc"))

FIND_LOADER_JS = support.DEEP_ALL + "return deepAll(arguments[0]).find(loader => loader.tag === arguments[1]);"
# A text card scrolls its steps in a box 500 px high, so the pictures lift that limit
# to show the whole table of the latest step, which comes first.
UNCLIP_CARD_JS = "arguments[0].shadowRoot.querySelector('#steps-container').style.maxHeight = 'none';"
# The right and bottom edge of the card's first step (the latest), relative to the card:
# its table and the notes or lists under it.
TABLE_EDGES_JS = """
const card = arguments[0].getBoundingClientRect();
const view = arguments[0].shadowRoot.querySelector('tf-markdown-view').shadowRoot;
// A paragraph's box spans the card, so the extent of its text counts instead.
const rects = [...view.querySelectorAll('table, p, li')].map(el => {
  if (el.tagName === 'TABLE') return el.getBoundingClientRect();
  const range = document.createRange();
  range.selectNodeContents(el);
  return range.getBoundingClientRect();
});
return [Math.max(...rects.map(r => r.right)) - card.left, Math.max(...rects.map(r => r.bottom)) - card.top];
"""


def open_filtered(driver: Any, base_url: str, dashboard: str, tag_filter: str, **settings: str) -> None:
    """Open a legacy dashboard with its tag filter and settings in the URL, where TensorBoard keeps them."""
    params = {"tagFilter": tag_filter, **settings}
    query = "&".join(f"{key}={urllib.parse.quote(value, safe='')}" for key, value in params.items())
    driver.get(f"{base_url}/#{dashboard}&{query}")


def save_png(png: bytes, path: Path) -> None:
    """Save a screenshot with 256 colors: TensorBoard's flat colors survive, and the file shrinks."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"{path}: {image.width}x{image.height}, {path.stat().st_size // 1024} KiB")


def settle_and_save(driver: Any, path: Path) -> None:
    time.sleep(SETTLE_SECONDS)
    save_png(driver.get_screenshot_as_png(), path)


def set_viewport(driver: Any, width: int, height: int) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )


def histograms(driver: Any, base_url: str, out: Path) -> None:
    open_filtered(driver, base_url, "histograms", "^fc[12]/(weight|bias)$")
    support.wait_for(driver, support.drawn_loaders("tf-histogram-loader", FC_TAGS), "histogram cards")
    settle_and_save(driver, out / "histograms.png")


def distributions(driver: Any, base_url: str, out: Path) -> None:
    open_filtered(driver, base_url, "distributions", "^fc[12]/(weight|bias)$")
    support.wait_for(driver, support.drawn_loaders("tf-distribution-loader", FC_TAGS), "distribution cards")
    settle_and_save(driver, out / "distributions.png")


def scalars(driver: Any, base_url: str, out: Path) -> None:
    open_filtered(driver, base_url, "scalars", "^fc2/weight/", _smoothingWeight="0")
    tags = ("fc2/weight/l2_norm", "fc2/weight/std", "fc2/weight/nonfinite")

    def drawn(driver: Any) -> bool:
        cards = {card.tag: card for card in support.loaders(driver, "tf-scalar-card")}
        return all(tag in cards and cards[tag].paths > 0 for tag in tags)

    support.wait_for(driver, drawn, "scalar cards")
    settle_and_save(driver, out / "scalars.png")


def time_series(driver: Any, base_url: str, out: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    support.open_dashboard(driver, base_url, "timeseries")
    close = support.wait_for(
        driver, lambda d: d.find_element(By.CSS_SELECTOR, "button[aria-label='Close side pane']"), "the settings pane"
    )
    close.click()
    driver.find_element(By.CSS_SELECTOR, "metrics-tag-filter input").send_keys("^fc1/weight", Keys.ESCAPE)

    def drawn(driver: Any) -> bool:
        cards = driver.execute_script(support.TIMESERIES_HISTOGRAMS_JS)
        return any(card["tag"] == "fc1/weight" and card["paths"] > 0 for card in cards)

    support.wait_for(driver, drawn, "the fc1/weight histogram card")
    driver.execute_script("document.activeElement.blur();")  # no text cursor in the picture
    settle_and_save(driver, out / "time-series.png")


def text(driver: Any, base_url: str, out: Path) -> None:
    """Crop the card of each text tag to its first step's table."""
    from PIL import Image

    pictures = (
        ("text-overview", support.OVERVIEW_TAG),
        ("text-init-check", support.INIT_CHECK_TAG),
        ("text-stats", support.NAN_TAG + "/stats"),
    )
    try:
        for name, tag in pictures:
            set_viewport(driver, WIDTH, 2 * HEIGHT)
            open_filtered(driver, base_url, "text", "^" + tag + "$")
            support.wait_for(driver, support.text_tables((tag,), 1), f"the text of {tag}")
            card = driver.execute_script(FIND_LOADER_JS, "tf-text-loader", tag)
            driver.execute_script(UNCLIP_CARD_JS, card)
            time.sleep(SETTLE_SECONDS)
            image = Image.open(io.BytesIO(card.screenshot_as_png))
            right, bottom = driver.execute_script(TABLE_EDGES_JS, card)
            right, bottom = min(image.width, int(right) + 24), min(image.height, int(bottom) + 16)
            buffer = io.BytesIO()
            image.crop((0, 0, right, bottom)).save(buffer, format="PNG")
            save_png(buffer.getvalue(), out / f"{name}.png")
    finally:
        set_viewport(driver, WIDTH, HEIGHT)


def report_text_widths(driver: Any, base_url: str, widths: list[int]) -> None:
    """Print, for each page width, how wide each text table renders and which words it breaks."""
    tags = (support.OVERVIEW_TAG, support.INIT_CHECK_TAG, support.NAN_TAG + "/stats")
    for width in widths:
        set_viewport(driver, width, HEIGHT)
        for tag in tags:
            open_filtered(driver, base_url, "text", "^" + tag + "$")
            support.wait_for(driver, support.text_tables((tag,), 1), f"the text of {tag}")
            table_width, broken = support.broken_words(driver, tag)
            print(f"page {width} px  {tag}: table {table_width} px, {len(broken)} broken words {broken[:6]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "images",
        help="folder for the PNG files, created if missing (default: docs/images, which it overwrites)",
    )
    parser.add_argument(
        "--text-widths",
        type=int,
        nargs="+",
        metavar="PIXELS",
        help="take no pictures; print, for each page width, the text tables' widths and broken words",
    )
    args = parser.parse_args()
    reason = support.missing_browser()
    if reason is not None:
        sys.exit(f"error: {reason}")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        logdir = Path(tmp) / "logs"
        support.write_run(logdir, STEPS)
        with (
            support.tensorboard(logdir, support.SAMPLES_FLAG, steps=STEPS) as base_url,
            support.chromium(WIDTH, HEIGHT) as driver,
        ):
            if args.text_widths:
                report_text_widths(driver, base_url, args.text_widths)
                return
            for take in (histograms, distributions, scalars, time_series, text):
                take(driver, base_url, args.out)


if __name__ == "__main__":
    main()
