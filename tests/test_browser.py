"""The play page in a real browser: Debian's Chromium driven by Playwright (never a downloaded one).

Starts the server on a free loopback port with the FakeWorld, holds keys and checks that frames
arrive and change, that the FPS counter counts, that an uploaded image becomes the prompt, that
a recording downloads as a GIF, that a tab beyond --max-sessions sees "busy", and saves a
screenshot (set PLAYWORLD_SCREENSHOT=path.png to keep a copy).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from fake_world import FakeWorld, write_sample_prompts
from PIL import Image

from playworld.serve.app import create_app
from playworld.serve.server import BackgroundServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium: apt-get install -y chromium"),
    pytest.mark.timeout(180),
]

CANVAS_SUM = """() => {
  const c = document.getElementById('screen');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let s = 0; for (let i = 0; i < d.length; i++) s = (s * 31 + d[i]) % 1000000007;
  return s;
}"""
CANVAS_MEAN_RGB = """() => {
  const c = document.getElementById('screen');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const m = [0, 0, 0]; for (let i = 0; i < d.length; i += 4) { m[0] += d[i]; m[1] += d[i + 1]; m[2] += d[i + 2]; }
  return m.map((v) => v / (d.length / 4));
}"""


def frames(page) -> int:
    return page.evaluate("window.playworld.state.frames")


def wait_until(page, js: str, timeout: float = 10.0) -> None:
    """Poll ``js`` (an expression) until truthy; page.wait_for_function needs eval, which our CSP forbids."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(f"() => Boolean({js})"):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {js}")
        time.sleep(0.03)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    write_sample_prompts(root / "prompts", n=4)
    world = FakeWorld(prompts_dir=root / "prompts", step_s=0.005)
    with BackgroundServer(create_app(world, max_sessions=2, fps_cap=30)) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_play_page_in_chromium(server, browser, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    page.on(
        "response",
        lambda r: problems.append(f"{r.status} {r.request.method} {r.url}") if r.status >= 400 else None,
    )
    page.goto(server.url)

    # the world is drawn and the action pad is labelled with the world's labels and keys
    wait_until(page, "window.playworld.state.frames >= 1", 15)
    buttons = page.locator(".action")
    assert buttons.count() == 8
    left = page.locator('.action[data-action="0"]')
    assert "moves left" in left.inner_text() and "←" in left.inner_text()
    assert "←" not in page.locator('.action[data-action="5"]').inner_text()  # "up-left" is not ArrowLeft
    assert page.locator(".prompt").count() == 4
    assert page.locator("#status-text").inner_text() == "live"

    # a faster decoding setting reaches this tab's world fork
    page.select_option("#maskgit", "4")
    deadline = time.monotonic() + 5
    while [x.world.maskgit_steps for x in server.app.state.sessions.values()] != [4]:
        assert time.monotonic() < deadline, "maskgit_steps setting did not arrive"
        time.sleep(0.05)

    # idle: pause, so nothing moves until a key is held
    page.select_option("#idle", "pause")
    time.sleep(0.3)
    before, sum_before = frames(page), page.evaluate(CANVAS_SUM)
    time.sleep(0.3)
    assert frames(page) == before

    # hold ArrowRight: frames keep coming at up to the cap, and the picture changes
    page.keyboard.down("ArrowRight")
    time.sleep(1.2)
    fps_text = page.locator("#fps-value").inner_text()
    page.keyboard.up("ArrowRight")
    held = frames(page) - before
    assert held >= 8, f"only {held} frames in 1.2 s of holding a key"
    assert float(fps_text) > 5, fps_text
    assert page.evaluate(CANVAS_SUM) != sum_before
    assert page.evaluate("window.playworld.state.lastAction") == 1  # "moves right"

    # a quick tap of a number key steps exactly that action at least once
    time.sleep(0.2)
    n = frames(page)
    page.keyboard.press("3")
    wait_until(page, f"window.playworld.state.frames > {n}", 5)
    assert page.evaluate("window.playworld.state.lastAction") == 2

    # idle: keep stepping "stays still" -> the world keeps running with no key held
    page.select_option("#idle", "4")
    n = frames(page)
    wait_until(page, f"window.playworld.state.frames > {n + 5}", 5)
    page.select_option("#idle", "pause")

    # upload an image prompt: the world restarts from it
    red = tmp_path / "red.png"
    Image.new("RGB", (120, 90), (230, 20, 30)).save(red)
    page.set_input_files("#upload", str(red))
    page.wait_for_selector('.prompt.selected[data-prompt^="upload:"]', timeout=10_000)
    wait_until(page, "window.playworld.state.seq === 0", 5)
    time.sleep(0.2)
    r, g, b = page.evaluate(CANVAS_MEAN_RGB)
    assert r > 150 and g < 80, (r, g, b)

    # a bad upload is refused with a visible message
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    page.set_input_files("#upload", str(bad))
    page.wait_for_selector("#toast:not([hidden]):not(.info)", timeout=5_000)
    assert "not an image" in page.locator("#toast").inner_text()

    # record a few frames and download them as a GIF
    page.click("#record")
    page.wait_for_selector('#record[aria-pressed="true"]')
    page.locator("#stage").focus()
    page.keyboard.down("d")
    time.sleep(0.5)
    page.keyboard.up("d")
    time.sleep(0.2)
    page.click("#record")
    page.wait_for_selector("#dl-gif:not([disabled])")
    with page.expect_download() as download:
        page.click("#dl-gif")
    gif = tmp_path / "recording.gif"
    download.value.save_as(gif)
    with Image.open(gif) as im:
        assert im.n_frames >= 5

    # back to a sample prompt, play a little, and take the screenshot
    page.click('.prompt[data-prompt="sample:1"]')
    wait_until(page, "window.playworld.state.seq === 0", 5)
    page.keyboard.down("ArrowUp")
    time.sleep(0.4)
    page.keyboard.up("ArrowUp")
    page.keyboard.down("ArrowLeft")
    time.sleep(0.4)
    page.keyboard.up("ArrowLeft")
    time.sleep(0.3)
    page.evaluate("() => window.scrollTo(0, 0)")  # clicks above may have scrolled the side panel
    shot = tmp_path / "play.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("PLAYWORLD_SCREENSHOT"):
        shutil.copy(shot, os.environ["PLAYWORLD_SCREENSHOT"])

    # a tab beyond --max-sessions (2) is told the server is busy
    second = context.new_page()
    second.goto(server.url)
    wait_until(second, "window.playworld.state.frames >= 1", 15)
    third = context.new_page()
    third.goto(server.url)
    third.wait_for_selector("#overlay:not([hidden])", timeout=10_000)
    assert "busy" in third.locator("#overlay").inner_text().lower()
    if os.environ.get("PLAYWORLD_SCREENSHOT"):
        third.screenshot(path=os.environ["PLAYWORLD_SCREENSHOT"].replace(".png", "-busy.png"))
    context.close()
    expected = ("400 POST", "console: Failed to load resource: the server responded with a status of 400")
    assert [p for p in problems if not p.startswith(expected)] == [], problems  # only the bad upload
