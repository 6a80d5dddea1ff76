"""The live page in a real browser (headless Chromium driven by Playwright): type a German
sentence, wait for the translation, the attention heatmap and the gate plots, and check each
against the API's answer for the same request; screenshots go to the test's tmp folder."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'lstm-mt[serve]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install playwright")

from lstm_mt.serve.local import LocalServer  # noqa: E402

CHROMIUM = os.environ.get("LSTM_MT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# What the page asks for (static/app.js): beam and n-best as selected, 16 units per gate.
PAGE_REQUEST = {"beam_size": 5, "nbest": 3, "attention": True, "gates": True, "gate_units": 16}

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium here: apt-get install chromium (scripts/setup.sh does where apt works)"
)


def api_answer(url: str, sentence: str) -> dict:
    body = json.dumps({"sentences": [sentence], **PAGE_REQUEST}).encode()
    request = urllib.request.Request(url + "v1/translate", body, {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)["translations"][0]


def cell_values(page, selector: str, rows: int, cols: int) -> np.ndarray:
    """The data-value of the heatmap cells under ``selector`` as a [rows, cols] array."""
    cells = page.eval_on_selector_all(
        f"{selector} rect.cell", "cells => cells.map(c => [+c.dataset.row, +c.dataset.col, +c.dataset.value])"
    )
    assert len(cells) == rows * cols
    values = np.full((rows, cols), np.nan)
    for row, col, value in cells:
        values[row, col] = value
    return values


def test_page_translates_as_you_type_and_draws_attention_and_gates(tiny_checkpoint, tmp_path):
    sentence = tiny_checkpoint.training_sources[0]
    with LocalServer(tiny_checkpoint.path, "log_level=warning") as server, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: message.type == "error" and errors.append(message.text))
        page.goto(server.url)
        page.wait_for_function("document.getElementById('model-info').textContent.includes('de → en')")
        page.type("#source", sentence, delay=10)  # key by key: the page asks again as the text grows
        page.wait_for_function("text => document.body.dataset.translated === text", arg=sentence, timeout=60_000)
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

        answer = api_answer(server.url, sentence)
        assert page.inner_text("#translation") == answer["text"]
        shown = page.eval_on_selector_all(
            "#nbest li", "items => items.map(i => [i.querySelector('.text').textContent, +i.dataset.score])"
        )
        assert [text for text, _ in shown] == [c["text"] for c in answer["nbest"]]
        assert [score for _, score in shown] == pytest.approx([c["score"] for c in answer["nbest"]])

        target, source = answer["target_pieces"], answer["source_pieces"]
        np.testing.assert_allclose(cell_values(page, "#attention-map", len(target), len(source)), answer["attention"])
        assert page.eval_on_selector_all("#attention-map .row-label", "ls => ls.map(l => l.textContent)") == target

        for layer in answer["gates"]:  # every layer's button shows that layer's gates
            page.click(f"#layer-buttons button[data-layer='{layer['name']}']")
            steps = source if layer["side"] == "encoder" else target
            for key in ("i", "f", "o"):
                shown_gate = cell_values(page, f"#gates svg[data-gate='{key}']", len(layer[key]["units"]), len(steps))
                np.testing.assert_allclose(
                    shown_gate, np.array(layer[key]["values"]).T, err_msg=f"{layer['name']}.{key}"
                )
        norms = page.eval_on_selector_all(
            "#cell-norm polyline", "lines => lines.map(l => [l.dataset.layer, JSON.parse(l.dataset.values)])"
        )
        assert dict(norms) == {layer["name"]: layer["c_norm"] for layer in answer["gates"]}

        page.set_viewport_size({"width": 390, "height": 844})  # a phone
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, "the page scrolls sideways on a phone"
        page.screenshot(path=str(tmp_path / "page-phone.png"), full_page=True)
        browser.close()
    assert errors == []
