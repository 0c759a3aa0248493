#!/usr/bin/env python3
"""Check the built book in headless Chromium: every chapter loads, math is typeset, figures exist.

For every document of ``_toc.yml`` (or the pages given), it

1. reads the built HTML: every ``<img>`` must point to a non-empty file of the build, every
   ``<figure>`` must hold an image and a numbered caption ("Fig. N");
2. serves ``_build/html`` on 127.0.0.1 and loads the page in headless Chromium, with no network
   beyond that server: every request the page makes must succeed (no 404: scripts, MathJax, fonts,
   images), and after MathJax has run the DOM must hold at least one ``<mjx-container>`` per math
   element of the page and no raw TeX (``$$``, ``\\[``, ``\\(``, ``\\begin{``) outside code;
3. optionally saves a full-page screenshot of each page (``--screenshots DIR``).

Exit code 0 when every page passes, 1 otherwise (each failure printed), 2 on bad usage.
Usage: .ci/check_book.py [--html _build/html] [--toc _toc.yml] [--screenshots DIR] [PAGE ...]
"""

from __future__ import annotations

import argparse
import functools
import html.parser
import http.server
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RAW_TEX = re.compile(r"\$\$|\\\[|\\\(|\\begin\{")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-extensions", "--hide-scrollbars", "--mute-audio"]


class PageParser(html.parser.HTMLParser):
    """Images, figures (with their captions), math elements and visible text of one HTML page."""

    SKIP_TEXT = {"script", "style", "pre", "code", "mjx-container", "textarea", "noscript"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.images: list[str] = []
        self.figures: list[dict] = []
        self.math = 0
        self.mjx = 0
        self.text: list[str] = []
        self._skip: list[str] = []
        self._figure: dict | None = None
        self._caption_depth = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "img" and a.get("src"):
            self.images.append(a["src"])
            if self._figure is not None:
                self._figure["images"] += 1
        if tag in ("span", "div") and "math" in classes:
            self.math += 1
        if tag == "mjx-container":
            self.mjx += 1
        if tag == "figure":
            self._figure = {"id": a.get("id", "?"), "images": 0, "caption": ""}
        if tag == "figcaption" and self._figure is not None:
            self._caption_depth = 1
        elif self._caption_depth:
            self._caption_depth += 1
        if tag in self.SKIP_TEXT:
            self._skip.append(tag)

    def handle_endtag(self, tag):
        if self._skip and tag == self._skip[-1]:
            self._skip.pop()
        if self._caption_depth:
            self._caption_depth -= 1
        if tag == "figure" and self._figure is not None:
            self.figures.append(self._figure)
            self._figure = None

    def handle_data(self, data):
        if self._caption_depth and self._figure is not None:
            self._figure["caption"] += data
        if not self._skip:
            self.text.append(data)


def parse(text: str) -> PageParser:
    p = PageParser()
    p.feed(text)
    p.close()
    return p


class Server:
    """A static file server on 127.0.0.1 that records every request and its status."""

    def __init__(self, root: Path):
        log = self.log = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_request(self, code="-", size="-"):
                log.append((self.path.split("?")[0], int(code) if str(code).isdigit() else 0))

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                     functools.partial(Handler, directory=str(root)))
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("check_book: error: no chromium found; install it with: apt-get install -y chromium")


def run_chromium(binary: str, url: str, extra: list[str], budget_ms: int, timeout: int = 120) -> str:
    with tempfile.TemporaryDirectory(prefix="check-book-") as profile:
        cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
               *extra, url]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exit code {done.returncode}: {done.stderr.strip()[-500:]}")
    return done.stdout


def toc_pages(toc: Path) -> list[str]:
    """The documents of ``toc`` in reading order (the same reader as ``moesim book``)."""
    from moesim.bookrun import toc_files

    if toc.name != "_toc.yml":
        raise SystemExit(f"--toc must name a _toc.yml file, got {toc}")
    return toc_files(toc.parent)


def crop_screenshot(path: Path) -> None:
    """Cut the empty space below a tall-window screenshot's content (needs Pillow; else kept).

    Content rows are those whose middle part (the sidebars run down the whole window) is not a
    single colour; the page ends before the first long run of empty rows.
    """
    try:
        from PIL import Image
    except ImportError:
        return
    img = Image.open(path).convert("RGB")
    middle = img.crop((img.width // 4, 0, img.width * 3 // 4, img.height)).convert("L")
    width, height = middle.size
    data = middle.tobytes()
    last, gap = 0, 0
    for row in range(height):
        line = data[row * width:(row + 1) * width]
        if max(line) - min(line) > 8:
            last, gap = row, 0
        else:
            gap += 1
            if gap >= 1500 and last:  # the page ended; below is only the footer pinned to the window
                break
    if last:
        img.crop((0, 0, img.width, min(img.height, last + 60))).save(path)


def check_page(page: str, html_root: Path, server: Server, binary: str, budget_ms: int,
               shots: Path | None, height: int) -> tuple[list[str], str]:
    errors: list[str] = []
    file = html_root / f"{page}.html"
    if not file.is_file():
        return [f"{page}: {file} does not exist"], ""
    static = parse(file.read_text(encoding="utf-8"))
    for src in static.images:
        if re.match(r"^(https?:)?//", src):
            errors.append(f"{page}: image {src} is remote (the book must work offline)")
            continue
        if src.startswith("data:"):
            continue
        target = (file.parent / src.split("#")[0]).resolve()
        if not target.is_file() or target.stat().st_size == 0:
            errors.append(f"{page}: image {src} is missing or empty ({target})")
    for fig in static.figures:
        if fig["images"] == 0:
            errors.append(f"{page}: figure {fig['id']} has no image")
        if not re.search(r"Fig\.\s*[\d.]+", fig["caption"]):
            errors.append(f"{page}: figure {fig['id']} has no numbered caption (got {fig['caption'][:60]!r})")
    url = f"http://127.0.0.1:{server.port}/{page}.html"
    start = len(server.log)
    try:
        dom = run_chromium(binary, url, ["--dump-dom"], budget_ms)
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        return errors + [f"{page}: chromium failed: {err}"], ""
    requests = server.log[start:]
    for path, code in requests:
        if code >= 400 and not path.endswith("favicon.ico"):
            errors.append(f"{page}: request {path} failed with HTTP {code}")
    live = parse(dom)
    if static.math and live.mjx < static.math:
        errors.append(f"{page}: {static.math} math elements but only {live.mjx} typeset by MathJax (<mjx-container>)")
    text = " ".join(live.text)
    raw = RAW_TEX.search(text)
    if raw:
        i = raw.start()
        errors.append(f"{page}: raw TeX left in the page: ...{text[max(0, i - 40): i + 40]!r}...")
    if "<mjx-merror" in dom:
        errors.append(f"{page}: MathJax reported a TeX error (mjx-merror)")
    if shots is not None:
        shot = shots / (page.replace("/", "__") + ".png")
        try:
            run_chromium(binary, url, [f"--screenshot={shot}", f"--window-size=1280,{height}"], budget_ms)
            crop_screenshot(shot)
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            errors.append(f"{page}: screenshot failed: {err}")
    summary = (f"{page}: {len(static.images)} images, {len(static.figures)} figures, {static.math} math elements, "
               f"{live.mjx} typeset, {len(requests)} requests")
    return errors, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pages", nargs="*", help="pages to check, e.g. book/dynamics (default: every page of the TOC)")
    ap.add_argument("--html", default="_build/html", help="the built HTML (default %(default)s)")
    ap.add_argument("--toc", default="_toc.yml", help="the table of contents (default %(default)s)")
    ap.add_argument("--screenshots", default=None, help="save a full-page PNG of each page into this folder")
    ap.add_argument("--height", type=int, default=14000, help="window height of the screenshots (px)")
    ap.add_argument("--budget-ms", type=int, default=20000, help="Chromium virtual time per page (ms)")
    args = ap.parse_args(argv)
    html_root = Path(args.html).resolve()
    if not html_root.is_dir():
        print(f"check_book: error: --html {html_root} is not a folder; build the book first", file=sys.stderr)
        return 2
    pages = args.pages or toc_pages(Path(args.toc))
    shots = Path(args.screenshots).resolve() if args.screenshots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    binary = chromium_binary()
    server = Server(html_root)
    t0 = time.perf_counter()
    failures: list[str] = []
    try:
        for page in pages:
            errors, summary = check_page(page, html_root, server, binary, args.budget_ms, shots, args.height)
            print(("FAIL " if errors else "ok   ") + (summary or page), flush=True)
            for e in errors:
                print("     " + e, flush=True)
            failures += errors
    finally:
        server.close()
    print(f"check_book: {len(pages)} pages, {len(failures)} problems, {time.perf_counter() - t0:.0f} s"
          + (f"; screenshots in {shots}" if shots else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
