"""The playground page in a real headless Chromium against a real service (uvicorn subprocess, tiny models).

Every expectation comes from the service itself: the test sends the page's request to /compare on its
own and checks that the page shows what that JSON says.
"""

from __future__ import annotations

import json
import re
import threading

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from bench import playground
from bench.playground import PAGE, set_viewport, submit
from tests.playground.conftest import API_KEY

pytestmark = pytest.mark.slow  # a service subprocess and a browser

TEXTS = ["the movie was great and i loved it", "the plot was terrible"]


def open_page(driver, url: str, path: str = "/") -> None:
    playground.open_page(driver, url + path)


def console(driver) -> list[dict]:
    """Console entries since the last call (chromedriver hands each entry out once)."""
    return driver.get_log("browser")


def network(driver, event: str, field: str) -> list[dict]:
    """Chromium's own network log (CDP events) since the last call: ``field`` of each ``event``."""
    out = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == event:
            x = msg["params"][field]
            out.append({**x, "headers": {k.lower(): v for k, v in x["headers"].items()}})
    return out


def requests_sent(driver) -> list[dict]:
    return network(driver, "Network.requestWillBeSent", "request")


def responses(driver) -> list[dict]:
    return network(driver, "Network.responseReceived", "response")


def only_http_errors(entries: list[dict], status: int) -> None:
    """Chromium logs every 4xx fetch as a console error ("Failed to load resource"); a test that provokes
    one expects exactly those and nothing else (no script error, no other status)."""
    for e in entries:
        if e["level"] in ("SEVERE", "WARNING"):
            assert e["source"] == "network" and f"status of {status}" in e["message"], entries


def test_page_is_one_small_offline_file():
    html = PAGE.read_text()
    assert PAGE.stat().st_size <= 50 * 1024
    assert "://" not in html  # no external URL, not even a font or an icon
    assert "<script src" not in html and 'rel="stylesheet"' not in html


def test_loads_without_console_errors_or_other_origins(url, browser):
    console(browser)
    requests_sent(browser)
    open_page(browser, url)
    submit(browser, TEXTS)
    WebDriverWait(browser, 10).until(lambda d: "n=0" not in d.find_element(By.ID, "live").text)
    # The sparklines are drawn: some canvas pixels are no longer transparent.
    inked = browser.execute_script(
        "return [...document.querySelectorAll('#live canvas')].map(c => c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data.filter((v, i) => i % 4 == 3 && v > 0).length)")
    assert len(inked) == 2 and all(n > 0 for n in inked), inked
    assert console(browser) == []
    sent = [r["url"] for r in requests_sent(browser)]
    assert f"{url}/" in sent and f"{url}/info" in sent and f"{url}/compare" in sent
    assert all(u.startswith(url + "/") or u.startswith("data:") for u in sent), sent
    # The browser's own record agrees (resource timing: everything the page fetched).
    fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert fetched and all(u.startswith(url + "/") for u in fetched), fetched


def test_also_served_at_playground(url, browser):
    console(browser)
    open_page(browser, url, "/playground")
    submit(browser, TEXTS[:1])
    assert browser.find_elements(By.CSS_SELECTOR, ".pred[data-model=student]")
    assert console(browser) == []


def test_two_sentences_show_what_compare_returns(url, browser):
    open_page(browser, url)
    requests_sent(browser)
    submit(browser, TEXTS)
    assert [r["url"] for r in requests_sent(browser) if r["url"].endswith("/compare")] == [f"{url}/compare"]
    want = httpx.post(f"{url}/compare", json={"inputs": TEXTS, "task": "classify"}, timeout=30).json()
    info = {m["name"]: m for m in httpx.get(f"{url}/info", timeout=10).json()["models"]}
    for role in ("teacher", "student"):
        card = browser.find_element(By.CSS_SELECTOR, f"[data-card={role}]")
        name = want[role]["model"]
        assert card.find_element(By.TAG_NAME, "h2").text == name
        assert f"layers {info[name]['layers']}" in card.text.replace("\n", " ")
        for i in range(len(TEXTS)):
            preds = want[role]["predictions"][i]
            box = browser.find_element(By.CSS_SELECTOR, f".pred[data-model={role}][data-input='{i}']")
            assert box.find_element(By.CLASS_NAME, "top").text == preds[0]["label"]
            bars = box.find_elements(By.CLASS_NAME, "bar")
            assert [b.get_attribute("data-label") for b in bars] == [p["label"] for p in preds]
            for bar, p in zip(bars, preds, strict=True):
                assert float(bar.get_attribute("data-score")) == pytest.approx(p["score"], abs=1e-6)
                assert bar.text.split()[-1] == f"{p['score']:.3f}"
    agree = [e.get_attribute("data-agree") == "true" for e in browser.find_elements(By.CSS_SELECTOR, "[data-agree]")]
    pairs = zip(want["teacher"]["predictions"], want["student"]["predictions"], strict=True)
    assert agree == [t[0]["label"] == s[0]["label"] for t, s in pairs]
    assert browser.find_element(By.ID, "speedup").text.endswith("×")


def test_embed_shows_cosines(url, browser):
    open_page(browser, url)
    submit(browser, TEXTS, task="embed")
    want = httpx.post(f"{url}/compare", json={"inputs": TEXTS, "task": "embed"}, timeout=30).json()
    shown = browser.find_elements(By.CSS_SELECTOR, "[data-cosine]")
    assert [float(e.get_attribute("data-cosine")) for e in shown] == pytest.approx(want["cosine"], abs=1e-6)
    assert [e.text for e in shown] == [f"cos {c:.3f}" for c in want["cosine"]]
    dims = {e.get_attribute("data-dim") for e in browser.find_elements(By.CSS_SELECTOR, "[data-dim]")}
    assert dims == {str(len(want["student"]["embeddings"][0]))}
    assert f"mean cosine {want['mean_cosine']:.3f}" in browser.find_element(By.ID, "summary").text


def test_pairs_show_what_compare_returns_for_sentence_pairs(url, browser):
    open_page(browser, url)
    console(browser)
    lines = ["the movie was great || i loved it", "the plot was terrible"]
    submit(browser, lines, task="pairs")
    inputs = [["the movie was great", "i loved it"], "the plot was terrible"]
    want = httpx.post(f"{url}/compare", json={"inputs": inputs, "task": "classify"}, timeout=30).json()
    for role in ("teacher", "student"):
        for i, preds in enumerate(want[role]["predictions"]):
            box = browser.find_element(By.CSS_SELECTOR, f".pred[data-model={role}][data-input='{i}']")
            assert box.find_element(By.CLASS_NAME, "top").text == preds[0]["label"]
            scores = [float(b.get_attribute("data-score")) for b in box.find_elements(By.CLASS_NAME, "bar")]
            assert scores == pytest.approx([p["score"] for p in preds], abs=1e-6)
    shown = [e.text for e in browser.find_elements(By.CLASS_NAME, "input")]
    assert shown[0] == "the movie was great ‖ i loved it" and shown[1] == "the plot was terrible"
    assert console(browser) == []


def test_rerank_shows_each_models_ranks_and_their_agreement(url, browser):
    open_page(browser, url)
    console(browser)
    texts = ["the movie was great", "stocks fell today", "the plot was terrible", "i loved it"]
    browser.find_element(By.CSS_SELECTOR, "input[name=task][value=rerank]").click()
    query = browser.find_element(By.ID, "query")
    assert query.is_displayed()
    query.clear()
    query.send_keys("a good film")
    submit(browser, texts, task="rerank")
    want = httpx.post(f"{url}/compare", json={"inputs": texts, "task": "rerank", "query": "a good film", "top_n": 3},
                      timeout=30).json()
    for role in ("teacher", "student"):
        ranks = {r["index"]: k + 1 for k, r in enumerate(want[role]["ranking"])}
        for i in range(len(texts)):
            box = browser.find_element(By.CSS_SELECTOR, f".pred[data-model={role}][data-input='{i}']")
            assert int(box.get_attribute("data-rank")) == ranks[i]
            assert box.find_element(By.CLASS_NAME, "top").text == f"#{ranks[i]}"
    summary = browser.find_element(By.ID, "summary").text
    overlap = round(want["top_n_overlap"] * 3)
    assert f"top-3 overlap {overlap}/3" in summary and f"Spearman {want['spearman']:.3f}" in summary, summary
    assert console(browser) == []
    browser.find_element(By.CSS_SELECTOR, "input[name=task][value=classify]").click()
    assert not browser.find_element(By.ID, "query").is_displayed()


def test_empty_input_shows_the_services_422(url, browser):
    open_page(browser, url)
    console(browser)
    submit(browser, [])
    r = httpx.post(f"{url}/compare", json={"inputs": [], "task": "classify"}, timeout=10)
    assert r.status_code == 422
    error = browser.find_element(By.ID, "error")
    assert error.text == f"422 validation: {r.json()['error']}"
    assert error.get_attribute("role") == "alert"
    only_http_errors(console(browser), 422)


def test_429_shows_the_services_retry_after(crowded_url, browser):
    """A real 429: clients keep the student's one-input queue full while the page submits."""
    long_text = " ".join(["the movie was great but the plot"] * 60)  # about 420 tokens
    stop = threading.Event()

    def crowd() -> None:
        with httpx.Client(base_url=crowded_url, timeout=30) as client:
            while not stop.is_set():
                client.post("/classify", json={"inputs": long_text, "model": "student"})

    threads = [threading.Thread(target=crowd) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        open_page(browser, crowded_url)
        console(browser)
        requests_sent(browser)
        for _ in range(40):  # each try finds the queue full unless it lands between two requests
            submit(browser, ["the plot was terrible"])
            error = browser.find_element(By.ID, "error")
            if error.is_displayed() and error.text.startswith("429"):
                break
        else:
            raise AssertionError("no 429 in 40 tries")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    answered = [r for r in responses(browser) if r["url"].endswith("/compare") and r["status"] == 429]
    retry_after = answered[-1]["headers"]["retry-after"]
    assert re.fullmatch(rf"429 overloaded: .*queue is full.* \(retry after {retry_after} s\)", error.text), error.text
    only_http_errors(console(browser), 429)


def test_api_key_field_appears_and_requests_carry_it(keyed_url, browser):
    console(browser)
    requests_sent(browser)
    open_page(browser, keyed_url)
    key_box = browser.find_element(By.ID, "keybox")
    WebDriverWait(browser, 10).until(lambda d: key_box.is_displayed())
    key = browser.find_element(By.ID, "apikey")
    assert [lb.text for lb in browser.execute_script("return arguments[0].labels", key)] == ["API key"]
    key.send_keys(API_KEY)
    submit(browser, TEXTS)
    assert browser.find_elements(By.CSS_SELECTOR, ".pred"), browser.find_element(By.ID, "error").text
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "version").text.endswith("ready"))
    sent = requests_sent(browser)
    api = [r for r in sent if r["url"].endswith(("/compare", "/info"))]
    assert {r["url"].rsplit("/", 1)[1] for r in api} == {"compare", "info"}
    keyed = [r for r in api if r["headers"].get("authorization") == f"Bearer {API_KEY}"]
    first = api.index(keyed[0])
    assert all(r in keyed for r in api[first:])  # every request once the key was typed
    assert any(r["url"].endswith("/compare") for r in keyed)
    only_http_errors(console(browser), 401)  # the first /info, before the key


def test_every_control_is_labelled_and_ctrl_enter_submits(url, browser):
    open_page(browser, url)
    unlabelled = browser.execute_script(
        "return [...document.querySelectorAll('input, textarea, select')].filter(e => !e.labels.length)"
        ".map(e => e.id || e.name)")
    assert unlabelled == []
    submit(browser, TEXTS)  # submit() presses Ctrl+Enter in the text area
    assert len(browser.find_elements(By.CSS_SELECTOR, ".pred")) == 2 * len(TEXTS)


def test_phone_width(url, browser):
    set_viewport(browser, 375, 800)
    try:
        open_page(browser, url)
        submit(browser, TEXTS)
        width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width == [375, 375]
        right = browser.execute_script(
            "return Math.max(...[...document.querySelectorAll('.card, .pred, .mid, button, textarea, #live')]"
            ".map(e => e.getBoundingClientRect().right))")
        assert right <= 375
        assert len(browser.find_elements(By.CSS_SELECTOR, ".pred")) == 2 * len(TEXTS)
    finally:
        set_viewport(browser, 1280, 800)


def test_compare_reports_server_timings_and_feeds_the_live_window(url):
    """What the page shows beside each model (queue, inference) and in its live strip (p50/p95, sparkline)."""
    before = {m["name"]: m["latency"]["count"] for m in httpx.get(f"{url}/info", timeout=10).json()["models"]}
    r = httpx.post(f"{url}/compare", json={"inputs": TEXTS, "task": "classify"}, timeout=30).json()
    for role in ("teacher", "student"):
        out = r[role]
        assert 0 < out["inference_ms"] <= out["latency_ms"] and out["queue_ms"] >= 0
        assert 0 <= out["tokenization_ms"] <= out["latency_ms"]
    live = {m["name"]: m["latency"] for m in httpx.get(f"{url}/info", timeout=10).json()["models"]}
    for role in ("teacher", "student"):
        name = r[role]["model"]
        assert live[name]["count"] == before[name] + 1
        assert live[name]["recent_ms"][-1] >= r[role]["inference_ms"]  # the model's part of the request
        assert len(live[name]["recent_ms"]) == min(live[name]["count"], 60)


def test_page_needs_no_key(keyed_url):
    for path in ("/", "/playground"):
        r = httpx.get(keyed_url + path, timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert r.content == PAGE.read_bytes()
    assert httpx.get(f"{keyed_url}/info", timeout=10).status_code == 401


def test_page_is_not_in_the_schema(url):
    paths = httpx.get(f"{url}/openapi.json", timeout=10).json()["paths"]
    assert "/" not in paths and "/playground" not in paths and "/compare" in paths
