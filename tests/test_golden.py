"""The packaged models give the committed answers on the sample photos (see golden_outputs.py to regenerate)."""

from __future__ import annotations

import pytest
from golden_outputs import ENGINES, IMAGES, MODELS, compute, read_ground_truth

#: Raw probabilities may move this much (about two steps of a uint8 output; an engine's kernels on another CPU) before it counts as a change.
SCORE_TOLERANCE = 0.01


@pytest.fixture(scope="module")
def answers() -> dict:
    return {(row["model"], row["format"], row["image"]): row for row in compute()}


def test_the_ground_truth_covers_every_packaged_file_and_photo():
    expected = {(row["model"], row["format"], row["image"]) for row in read_ground_truth()}
    assert expected == {(m, f, p.name) for m in MODELS for f in ENGINES for p in IMAGES.iterdir()}


@pytest.mark.parametrize("expected", read_ground_truth(), ids=lambda r: f"{r['model']}-{r['format']}-{r['image']}")
def test_packaged_models_give_the_ground_truth_label_and_score(expected, answers):
    got = answers[(expected["model"], expected["format"], expected["image"])]
    assert got["label"] == expected["label"]
    assert got["score"] == pytest.approx(expected["score"], abs=SCORE_TOLERANCE)
