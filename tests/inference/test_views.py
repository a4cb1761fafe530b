"""The classifier's views: which views run for a cell, and how their probabilities are combined."""

from __future__ import annotations

import numpy as np
import pytest

from agent.inference.tflite_classifier import TfliteClassifier, average_views, classify_views, views


def _image() -> np.ndarray:
    return np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)


class Recorder:
    """A stand-in model: answers ``answers`` in turn and keeps the views it was given."""

    def __init__(self, *answers):
        self.answers = [np.asarray(a, np.float32) for a in answers]
        self.seen: list[np.ndarray] = []

    def __call__(self, view: np.ndarray) -> np.ndarray:
        self.seen.append(view)
        return self.answers[len(self.seen) - 1]


def test_views_are_the_documented_flips_in_order():
    img = _image()
    got = views(img, 4)
    assert [v.shape for v in got] == [(4, 4, 3)] * 4
    assert np.array_equal(got[0], img)
    assert np.array_equal(got[1], img[:, ::-1])
    assert np.array_equal(got[2], img[::-1])
    assert np.array_equal(got[3], np.rot90(img))
    assert all(v.flags["C_CONTIGUOUS"] for v in got)


def test_a_confident_first_view_decides_alone():
    model = Recorder([0.95, 0.05], [0.1, 0.9])
    p = classify_views(model, _image(), 2, more_views_below=0.9)
    assert len(model.seen) == 1
    assert int(np.argmax(p)) == 0 and p.sum() == pytest.approx(1.0)


def test_an_unsure_first_view_gets_every_other_view():
    model = Recorder([0.6, 0.4], [0.1, 0.9], [0.2, 0.8], [0.3, 0.7])
    p = classify_views(model, _image(), 4, more_views_below=0.9)
    assert len(model.seen) == 4
    assert np.array_equal(model.seen[1], _image()[:, ::-1])
    assert np.allclose(p, average_views(model.answers))
    assert int(np.argmax(p)) == 1  # the other views outvote the unsure first one


def test_gate_of_one_runs_every_view_and_zero_runs_one():
    m = Recorder([0.99, 0.01], [0.98, 0.02])
    classify_views(m, _image(), 2, more_views_below=1.0)
    assert len(m.seen) == 2
    m = Recorder([0.5, 0.5], [0.98, 0.02])
    classify_views(m, _image(), 2, more_views_below=0.0)
    assert len(m.seen) == 1


def test_classifier_refuses_a_gate_outside_0_to_1():
    with pytest.raises(ValueError, match="more_views_below"):
        TfliteClassifier(more_views_below=1.5)


def test_the_configured_defaults_are_the_classifiers_own():
    """config.py keeps its own defaults (it must not import the inference stack); they must not drift apart."""
    import inspect

    from agent.config import InferenceSettings

    defaults = inspect.signature(TfliteClassifier.__init__).parameters
    settings = InferenceSettings()
    assert settings.classifier_views == defaults["views"].default
    assert settings.classifier_more_views_below == defaults["more_views_below"].default
