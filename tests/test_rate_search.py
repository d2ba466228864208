"""The learned codecs' bpp search: the two strategies on model curves, and reuse of an earlier encode."""

from __future__ import annotations

import math

import pytest

from app.codecs import rate_search
from app.codecs.learned import LearnedCodec
from app.metrics import bpp

LO, HI = math.log(0.0018), math.log(0.0483)


def curve(slope: float, bend: float = 0.0):
    """A concave log bpp(log λ) like a learned codec's: slope at the low end, flatter with bend."""
    def f(x: float) -> float:
        t = x - LO
        return math.log(0.2) + slope * t - bend * t * t
    return f


class Recorder:
    def __init__(self, f):
        self.f = f
        self.calls: list[float] = []

    def __call__(self, x: float) -> float:
        self.calls.append(x)
        return self.f(x)


@pytest.mark.parametrize(("slope", "bend"), [(0.45, 0.0), (0.6, 0.08), (0.33, 0.0), (1.2, 0.1)])
@pytest.mark.parametrize("target", [0.25, 0.4, 0.55])
def test_from_known_reaches_one_percent_in_three_encodes(slope, bend, target):
    f = curve(slope, bend)
    goal = math.log(target)
    x0 = LO + 0.6 * (HI - LO)  # the slider's λ; its file is known
    assert f(LO) < goal < f(HI)
    real = Recorder(f)
    rate_search.from_known(goal, LO, HI, [(x0, f(x0))], real)
    assert 1 <= len(real.calls) <= 3
    assert abs(f(real.calls[-1]) - goal) <= rate_search.REAL_TOLERANCE


def test_from_known_encodes_nothing_when_a_known_file_is_close_enough():
    f = curve(0.45)
    x0 = LO + 1.0
    real = Recorder(f)
    rate_search.from_known(f(x0) + 0.005, LO, HI, [(x0, f(x0))], real)
    assert real.calls == []


def test_from_known_stops_at_the_end_of_the_range():
    f = curve(0.45)
    real = Recorder(f)
    rate_search.from_known(f(HI) + 1.0, LO, HI, [(HI, f(HI))], real)
    assert real.calls == []  # the known file is already the highest rate
    rate_search.from_known(f(HI) + 1.0, LO, HI, [(LO, f(LO))], real)
    assert real.calls and all(LO <= x <= HI for x in real.calls) and real.calls[-1] == HI


def test_from_estimate_brackets_then_encodes_once_or_twice():
    f = curve(0.55, 0.06)
    estimate = Recorder(lambda x: f(x) - 0.01)  # the estimate runs 1 % low, like the model's
    real = Recorder(f)
    goal = math.log(0.45)
    rate_search.from_estimate(goal, LO, HI, estimate, real)
    assert 1 <= len(real.calls) <= 2
    assert abs(f(real.calls[-1]) - goal) <= rate_search.REAL_TOLERANCE
    assert estimate.calls[:2] == [LO, HI]


def test_from_estimate_outside_the_range_returns_the_end():
    f = curve(0.45)
    real = Recorder(f)
    rate_search.from_estimate(f(LO) - 1.0, LO, HI, f, real)
    assert real.calls == [LO]


# --------------------------------------------------------------------------- on the tiny model


def test_search_after_an_encode_reuses_its_analysis_and_file(tiny_elic, photo, monkeypatch):
    codec = tiny_elic
    img = photo(96, 128, seed=7)
    assert isinstance(codec, LearnedCodec) and codec.rate_range is not None
    codec.forget_images()
    lo, hi = codec.rate_range
    mid = math.sqrt(lo * hi)
    first = codec.encode(img, lmbda=mid)
    h, w = img.shape[:2]
    model = codec._model(codec._variants[0])
    analyses = []
    original = model.analysis
    monkeypatch.setattr(model, "analysis", lambda *a, **k: analyses.append(1) or original(*a, **k))
    estimates = []
    original_estimate = model.estimate_bits
    monkeypatch.setattr(model, "estimate_bits",
                        lambda y: estimates.append(1) or original_estimate(y))

    # the known file itself is within 1 %: no new work at all
    same = codec.encode(img, target_bpp=first.bpp * 1.002)
    assert same.data == first.data and analyses == [] and estimates == []

    target = first.bpp * 1.15
    found = codec.encode(img, target_bpp=target)
    assert analyses == [] and estimates == []  # seeded by the earlier encode
    # the file is what a plain encode at the λ it reports writes
    assert found.data == codec.encode(img, lmbda=found.lmbda).data
    assert abs(bpp(found.data, h, w) - target) <= abs(first.bpp - target)

    codec.forget_images()
    analyses.clear()
    codec.encode(img, target_bpp=target)
    assert analyses == [1] and estimates  # from scratch: one analysis, estimates
