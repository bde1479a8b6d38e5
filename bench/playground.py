"""The playground page in a real headless Chromium: ``make screenshot``.

Starts the service (the models of ``make models`` when artifacts/ has them, else tiny random
ones), fills the page with a few sentences, submits, and writes a 1280×800 screenshot to
docs/playground.png, the page's weight and its first paint to docs/playground.json, and the
README's ``<!-- playground:start/end -->`` section. The tests drive the same browser (``chromium``).

Debian's chromium and chromium-driver (``make system-deps``); the driver's path is given, so
Selenium Manager never tries to download one (it could not: no network to its hosts).
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from lab.readme import write_section

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
PAGE = ROOT / "app" / "static" / "playground.html"
SAMPLE = ["A gorgeous, moving film with a wonderful cast.",
          "Tedious, predictable and far too long.",
          "The plot was fine but the actors were really not very good.",
          "I loved it!"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium(width: int = 1280, height: int = 800) -> WebDriver:
    """Headless Debian Chromium with a ``width``×``height`` CSS-pixel viewport; console and
    network events kept (``driver.get_log("browser")``, ``driver.get_log("performance")``)."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    # --no-sandbox: Chromium's sandbox refuses to run as root (CI containers);
    # background networking off: the browser itself has nobody to talk to here.
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update", "--no-first-run",
                "--hide-scrollbars", f"--window-size={width},{height}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=ChromeService(executable_path=str(CHROMEDRIVER)), options=opts)
    set_viewport(driver, width, height)
    return driver


def set_viewport(driver: WebDriver, width: int, height: int) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})


def open_page(driver: WebDriver, url: str) -> None:
    """Load the page and wait for its first /info: the version line reads "... ready", or the key
    field is shown after a 401."""
    driver.get(url)
    WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "version").text.endswith("ready")
                                    or d.find_element(By.ID, "keybox").is_displayed())


def submit(driver: WebDriver, texts: list[str], task: str = "classify") -> None:
    """Type the inputs, pick the task, press Ctrl+Enter, wait for results or an error."""
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.ID, "inputs")
    box.clear()
    box.send_keys("\n".join(texts))
    driver.find_element(By.CSS_SELECTOR, f"input[name=task][value={task}]").click()
    driver.execute_script("document.getElementById('results').replaceChildren()")
    box.send_keys(Keys.CONTROL, Keys.ENTER)
    WebDriverWait(driver, 30).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#results .pred") or d.find_element(By.ID, "error").is_displayed())


PAINT_JS = """
const nav = performance.getEntriesByType('navigation')[0];
const paint = Object.fromEntries(performance.getEntriesByType('paint').map(e => [e.name, e.startTime]));
return {response_end_ms: nav.responseEnd, transfer_bytes: nav.transferSize, body_bytes: nav.decodedBodySize,
        first_paint_ms: paint['first-paint'] ?? null,
        first_contentful_paint_ms: paint['first-contentful-paint'] ?? null};
"""


def page_timing(driver: WebDriver) -> dict:
    """Paint timing of the current page, and first paint counted from the HTML's last byte."""
    WebDriverWait(driver, 10).until(
        lambda d: d.execute_script("return performance.getEntriesByType('paint').length") > 0)
    t = driver.execute_script(PAINT_JS)
    t["first_paint_after_html_ms"] = t["first_paint_ms"] - t["response_end_ms"]
    return t


BLANK = (b'<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head>'
         b"<body><p>blank</p></body></html>")


@contextmanager
def blank_page() -> Iterator[str]:
    """A near-empty page on a local HTTP server: the browser's own floor for first paint."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(BLANK)))
            self.end_headers()
            self.wfile.write(BLANK)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


def measure_loads(driver: WebDriver, urls: dict[str, str], loads: int) -> dict:
    """Each page loaded ``loads`` times, alternating, so drift hits them alike; medians."""
    runs: dict[str, list[dict]] = {name: [] for name in urls}
    for _ in range(loads):
        for name, url in urls.items():
            driver.get(url)
            runs[name].append(page_timing(driver))
    out = {}
    for name, rs in runs.items():
        med = {k: round(statistics.median(r[k] for r in rs), 1)
               for k in ("first_paint_ms", "first_contentful_paint_ms", "first_paint_after_html_ms")}
        out[name] = {"loads": loads, "median": med, "transfer_bytes": rs[-1]["transfer_bytes"],
                     "body_bytes": rs[-1]["body_bytes"], "runs": rs}
    return out


def readme_section(res: dict) -> str:
    page, blank = res["timing"]["playground"], res["timing"]["blank"]
    fp, floor = page["median"]["first_paint_after_html_ms"], blank["median"]["first_paint_after_html_ms"]
    return (f"![The playground: teacher and student side by side]({res['screenshot']})\n\n"
            f"Open <http://127.0.0.1:8000/> once `make serve` runs: type sentences (one per line), press "
            f"Ctrl+Enter, and both models answer side by side, with a live p50/p95 strip per model. One HTML "
            f"file of {res['page_bytes'] / 1024:.1f} KB, no external URL. First paint {fp:.0f} ms after the HTML "
            f"arrived (a blank page in the same browser: {floor:.0f} ms; medians of {page['loads']} alternating "
            f"loads, headless Chromium {res['browser']}, {res['date']}). Screenshot with {res['models']}, "
            f"load average {res['load_average']:.1f} on {res['environment']['cores']} cores while it ran: its "
            "latencies are one request's, not a benchmark (see [Teacher vs student]"
            "(docs/benchmarks.md#teacher-vs-student) for those). `make screenshot` writes it and these numbers "
            f"({res['results']}).")


def _shown(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def _models(artifacts: Path, scratch: Path) -> tuple[Path, dict, str]:
    """The served models: make models' serve.json, else its student/teacher, else tiny random ones."""
    serve = artifacts / "serve.json"
    if serve.is_file():
        return artifacts, {"DISTIL_MODELS": json.dumps(json.loads(serve.read_text())["models"])}, \
            f"the models of `make models` ({serve})"
    if (artifacts / "student").is_dir() and (artifacts / "teacher").is_dir():
        return artifacts, {}, f"the models of `make models` ({artifacts})"
    from tests.fixtures import tiny_pair  # only without artifacts: random 2- and 4-layer models

    tiny_pair(scratch)
    return scratch, {}, "tiny random models (no artifacts/: run `make models` for real ones)"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "playground.png")
    p.add_argument("--results", type=Path, default=ROOT / "docs" / "playground.json")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    p.add_argument("--loads", type=int, default=9, help="page loads timed for the first paint")
    p.add_argument("--report-only", action="store_true", help="measure nothing: the README section from --results")
    args = p.parse_args(argv)
    if args.report_only:
        section = readme_section(json.loads(args.results.read_text()))
        write_section(args.readme, "playground", section)
        print(section)
        return
    from lab import environment
    from lab.server import start_server, stop_server, wait_ready  # the service's start and stop, as make bench

    with tempfile.TemporaryDirectory() as scratch:
        models_dir, env, which = _models(args.artifacts, Path(scratch))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(models_dir, port, env)
        try:
            wait_ready(url, proc)
            machine = environment.capture(httpx.get(f"{url}/info", timeout=10).json())
            # A few comparisons of each task first, so the live strip has latencies to draw for every model
            # (make models serves distinct classifier and embedder entries).
            for _ in range(12):
                for task in ("classify", "embed"):
                    httpx.post(f"{url}/compare", json={"inputs": SAMPLE, "task": task}, timeout=60)
            driver = chromium(1280, 800)
            try:
                with blank_page() as blank:
                    timing = measure_loads(driver, {"playground": f"{url}/", "blank": blank}, args.loads)
                open_page(driver, f"{url}/")
                submit(driver, SAMPLE)
                WebDriverWait(driver, 10).until(lambda d: "n=0" not in d.find_element(By.ID, "live").text)
                time.sleep(0.3)  # let the bars' layout settle before the capture
                args.out.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(args.out))
                browser = driver.capabilities.get("browserVersion", "?")
            finally:
                driver.quit()
        finally:
            stop_server(proc)
    res = {"command": "make screenshot", "date": time.strftime("%Y-%m-%d"), "environment": machine,
           "browser": browser, "models": which, "viewport": [1280, 800], "screenshot": _shown(args.out),
           "results": _shown(args.results), "page_bytes": PAGE.stat().st_size, "timing": timing,
           "load_average": os.getloadavg()[0]}  # other work on the machine shows in the screenshot's latencies
    args.results.write_text(json.dumps(res, indent=2) + "\n")
    section = readme_section(res)
    write_section(args.readme, "playground", section)
    print(section)


if __name__ == "__main__":
    main()
