"""The web book builds, and every chapter renders in headless Chromium with its pictures and no error.

The test builds book/ the way ``./kit book`` does (Jupyter Book 2 with the book's own theme, stored
outputs only, nothing executed; with no network at all when it may make a network namespace), serves
``book/_build/html`` from a local HTTP server on 127.0.0.1 that it starts and stops, and opens each
page in Debian's ``chromium`` through ``chromedriver`` (selenium). For every chapter it checks the
page's title against the notebook's, counts the pictures on the page against the notebook's stored
picture outputs and checks that each one was loaded and decoded, and reads the browser's console: no
error, no failed request.

It skips, saying what is missing, without jupyter-book (``./kit book`` installs it), Node.js,
selenium, or chromium and chromedriver (``apt-get install chromium chromium-driver``);
``.ci/run`` installs all of them and sets BRPC_MINI_REQUIRE_BOOK=1, which turns a skip into a
failure.
"""
from __future__ import annotations

import functools
import html.parser
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"
HTML = BOOK / "_build" / "html"
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# the chapters the seed's twelve steps run in, which the story page links
SEED_CHAPTERS = ["00_overview", "01_scheduler", "02_butex", "03_id", "04_channel_callmethod",
                 "05_issue_rpc", "06_response_path", "07_walkthrough"]
PICTURE_TYPES = ("image/svg+xml", "image/png", "image/jpeg", "image/gif")


def skip_or_fail(reason: str):
    if os.environ.get("BRPC_MINI_REQUIRE_BOOK"):
        pytest.fail(f"{reason} (BRPC_MINI_REQUIRE_BOOK is set)")
    pytest.skip(reason)


def notebook(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def plain(text: str) -> str:
    """A title as the page shows it: no Markdown backticks, straight quotes, single spaces."""
    text = text.replace("`", "").replace("\u2019", "'").replace("\u2018", "'")
    return re.sub(r"\s+", " ", text).strip()


def notebook_title(path: Path) -> str:
    for cell in notebook(path)["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return plain(line[2:])
    raise AssertionError(f"{path.name} has no '# title'")


def stored_pictures(path: Path) -> int:
    return sum(1 for cell in notebook(path)["cells"] for out in cell.get("outputs", [])
               if any(mime in out.get("data", {}) for mime in PICTURE_TYPES))


def offline(command: list[str]) -> list[str]:
    """``command`` in a network namespace of its own, with only loopback up, when this machine lets
    us make one (root, util-linux's unshare, iproute2's ip): the build then proves it needs nothing
    from the network. Elsewhere the command runs as it is."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if not unshare or not ip or os.geteuid() != 0:
        return command
    probe = subprocess.run([unshare, "-n", ip, "link", "set", "lo", "up"], capture_output=True)
    if probe.returncode != 0:
        return command
    return [unshare, "-n", "sh", "-c", f'{ip} link set lo up && exec "$@"', "offline", *command]


@pytest.fixture(scope="module")
def built_book():
    """Build the book once for this module, as ``./kit book`` does, and return its manifest."""
    if importlib.util.find_spec("jupyter_book") is None:
        skip_or_fail("jupyter-book is not installed: `./kit book` installs it (the `book` extra)")
    if shutil.which("node") is None:
        skip_or_fail("Node.js is missing: Jupyter Book 2 runs on it (apt-get install nodejs)")
    env = dict(os.environ)
    # the theme's render step runs `python3`: make it this interpreter's, and never let Jupyter
    # Book try to download a Node.js of its own
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["JB_ALLOW_NODEENV"] = "no"
    env.pop("BASE_URL", None)
    started = time.monotonic()
    command = offline([sys.executable, "-m", "jupyter_book", "build", "--html", "--strict", "--ci"])
    result = subprocess.run(command, cwd=BOOK, env=env, capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"the book did not build:\n{log[-6000:]}"
    assert "render.py:" not in log, f"the theme's renderer complained:\n{log[-3000:]}"
    manifest = json.loads((HTML / "book-manifest.json").read_text(encoding="utf-8"))
    where = "with no network" if command[0].endswith("unshare") else "with the machine's network"
    print(f"book built {where} in {time.monotonic() - started:.1f} s: {len(manifest)} pages")
    return manifest


@pytest.fixture(scope="module")
def server(built_book):
    """Serve book/_build/html on 127.0.0.1 (a free port) for the module's tests."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(HTML)))
    thread = threading.Thread(target=httpd.serve_forever, name="book-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven by chromedriver, with a fresh profile; quit at the end."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        skip_or_fail("selenium is not installed: `./kit book` installs it (the `book` extra)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        skip_or_fail("headless Chromium is missing: apt-get install chromium chromium-driver")
    profile = tempfile.mkdtemp(prefix="brpc-mini-book-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1366,900", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # an explicit driver path: selenium's own driver manager (which downloads) never runs
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def open_page(driver, url: str) -> list[dict]:
    """Load ``url`` and return the console entries it produced (errors and failed requests)."""
    driver.get_log("browser")                      # drop whatever an earlier page left
    driver.get(url)
    deadline = time.monotonic() + 30
    while driver.execute_script("return document.readyState") != "complete":
        assert time.monotonic() < deadline, f"{url} never finished loading"
        time.sleep(0.05)
    return driver.get_log("browser")


def errors_in(entries: list[dict]) -> list[str]:
    return [e["message"] for e in entries if e.get("level") in ("SEVERE", "ERROR")]


def page_of(manifest: list[dict], source: str) -> dict:
    pages = [p for p in manifest if p["source"] == source]
    assert len(pages) == 1, f"{source} is not one page of the book: {[p['source'] for p in manifest]}"
    return pages[0]


def test_the_book_has_every_chapter(built_book):
    sources = [p["source"] for p in built_book]
    assert sources[0] == "book/index.md", "the story is the book's first page"
    assert sources[1:-1] == [f"notebooks/{path.name}" for path in CHAPTERS], "chapters in order"
    assert sources[-1] == "book/glossary.md"
    for page in built_book:
        assert (HTML / page["file"]).is_file(), page


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[path.stem for path in CHAPTERS])
def test_chapter_renders_with_its_figures(built_book, server, browser, chapter):
    from selenium.webdriver.common.by import By

    page = page_of(built_book, f"notebooks/{chapter.name}")
    console = open_page(browser, f"{server}/{page['file']}")

    title = notebook_title(chapter)
    assert plain(browser.title).startswith(title), (browser.title, title)
    assert plain(browser.find_element(By.CSS_SELECTOR, "h1.page-title").text) == title

    expected = stored_pictures(chapter)
    figures = browser.find_elements(By.CSS_SELECTOR, "figure.output-figure img")
    assert len(figures) == expected, f"{len(figures)} pictures on the page, {expected} in {chapter.name}"
    for img in figures:
        loaded = browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
        assert loaded, f"picture {img.get_attribute('src')} did not load"
        assert img.size["width"] > 0 and img.size["height"] > 0

    # the code cells and their printed outputs are there too
    assert browser.find_elements(By.CSS_SELECTOR, ".cell-code pre.highlight")
    assert browser.find_elements(By.CSS_SELECTOR, "pre.output")
    assert not errors_in(console), errors_in(console)


def test_story_and_glossary_render(built_book, server, browser):
    from selenium.webdriver.common.by import By

    story = built_book[0]
    console = open_page(browser, f"{server}/{story['file']}")
    assert not errors_in(console), errors_in(console)
    steps = browser.find_elements(By.CSS_SELECTOR, "article ol > li")
    assert len(steps) == 12, "the story is told in the seed's twelve steps"
    links = {urllib.parse.urlsplit(a.get_attribute("href")).path.lstrip("/")
             for a in browser.find_elements(By.CSS_SELECTOR, "article a")}
    chapter_files = {page_of(built_book, f"notebooks/{name}.ipynb")["file"] for name in SEED_CHAPTERS}
    assert chapter_files <= links, f"the story links no page for {sorted(chapter_files - links)}"

    glossary = built_book[-1]
    console = open_page(browser, f"{server}/{glossary['file']}")
    assert not errors_in(console), errors_in(console)
    rows = browser.find_elements(By.CSS_SELECTOR, "article tbody tr")
    assert len(rows) > 60


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value and ((tag == "a" and name == "href") or (tag in ("img", "link", "script") and name in ("src", "href"))):
                self.targets.append(value)


def test_every_local_link_resolves(built_book):
    """Every page links every other (the sidebar); links between pages, pictures, style sheets and
    notebook downloads all exist on disk, and every ``#fragment`` names an element of its page —
    so the site also works from file://."""
    ids = {}
    for page in built_book:
        text = (HTML / page["file"]).read_text(encoding="utf-8")
        ids[page["file"]] = set(re.findall(r'\bid="([^"]+)"', text))
    broken = []
    every_page = {page["file"] for page in built_book}
    for page in built_book:
        parser = _Links()
        parser.feed((HTML / page["file"]).read_text(encoding="utf-8"))
        missing = every_page - {urllib.parse.urlsplit(t).path for t in parser.targets}
        assert not missing, f"{page['file']}: the sidebar links no {sorted(missing)}"
        for target in parser.targets:
            parts = urllib.parse.urlsplit(target)
            if parts.scheme or target.startswith("data:"):
                continue
            path = parts.path or page["file"]
            if not (HTML / path).is_file():
                broken.append(f"{page['file']}: {target}")
            elif parts.fragment and path.endswith(".html") and parts.fragment not in ids.get(path, ()):
                broken.append(f"{page['file']}: {target} (no such id)")
    assert not broken, broken
