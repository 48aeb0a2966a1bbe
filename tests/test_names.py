"""Awkward tensor names: tags stay valid and unique, the text keeps the original name."""

from __future__ import annotations

import html
import re

import numpy as np
import pytest
from tensorboard import plugin_util

from tbweights import log_weights
from tbweights.tags import MAX_TAG_LENGTH, TEXT_SUFFIX

NAMES = [
    "layer one.weight",  # space
    "layer_one.weight",  # equal to the one above after cleaning
    "encoder/layer/kernel",
    "dense/kernel:0",
    "dense/kernel",  # equal to the one above once `:0` is dropped
    "a;b.bias",
    "a_b.bias",
    "/leading/slash",
    "leading/slash",
    "trailing/",
    "gewichte.größe",
    "重み.バイアス",
    "x" * 350 + ".weight",
    "x" * 350 + ".bias",  # the same first 200 characters
    "pipe|and`tick`.weight",
    "back\\slash<b>&amp;.weight",
    "line\nbreak.weight",
    "",
    "/",
    "fc",
    "fc/stats",  # would be fc's text tag
]

VALID_TAG = re.compile(r"^[\w.\-~]+(/[\w.\-~]+)*$")  # `~` marks a cut tag


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory):
    from conftest import RunReader

    logdir = tmp_path_factory.mktemp("names")
    tensors = {name: np.full(3, index, np.float32) for index, name in enumerate(NAMES)}
    report = log_weights(tensors, logdir)
    return report, RunReader(logdir)


def test_every_name_written(written) -> None:
    report, _ = written
    assert [r.tensor.name for r in report.results] == NAMES
    assert report.skipped == []


def test_tags_valid_and_unique(written) -> None:
    report, reader = written
    tags = [r.histogram_tag for r in report.results] + [r.text_tag for r in report.results]
    assert len(set(tags)) == len(tags)
    for tag in tags:
        assert VALID_TAG.match(tag), tag
        assert len(tag) <= MAX_TAG_LENGTH + len(TEXT_SUFFIX) + 3, tag
    assert set(tags) <= set(reader.tags)


def test_tags_of_known_names(written) -> None:
    report, _ = written
    tags = {r.tensor.name: r.histogram_tag for r in report.results}
    assert tags["layer one.weight"] == "layer_one/weight"
    assert tags["layer_one.weight"] == "layer_one/weight_2"
    assert tags["dense/kernel:0"] == "dense/kernel"
    assert tags["dense/kernel"] == "dense/kernel_2"
    assert tags["/leading/slash"] == "leading/slash"
    assert tags["leading/slash"] == "leading/slash_2"
    assert tags["重み.バイアス"] == "重み/バイアス"
    assert tags["fc"] == "fc"
    assert tags["fc/stats"] == "fc/stats_2"
    long_weight, long_bias = tags["x" * 350 + ".weight"], tags["x" * 350 + ".bias"]
    assert len(long_weight) == len(long_bias) == MAX_TAG_LENGTH
    assert long_weight != long_bias


def test_each_histogram_holds_its_own_tensor(written) -> None:
    """Tags that collided after cleaning still point at the right tensor."""
    report, reader = written
    for index, result in enumerate(report.results):
        rows = reader.value(result.histogram_tag)
        assert rows[-1, 0] == index, result.tensor.name


@pytest.mark.parametrize("index", range(len(NAMES)))
def test_text_renders_original_name(written, index: int) -> None:
    report, reader = written
    result = report.results[index]
    rendered = plugin_util.markdown_to_safe_html(reader.text(result.text_tag))
    expected = NAMES[index].replace("\n", "\\n")
    if expected.strip():
        assert f"<code>{html.escape(expected, quote=False)}</code>" in rendered
