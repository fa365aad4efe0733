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
    page.screenshot(path=str(ARTIFACTS / "run-detail-finished.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(ARTIFACTS / "run-detail-phone.png"), full_page=True)


def test_cancel_a_running_run_from_its_page(page: Any, live_server_url: str) -> None:
    run_id = _start_bottleneck(page, live_server_url, count=5000)
    page.wait_for_selector(".badge.status-running", timeout=15_000)
    page.click("button:has-text('Cancel run')")
    page.wait_for_selector(".badge.status-cancelled", timeout=15_000)
    assert PipelineRun.objects.get(pk=run_id).status == RunStatus.CANCELLED
    page.screenshot(path=str(ARTIFACTS / "run-detail-cancelled.png"), full_page=True)
