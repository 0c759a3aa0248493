#!/usr/bin/env python3
"""Check the built book in a headless browser (playwright): every page loads cleanly and completely.

One Chromium for all pages, each page in a fresh tab, one after another (the documents of
``_toc.yml``, or the pages given), served from ``_build/html`` on 127.0.0.1. A page fails when

* the browser console logs an error, or a script throws (``pageerror``);
* a request fails or gets an HTTP status >= 400, or goes anywhere but the local server
  (the book must work offline: MathJax, fonts and scripts are part of the build);
* math is not typeset: after MathJax has run, an element of class ``math`` holds no
  ``<mjx-container>``, or the visible text (outside code) still holds raw TeX (``$``, ``\\(``,
  ``\\[``, ``\\begin{``);
* an image did not load (``naturalWidth`` 0), or a ``<figure>`` holds no image.

A full-page screenshot of each page goes to ``--screenshots`` (default ``_build/screenshots``).
Exit code 0 when every page passes, 1 otherwise (each failure printed), 2 on bad usage.

Usage: .ci/check_book.py [--html _build/html] [--toc _toc.yml] [--screenshots DIR] [--browser PATH] [PAGE ...]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import sys
import threading
from pathlib import Path

#: Browsers tried in turn when --browser is not given; none found: playwright's own Chromium.
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

#: Runs in the page after it loaded: waits for MathJax and the images, then reports what is wrong.
PAGE_PROBE = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const images = Array.from(document.images);
  await Promise.all(images.map(img => {
    img.loading = "eager";
    if (img.complete) return null;
    return new Promise(done => { img.addEventListener("load", done); img.addEventListener("error", done);
                                 setTimeout(done, 10000); });
  }));
  const broken = images.filter(img => !img.complete || img.naturalWidth === 0)
                       .map(img => img.getAttribute("src"));
  const emptyFigures = Array.from(document.querySelectorAll("figure"))
                            .filter(f => !f.querySelector("img, svg")).map(f => f.id || "(no id)");
  const math = Array.from(document.querySelectorAll(".math"));
  const untypeset = math.filter(el => !el.querySelector("mjx-container"))
                        .map(el => el.textContent.trim().slice(0, 60));
  const main = document.querySelector("main") || document.body;
  const clone = main.cloneNode(true);
  clone.querySelectorAll("pre, code, script, style, mjx-container, textarea, .cell_input, .highlight")
       .forEach(el => el.remove());
  const text = clone.textContent;
  const tex = [];
  for (const pattern of [/\\$[^$\\n]{0,60}\\$?/g, /\\\\\\(.{0,60}/g, /\\\\\\[.{0,60}/g, /\\\\begin\\{.{0,40}/g]) {
    for (const m of text.matchAll(pattern)) { tex.push(m[0]); }
  }
  return {broken, emptyFigures, math: math.length,
          mjx: document.querySelectorAll("mjx-container").length, untypeset, tex};
}"""


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """A quiet HTTP server of ``root`` on a free port of 127.0.0.1, in a daemon thread."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def browser_path(given: str | None) -> str | None:
    """The Chromium to drive: ``given``, else the first of BROWSERS on PATH, else None (playwright's)."""
    if given:
        found = shutil.which(given) or (given if os.path.isfile(given) else None)
        if not found:
            raise SystemExit(f"--browser {given!r}: no such executable")
        return found
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def check_page(page, base: str, name: str, shots: Path | None) -> list[str]:
    """Load ``name``.html in ``page``; return its failures (empty: the page passed)."""
    problems: list[str] = []
    handlers = {
        "console": lambda msg: msg.type == "error" and problems.append(f"console error: {msg.text}"),
        "pageerror": lambda err: problems.append(f"script error: {err}"),
        "requestfailed": lambda req: problems.append(f"request failed: {req.url} ({req.failure})"),
        "response": lambda resp: resp.status >= 400 and problems.append(f"HTTP {resp.status}: {resp.url}"),
    }
    for event, handler in handlers.items():
        page.on(event, handler)
    try:
        response = page.goto(base + name + ".html", wait_until="load", timeout=60000)
        if response is None or not response.ok:
            return problems + [f"page not served: {name}.html"]
        page.wait_for_load_state("networkidle", timeout=30000)
        found = page.evaluate(PAGE_PROBE)
        if shots is not None:
            path = shots / (name.replace("/", "_") + ".png")
            page.screenshot(path=str(path), full_page=True)
    finally:
        for event, handler in handlers.items():
            page.remove_listener(event, handler)
    problems += [f"image not loaded: {src}" for src in found["broken"]]
    problems += [f"figure without an image: {fid}" for fid in found["emptyFigures"]]
    problems += [f"math not typeset: {t!r}" for t in found["untypeset"][:5]]
    problems += [f"raw TeX in the text: {t!r}" for t in found["tex"][:5]]
    return problems


def toc_pages(toc: Path) -> list[str]:
    """The documents of ``toc`` in reading order (the same reader as ``moesim book``)."""
    from moesim.bookrun import toc_files

    if toc.name != "_toc.yml" or not toc.is_file():
        raise SystemExit(f"--toc must name an existing _toc.yml file, got {toc}")
    return toc_files(toc.parent)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--html", default="_build/html", help="the built book (default %(default)s)")
    ap.add_argument("--toc", default="_toc.yml", help="the table of contents (default %(default)s)")
    ap.add_argument("--screenshots", default="_build/screenshots", help="folder for one PNG per page ('' for none)")
    ap.add_argument("--browser", help="Chromium executable (default: the first of %s on PATH)" % ", ".join(BROWSERS))
    ap.add_argument("pages", nargs="*", help="documents to check, e.g. book/routing (default: the whole TOC)")
    args = ap.parse_args(argv)
    root = Path(args.html)
    if not (root / "index.html").is_file():
        ap.error(f"--html {root}: no built book there (no index.html); build it first")
    pages = args.pages or toc_pages(Path(args.toc))
    shots = Path(args.screenshots) if args.screenshots else None
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import sync_playwright

    server, base = serve(root)
    failed = 0
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path(args.browser),
                                        args=["--no-sandbox", "--disable-gpu"])
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            # offline: anything not served by the local server is a failure, not a download
            context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base)
                          else route.abort("blockedbyclient"))
            for name in pages:
                page = context.new_page()  # a fresh tab: a late request of one page is not blamed on the next
                problems = check_page(page, base, name, shots)
                page.close()
                failed += bool(problems)
                print(f"{'FAIL' if problems else 'ok  '} {name}")
                for problem in problems:
                    print(f"     {problem}")
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    print(f"{len(pages) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
