"""End to end in a browser: TensorBoard's own pages render what tbweights wrote.

A real `tensorboard` serves a run of four steps on 127.0.0.1, and headless
Chromium opens its dashboards. The checks read the rendered page (the DOM after
TensorBoard's scripts ran), not the HTTP API. The cards of our tags must exist
and draw their charts, and the text tables must be HTML tables with our columns.
The NaN tensor must show its NaN count, and no dashboard may show an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import browser_support as support
from tbweights.initcheck import MARKDOWN_COLUMNS
from tbweights.summaries import OVERVIEW_COLUMNS

pytestmark = pytest.mark.browser

# Words TensorBoard uses when a request or a chart fails ("Error", "Failed to load", "No data").
ERROR_WORDS = re.compile(r"\berror\b|\bfailed\b|could not|unable to|\bno data\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    reason = support.missing_browser()
    if reason is not None:
        pytest.skip(reason)
    logdir = tmp_path_factory.mktemp("browser") / "logs"
    support.write_run(logdir)
    with support.tensorboard(logdir, support.SAMPLES_FLAG) as url:
        yield url


@pytest.fixture(scope="module")
def driver(base_url: str) -> Iterator[Any]:
    with support.chromium() as browser:
        yield browser


@pytest.fixture
def page(driver: Any, base_url: str) -> Iterator[Any]:
    """The browser; after each test, the page shows no error and the console has no SEVERE entry."""
    support.console_errors(driver, base_url)  # drop what earlier tests left
    yield driver
    match = ERROR_WORDS.search(support.visible_text(driver))
    assert match is None, f"the page shows {match.group(0)!r}"
    assert support.console_errors(driver, base_url) == []


def test_histograms_dashboard_draws_every_tag(page: Any, base_url: str) -> None:
    support.open_dashboard(page, base_url, "histograms")
    tags = support.HISTOGRAM_TAGS + tuple(tag + "/change" for tag in support.HISTOGRAM_TAGS)
    drawn = support.wait_for(page, support.drawn_loaders("tf-histogram-loader", tags), "histogram cards")
    assert support.NAN_TAG in drawn
    assert drawn[support.NAN_TAG].paths > 0


def test_distributions_dashboard_draws_every_tag(page: Any, base_url: str) -> None:
    support.open_dashboard(page, base_url, "distributions")
    support.wait_for(
        page, support.drawn_loaders("tf-distribution-loader", support.HISTOGRAM_TAGS), "distribution cards"
    )


def test_scalars_dashboard_draws_tensor_scalars(page: Any, base_url: str) -> None:
    support.open_dashboard(page, base_url, "scalars")
    tags = ("fc1/weight/l2_norm", "fc2/weight/nonfinite", "fc2/weight/relative_change")

    def condition(driver: Any) -> bool:
        support.expand_groups(driver, "tf-scalar-dashboard")
        cards = {card.tag: card for card in support.loaders(driver, "tf-scalar-card")}
        return all(tag in cards and cards[tag].paths > 0 for tag in tags)

    support.wait_for(page, condition, "scalar cards")


def test_time_series_shows_histogram_cards(page: Any, base_url: str) -> None:
    from selenium.webdriver.common.by import By

    support.open_dashboard(page, base_url, "timeseries")
    tag_filter = support.wait_for(
        page, lambda d: d.find_element(By.CSS_SELECTOR, "metrics-tag-filter input"), "the tag filter"
    )
    tag_filter.send_keys("^fc[12]/(weight|bias)$")

    def condition(driver: Any) -> dict[str, int] | None:
        for card in driver.find_elements(By.CSS_SELECTOR, "card-view"):
            driver.execute_script("arguments[0].scrollIntoView({block: 'nearest'})", card)
        cards = {card["tag"]: card["paths"] for card in driver.execute_script(support.TIMESERIES_HISTOGRAMS_JS)}
        expected = {tag for tag in support.HISTOGRAM_TAGS if tag.startswith("fc")}
        return cards if expected <= {tag for tag, paths in cards.items() if paths > 0} else None

    cards = support.wait_for(page, condition, "time-series histogram cards")
    assert cards[support.NAN_TAG] > 0


def test_text_stats_tables_show_each_step(page: Any, base_url: str) -> None:
    support.open_dashboard(page, base_url, "text")
    tags = support.TEXT_TAGS
    tables = support.wait_for(page, support.text_tables(tags, len(support.STEPS)), "text tables")
    for tag, name in zip(tags, support.TENSOR_NAMES, strict=True):
        for table in tables[tag]:
            assert table[0] == ["statistic", "value"]
            assert dict(table[1:])["name"] == name
        # In a 1400-pixel window the two-column table fits, so no number is split across lines.
        assert support.broken_words(page, tag)[1] == []


def test_text_shows_nan_count(page: Any, base_url: str) -> None:
    support.open_dashboard(page, base_url, "text")
    tag = support.NAN_TAG + "/stats"
    tables = support.wait_for(page, support.text_tables((tag,), len(support.STEPS)), "the NaN tensor's text")
    for table in tables[tag]:
        rows = dict(table[1:])
        assert rows["NaN"] == "1"
        assert rows["count"] == "128"
        assert rows["note"] == "mean, std, min, max and the histogram cover the 127 finite values"
        assert rows["mean"] != "nan"


def test_text_overview_is_a_table(page: Any, base_url: str) -> None:
    support.open_dashboard(page, base_url, "text")
    tag = support.OVERVIEW_TAG
    tables = support.wait_for(page, support.text_tables((tag,), len(support.STEPS)), "the overview table")
    for table in tables[tag]:
        assert table[0] == list(OVERVIEW_COLUMNS)
        rows = {row[0]: dict(zip(OVERVIEW_COLUMNS, row, strict=True)) for row in table[1:]}
        assert set(rows) == set(support.TENSOR_NAMES)
        assert rows[support.NAN_TENSOR]["non-finite"] == "1"
        assert rows["fc1.bias"]["shape"] == "(32,)"
    # In a 1400-pixel window the table fits its card, so no word or number is split.
    assert support.broken_words(page, tag)[1] == []


def test_text_init_check_is_a_table(page: Any, base_url: str) -> None:
    support.open_dashboard(page, base_url, "text")
    tag = support.INIT_CHECK_TAG
    tables = support.wait_for(page, support.text_tables((tag,), 1), "the init check table")
    assert len(tables[tag]) == 1  # written at the first logged step only
    table = tables[tag][0]
    assert table[0] == list(MARKDOWN_COLUMNS)
    rows = {row[0]: dict(zip(MARKDOWN_COLUMNS, row, strict=True)) for row in table[1:]}
    assert set(rows) == set(support.TENSOR_NAMES)
    assert rows[support.NAN_TENSOR]["verdict"] == "broken"
    assert rows["fc1.weight"]["verdict"] == "consistent"
    assert rows["fc1.weight"]["layer"] == "dense*"
    # The reasons follow the table as a list.
    [loader] = [loader for loader in support.loaders(page, "tf-text-loader") if loader.tag == tag]
    assert f"{support.NAN_TENSOR} (broken): 1 NaN, 0 +Inf, 0 -Inf values" in " ".join(loader.text.split())
    assert support.broken_words(page, tag)[1] == []


def test_default_sample_sizes_show_every_step(driver: Any, tmp_path: Path) -> None:
    """Without --samples_per_plugin, a run of four steps still shows all of them."""
    logdir = tmp_path / "logs"
    support.write_run(logdir)
    with support.tensorboard(logdir) as url:
        support.console_errors(driver, url)
        support.open_dashboard(driver, url, "text")
        tags = (support.OVERVIEW_TAG, support.NAN_TAG + "/stats")
        tables = support.wait_for(driver, support.text_tables(tags, len(support.STEPS)), "text tables")
        assert [len(tables[tag]) for tag in tags] == [len(support.STEPS)] * 2
        support.open_dashboard(driver, url, "histograms")
        support.wait_for(
            driver, support.drawn_loaders("tf-histogram-loader", support.HISTOGRAM_TAGS), "histogram cards"
        )
        assert support.console_errors(driver, url) == []
