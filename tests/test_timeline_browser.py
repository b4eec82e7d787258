"""The HTML timeline (``durable show --html``) as headless Chromium draws it: a chart scaled
to what happened, deadlines far ahead drawn as arrows, labels that do not overlap."""

from __future__ import annotations

import re
from typing import Any

import cbor2
import pytest
from browser import browser  # noqa: F401 - the fixture

from durable import _timeline as tl
from durable._core import events as ev
from durable._states import mark_state
from durable._timeline_html import to_html

T0 = 1_764_000_000.0
#: Where the chart is drawn, in the SVG's own units (see _timeline_html).
LABEL_W, CHART_W = 330, 860


def call(*args: Any) -> bytes:
    return cbor2.dumps([list(args), {}])


def page_of(browser: Any, timeline: tl.Timeline) -> Any:  # noqa: F811 - the fixture
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_content(to_html(timeline))
    return page


def bars_of(page: Any, seq: int) -> list[dict[str, float]]:
    """The bars of step ``seq``, in the chart's units: x, width, and where they end."""
    found: list[dict[str, float]] = page.evaluate(
        """seq => [...document.querySelectorAll(`g.step[data-seq="${seq}"] rect:not(.rowbg)`)]
            .map(r => { const b = r.getBBox(); return {x: b.x, width: b.width, end: b.x + b.width}; })""",
        seq,
    )
    return found


def ticks_of(page: Any) -> list[str]:
    texts: list[str] = page.evaluate(
        "[...document.querySelectorAll('svg[role=img] > text')].map(t => t.textContent)"
    )
    return [text for text in texts if text.startswith("+")]


_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "µs": 1e-6}


def seconds(tick: str) -> float:
    """``+1m30s`` → 90.0 (a tick label as the chart writes it)."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|µs|h|m|s)", tick)
    assert parts or tick == "+0", tick
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def test_a_run_that_waited_31s_on_a_1h_signal_timeout_is_scaled_to_31s(browser: Any) -> None:  # noqa: F811
    events = [
        ev.RunStarted("signup-1", "signup", call("ada"), T0),
        ev.TimerStarted(0, 3600.0, T0 + 3600, T0 + 0.01),  # the wait_signal's timeout, never reached
        ev.SignalReceived("email-confirmed", cbor2.dumps(True), T0 + 31.0, "m-1"),
        ev.ActivityScheduled(1, "welcome", call("ada"), T0 + 31.01),
        ev.ActivityCompleted(1, cbor2.dumps(None), 1, T0 + 31.2),
        ev.RunCompleted(cbor2.dumps("ok"), T0 + 31.5),
    ]
    page = page_of(browser, tl.build("signup-1", events))
    ticks = ticks_of(page)
    assert ticks and max(map(seconds, ticks)) <= 40, ticks  # seconds, not the hour of the timeout
    wait = bars_of(page, 0)
    assert wait and max(b["end"] for b in wait) >= LABEL_W + 0.9 * CHART_W, wait  # it spans the run
    welcome = bars_of(page, 1)
    assert welcome[0]["x"] >= LABEL_W + 0.9 * CHART_W  # at the end, where it happened
    assert page.locator("polygon.open").count() == 0


def test_a_waiting_run_draws_its_far_deadline_as_an_arrow_at_the_edge(browser: Any) -> None:  # noqa: F811
    events = [
        ev.RunStarted("remind-1", "remind", call("ada"), T0),
        ev.ActivityScheduled(0, "send", call("hi"), T0 + 0.01),
        ev.ActivityCompleted(0, cbor2.dumps(None), 1, T0 + 0.02),
        ev.TimerStarted(1, 3600.0, T0 + 3600, T0 + 0.03),
    ]
    timeline = mark_state(tl.build("remind-1", events), None, T0 + 10)
    assert timeline.status == "waiting"
    page = page_of(browser, timeline)
    assert max(map(seconds, ticks_of(page))) <= 12  # to now, not to the timer's end
    assert page.locator('g.step[data-seq="1"] polygon.open').count() == 1
    planned = bars_of(page, 1)
    assert max(b["end"] for b in planned) == pytest.approx(LABEL_W + CHART_W, abs=1)
    title = page.locator('g.step[data-seq="1"] polygon.open title').text_content()
    assert "goes on past the chart: until" in title


def test_the_labels_of_nearby_recoveries_do_not_overlap(browser: Any) -> None:  # noqa: F811
    events: list[Any] = [ev.RunStarted("r-1", "wf", call(), T0)]
    for seq in range(4):
        t = T0 + seq * 0.01
        events += [ev.ActivityScheduled(seq, "step", call(seq), t), ev.RunResumed(t + 0.001, 1000 + seq)]
        events.append(ev.ActivityCompleted(seq, cbor2.dumps(seq), 1, t + 0.005))
    events.append(ev.RunCompleted(cbor2.dumps(None), T0 + 0.05))
    page = page_of(browser, tl.build("r-1", events))
    boxes: list[dict[str, float]] = page.evaluate(
        """[...document.querySelectorAll('g.recovery text, g[class^="end"] text')]
            .map(t => { const b = t.getBBox(); return {x: b.x, y: b.y, w: b.width, h: b.height}; })"""
    )
    assert len(boxes) == 5
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            apart = a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"]
            apart = apart or a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"]
            assert apart, (a, b)
