"""The dashboard in a real browser (Debian's chromium through Playwright) against live daphne.

Runs execute in the server process (the embedded worker of the in-memory channel layer), so the
page sees real progress over the WebSocket. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline_app.models import PipelineDefinition, PipelineRun, RunStatus, StageStat
from tests.helpers import free_port

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
PASSWORD = "browser-pass-1"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _require_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    message = f"{CHROMIUM} is missing (make browser-deps installs Debian's chromium)"
    if os.environ.get("PIPELINE_APP_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def live_server_url(subprocess_env: dict[str, str], synced_pipelines: None) -> Iterator[str]:
    port = free_port()
    daphne = Path(sys.executable).with_name("daphne")
    ARTIFACTS.mkdir(exist_ok=True)
    log = (ARTIFACTS / "daphne.log").open("wb")
    server = subprocess.Popen(
        [str(daphne), "-b", "127.0.0.1", "-p", str(port), "project.asgi:application"],
        cwd=ROOT,
        env={**subprocess_env, "PIPELINE_APP_TEST_CONFIG": '{"EMBEDDED_WORKER": true}'},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if server.poll() is not None:
                    output = (ARTIFACTS / "daphne.log").read_text(errors="replace")
                    pytest.fail(f"daphne exited: {output}")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture
def page(
    live_server_url: str, django_user_model: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    _require_chromium()
    # Playwright's sync API keeps an event loop in this thread; the ORM calls of the test are
    # still plain synchronous calls.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    django_user_model.objects.create_superuser("browser", "b@example.com", PASSWORD)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        tab = context.new_page()
        tab.set_default_timeout(15_000)
        tab.goto(f"{live_server_url}/pipelines/")
        tab.fill("#id_username", "browser")
        tab.fill("#id_password", PASSWORD)
        tab.click("main button[type=submit]")
        tab.wait_for_url(f"{live_server_url}/pipelines/")
        try:
            yield tab
        finally:
            context.close()
            browser.close()


@pytest.fixture
def blank_page() -> Iterator[Any]:
    """A tab without a server, for markup rendered in the test."""
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            browser.close()


def _start_bottleneck(page: Any, base: str, count: int) -> int:
    definition = PipelineDefinition.objects.get(name="demo-bottleneck")
    page.goto(f"{base}{definition.get_absolute_url()}")
    page.fill(f"#id_run-{definition.slug}-source__count", str(count))
    page.click("button:has-text('Run demo-bottleneck')")
    page.wait_for_url(re.compile(r".*/pipelines/runs/\d+/$"))
    return int(page.url.rstrip("/").rsplit("/", 1)[1])


def test_start_watch_progress_live_and_see_the_finished_run(
    page: Any, live_server_url: str
) -> None:
    run_id = _start_bottleneck(page, live_server_url, count=300)
    page.evaluate("window.__notReloaded = true")  # gone if the page reloads
    bar = page.locator("[role=progressbar]")
    # Needs the embedded worker: the run must start and report progress over the WebSocket.
    seen: list[float] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(set(seen)) < 3:
        if not page.evaluate("window.__notReloaded === true"):
            break  # finished and reloaded: too fast to watch, checked below
        value = bar.get_attribute("aria-valuenow") if bar.count() else None
        if value is not None and (not seen or float(value) != seen[-1]):
            seen.append(float(value))
        time.sleep(0.1)
    state = PipelineRun.objects.filter(pk=run_id).values("status", "items_out", "progress").get()
    assert len(set(seen)) >= 3 and seen == sorted(seen), f"no progress seen: {seen}, {state}"
    _assert_cards_follow_the_progress_line(page, expected=300)
    page.screenshot(path=str(ARTIFACTS / "run-detail-running.png"), full_page=True)

    page.wait_for_selector(".badge.status-succeeded", timeout=30_000)
    page.wait_for_selector("#chart-waterfall svg[role=img]", timeout=10_000)
    run = PipelineRun.objects.get(pk=run_id)
    assert run.status == RunStatus.SUCCEEDED
    bottleneck = StageStat.objects.get(run=run, is_bottleneck=True)
    assert bottleneck.stage.startswith("slow-step")
    row = page.locator("tr.bottleneck")
    assert "slow-step" in row.inner_text() and "Bottleneck" in row.inner_text()
    for chart in ("#chart-split", "#chart-histogram", "#chart-waterfall"):
        assert page.locator(f"{chart} svg rect").count() > 3
    _assert_chart_labels_are_plain_and_inside(page)
    _assert_charts_fit_their_column(page)
    page.screenshot(path=str(ARTIFACTS / "run-detail-finished.png"), full_page=True)
    page.set_viewport_size({"width": 375, "height": 812})
    _assert_chart_text_readable_without_widening_the_page(page, "#chart-histogram svg")
    page.screenshot(path=str(ARTIFACTS / "run-detail-phone.png"), full_page=True)

    # the pipeline's first finished run: its trend charts show it
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{live_server_url}{run.definition.get_absolute_url()}")
    trends = page.locator("section[aria-labelledby=trends]")
    assert "latency of the last run" in trends.locator("figcaption").first.inner_text()
    for chart in trends.locator("svg").all():
        drawn = chart.evaluate(
            "svg => Array.from(svg.querySelectorAll('circle.dot'))"
            ".filter(c => c.getBoundingClientRect().width > 0).length"
        )
        assert drawn >= 1, chart.inner_html()
    _assert_chart_labels_are_plain_and_inside(page)
    _assert_charts_fit_their_column(page)
    page.set_viewport_size({"width": 375, "height": 812})
    _assert_chart_text_readable_without_widening_the_page(
        page, "section[aria-labelledby=trends] svg"
    )
    page.screenshot(path=str(ARTIFACTS / "pipeline-detail-phone.png"), full_page=True)


def _assert_cards_follow_the_progress_line(page: Any, expected: int) -> None:
    """While the run runs, the summary cards show what the progress line shows (read in one
    script turn: live.js updates both from the same message)."""
    live = page.evaluate(
        """() => ({
          reloaded: window.__notReloaded !== true,
          out: document.querySelector('.pa-progress [data-live-field=items_out]').textContent,
          cards: Object.fromEntries(Array.from(document.querySelectorAll('.pa-card.stat'))
            .map(card => [card.querySelector('dt').textContent,
                          card.querySelector('dd').textContent]))
        })"""
    )
    assert not live["reloaded"], "the run finished before the cards could be read"
    cards = live["cards"]
    assert re.fullmatch(rf"[\d,]+ of {expected:,} in · {live['out']} out", cards["Items"]), cards
    assert re.fullmatch(r"[\d,]+\.\d items/s current", cards["Throughput"]), cards
    assert re.fullmatch(r"[\d.,]+ (ms|s) so far", cards["Duration"]), cards
    assert re.fullmatch(r"[\d.,]+ (µs|ms|s)", cards["Queue wait"]), cards
    assert cards["p95 latency"] == "\u2013 when finished", cards


def _assert_chart_labels_are_plain_and_inside(page: Any) -> None:
    ticks = page.locator(".pa-chart text.tick").all_text_contents()
    assert ticks and not [t for t in ticks if re.search(r"\de[+-]?\d", t)], ticks
    clipped = page.evaluate(
        "() => Array.from(document.querySelectorAll('.pa-chart text'))"
        ".filter(t => t.getBBox().x < 0).map(t => t.textContent)"
    )
    assert not clipped, clipped


def _assert_charts_fit_their_column(page: Any) -> None:
    """On a desktop the charts scale to their column: no scroll bar."""
    overflowing = page.evaluate(
        "() => Array.from(document.querySelectorAll('.chart-wrap'))"
        ".filter(w => w.scrollWidth > w.clientWidth + 1).length"
    )
    assert overflowing == 0


def _assert_chart_text_readable_without_widening_the_page(page: Any, chart: str) -> None:
    heights = page.locator(chart).first.evaluate(
        "svg => Array.from(svg.querySelectorAll('text')).map(t => t.getBoundingClientRect().height)"
    )
    assert min(heights) >= 8, f"chart text {min(heights):.1f} px tall at 375 px"
    # the chart scrolls inside its figure; the page keeps to the screen
    assert page.evaluate("document.documentElement.scrollWidth") <= 375


def test_long_stage_names_fit_the_split_chart_as_the_browser_draws_them(
    blank_page: Any,
) -> None:
    """The label column is sized from an estimate of the text width: check it against the font
    chromium really uses."""
    from pipeline_app import charts

    names = ["test-fail-every", "wwwwwwwwwwwwwwwwwwww", "stage-" + "x" * 60]
    markup = charts.stage_split_chart(
        [charts.StageSplit(name, 0.001, 0.002, 0.0, index == 0) for index, name in enumerate(names)]
    )
    stylesheet = (ROOT / "pipeline_app/static/pipeline_app/dashboard.css").read_text()
    blank_page.set_content(f"<style>{stylesheet}</style><main class='pa-main'>{markup}</main>")
    boxes = blank_page.evaluate(
        "() => Array.from(document.querySelectorAll('text.label'))"
        ".map(t => [t.textContent, t.getBBox().x])"
    )
    assert len(boxes) == 3 and not [text for text, x in boxes if x < 0], boxes


def test_cancel_a_running_run_from_its_page(page: Any, live_server_url: str) -> None:
    run_id = _start_bottleneck(page, live_server_url, count=5000)
    page.wait_for_selector(".badge.status-running", timeout=15_000)
    page.click("button:has-text('Cancel run')")
    page.wait_for_selector(".badge.status-cancelled", timeout=15_000)
    assert PipelineRun.objects.get(pk=run_id).status == RunStatus.CANCELLED
    page.screenshot(path=str(ARTIFACTS / "run-detail-cancelled.png"), full_page=True)
