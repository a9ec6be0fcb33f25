"""The /inspect page in a real headless Chromium (Debian's chromium + chromium-driver,
driven by selenium) against the real server: upload the demo clip through the page, ask
its question, run sharp, fastv and uniform side by side, and check what the page drew
against the indices the server returned (and against the same request made with the
openai client)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from proxy_videoqa.clips import make_clip
from proxy_videoqa.held_out import HELD_OUT_SEED

from ..media import write_mp4
from .test_server_e2e import MODEL

pytestmark = pytest.mark.engine

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
METHODS = ("sharp", "fastv", "uniform")  # the page's default choice
RETENTION = 0.25
RUN_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for tool in (CHROMIUM, CHROMEDRIVER):
        # A failure, not a skip: CI installs both (scripts/install_browser.sh).
        assert shutil.which(tool), f"{tool} is missing: run scripts/install_browser.sh"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--disable-quic", "--window-size=1500,1300",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def demo_clip(tmp_path_factory):
    """A held-out proxy clip (the default model's task) as an 8 s H.264 mp4."""
    clip = make_clip(HELD_OUT_SEED, "single", "standard")
    path = tmp_path_factory.mktemp("demo") / "demo-clip.mp4"
    write_mp4(path, np.repeat(clip.frames, 4, axis=0), fps=8)
    return clip, path


def test_the_page_draws_what_each_method_kept(server, browser, demo_clip):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    clip, path = demo_clip
    wait = WebDriverWait(browser, RUN_TIMEOUT_S)
    browser.get(f"{server.base_url}/inspect")
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "connected"))
    assert browser.find_element(By.ID, "model").get_attribute("value") == MODEL

    browser.find_element(By.ID, "upload").send_keys(str(path))
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "uploaded"))
    file_id = browser.find_element(By.ID, "file").get_attribute("value")
    assert file_id.startswith("file-")
    question = browser.find_element(By.ID, "question")
    question.clear()
    question.send_keys(clip.question)
    retention = browser.find_element(By.ID, "retention")
    retention.clear()
    retention.send_keys(str(RETENTION))
    browser.find_element(By.ID, "run").click()
    wait.until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("done", "failed")
    )
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done", (
        browser.find_element(By.ID, "error").text
    )

    sections = browser.find_elements(By.CSS_SELECTOR, "section.result")
    assert [s.get_attribute("data-method") for s in sections] == list(METHODS)
    drawn = {}
    for section in sections:
        method = section.get_attribute("data-method")
        report = json.loads(section.find_element(By.CSS_SELECTOR, "pre.report").get_attribute("textContent"))
        selection = report["videos"][0]["selection"]
        groups, rows, columns = selection["token_grid"]
        kept = selection["kept_indices"]
        assert (report["method"], report["retention"]) == (method, RETENTION)
        assert len(kept) == report["video_tokens_kept"] < report["video_tokens"] == groups * rows * columns

        # The overlay: one cell per token, kept ones exactly the returned indices.
        cells = section.find_elements(By.CSS_SELECTOR, ".cell")
        assert len(cells) == groups * rows * columns
        kept_cells = [int(c.get_attribute("data-index")) for c in cells if "kept" in c.get_attribute("class")]
        assert kept_cells == kept
        # Per-frame kept counts agree with the cells in each tile.
        tiles = section.find_elements(By.CSS_SELECTOR, ".tile")
        assert len(tiles) == groups
        counts = [int(t.find_element(By.CSS_SELECTOR, ".kept-count").text) for t in tiles]
        per_group = np.bincount(np.array(kept) // (rows * columns), minlength=groups).tolist()
        assert counts == per_group
        # Drawn where the token is: cell (row, column) of its frame, pruned ones dimmed.
        _check_geometry(browser, tiles, rows, columns)
        drawn[method] = (kept, section.find_element(By.CSS_SELECTOR, ".answer").text)

    # The page sent what it says: the openai client, same request, same selection.
    client = server.client()
    for method, (kept, answer) in drawn.items():
        response = client.chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "file", "file": {"file_id": file_id}},
                        {"type": "text", "text": clip.question},
                    ],
                }
            ],
            max_tokens=32,
            temperature=0.0,
            extra_body={"sharp": {"method": method, "retention": RETENTION, "return_selection": True}},
        )
        assert response.model_extra["sharp"]["videos"][0]["selection"]["kept_indices"] == kept
        assert response.choices[0].message.content == answer
    # The needle (the token the answer hangs on) is among what sharp kept.
    assert set(clip.needle_tokens) <= set(drawn["sharp"][0])

    screenshot = Path(os.environ.get("SHARP_INSPECT_SCREENSHOT", server.log.parent / "inspect.png"))
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000


def _check_geometry(browser, tiles, rows: int, columns: int) -> None:
    from selenium.webdriver.common.by import By

    tile = tiles[0]
    image = tile.find_element(By.TAG_NAME, "img")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 0
    box = image.rect
    cells = tile.find_elements(By.CSS_SELECTOR, ".cell")
    for cell in (cells[0], cells[columns + 1], cells[-1]):
        offset = cells.index(cell)
        row, column = divmod(offset, columns)
        assert cell.rect["x"] == pytest.approx(box["x"] + column * box["width"] / columns, abs=1.5)
        assert cell.rect["y"] == pytest.approx(box["y"] + row * box["height"] / rows, abs=1.5)
        shade = browser.execute_script("return getComputedStyle(arguments[0]).backgroundColor", cell)
        dimmed = "kept" not in cell.get_attribute("class")
        assert (shade != "rgba(0, 0, 0, 0)") == dimmed
