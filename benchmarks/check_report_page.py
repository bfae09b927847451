"""The report page as a user sees it: report.html rendered by a real headless Chromium (Debian's
`chromium` package), with every image loaded, no console message, nothing wider than the window,
and a screenshot.

    python benchmarks/check_report_page.py outputs/report/digits                      # check
    python benchmarks/check_report_page.py studies/digits --screenshot studies/digits/report.png

Prints one JSON line (images, broken images, console messages, page width) and exits 1 when the
page is broken, 2 when no Chromium is installed (`apt-get install chromium`). The page is checked on
a copy with a small script appended (report.html itself carries no script): after the load event it
writes, into the DOM that Chromium dumps, how many images there are and which did not decode.
tests/test_report.py::test_the_report_page_renders_in_a_real_browser runs it in CI.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WINDOW = (1280, 1800)
PROBE = """<script>
window.addEventListener('load', () => {
  const images = [...document.images];
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 40));
  const out = document.createElement('pre');
  out.id = 'harness-page-check';
  out.textContent = JSON.stringify({images: images.length, broken: broken,
                                    width: document.documentElement.scrollWidth});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(browser: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={WINDOW[0]},{WINDOW[1]}"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=timeout)


def check_page(report_dir: Path, screenshot: Path | None = None, timeout: float = 90.0) -> dict:
    """Render report_dir/report.html; return what the page did (see the module docstring)."""
    browser = chromium()
    if browser is None:
        raise FileNotFoundError("no chromium on PATH: apt-get install chromium")
    page = (report_dir / "report.html").read_text()
    with tempfile.TemporaryDirectory() as tmp:
        probed = Path(tmp) / "report.html"
        probed.write_text(page.replace("</body>", PROBE + "</body>") if "</body>" in page else page + PROBE)
        done = _run(browser, ["--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom",
                              probed.as_uri()], timeout)
        found = re.search(r'<pre id="harness-page-check">(.*?)</pre>', done.stdout, flags=re.S)
        result = json.loads(found.group(1)) if found else {"images": 0, "broken": [], "width": None,
                                                           "error": "the page never finished loading"}
        result["console"] = [line.split("] ", 1)[-1] for line in done.stderr.splitlines() if ":CONSOLE" in line]
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        _run(browser, [f"--screenshot={screenshot.resolve()}", (report_dir / "report.html").resolve().as_uri()], timeout)
        result["screenshot"] = str(screenshot) if screenshot.is_file() else None
    result["ok"] = bool(found) and result["images"] > 0 and not result["broken"] and not result["console"] \
        and (result["width"] or 0) <= WINDOW[0]
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report_dir", type=Path)
    p.add_argument("--screenshot", type=Path, default=None)
    args = p.parse_args(argv)
    if not (args.report_dir / "report.html").is_file():
        print(f"error: {args.report_dir}/report.html not found: give a report folder (outputs/report/<study>)", file=sys.stderr)
        return 2
    try:
        result = check_page(args.report_dir, args.screenshot)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
