"""The report in a real headless browser: it loads from file:// with no console message,
every embedded image decodes, and the charts are drawn with a real size."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from tests.report.conftest import MODELS

CHROMIUM = next((shutil.which(name) for name in
                 ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
                 if shutil.which(name)), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no headless chromium on PATH (Debian: apt-get install -y chromium; CI installs it)",
)

# Appended to a *copy* of the report (the report itself has no script): after the load
# event, count images that did not decode and charts with a real on-screen size. The
# controls prove the checks can fail: one broken image, one console message.
PROBE = """
<img id="control" alt="control" src="data:image/png;base64,AAAA">
<script>
console.log("spqr-probe-control");
window.addEventListener("load", function () {
  var imgs = Array.from(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var charts = Array.from(document.querySelectorAll("svg.chart")).filter(function (s) {
    var box = s.getBoundingClientRect(); return box.width > 200 && box.height > 200; });
  var out = document.createElement("pre");
  out.id = "spqr-probe";
  out.textContent = JSON.stringify({images: imgs.length, charts: charts.length,
    broken: broken.map(function (i) { return i.id || i.alt; }),
    tables: document.querySelectorAll("table.leaderboard tbody tr").length});
  document.body.appendChild(out);
});
</script>
"""


def chromium(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         *extra, page.as_uri()],
        capture_output=True, text=True, timeout=90,
    )


def console(stderr: str) -> list[str]:
    """Console messages (chromium logs them all as INFO:CONSOLE, whatever their level)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_images_decode_and_charts_render(demo_report: Path, tmp_path: Path) -> None:
    probe = demo_report.with_name("probe.html")
    probe.write_text(demo_report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                     encoding="utf-8")
    result = chromium(probe, tmp_path / "profile", "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r'<pre id="spqr-probe">([^<]*)</pre>', result.stdout)
    assert found, result.stdout[-2000:]
    facts = json.loads(found.group(1).replace("&quot;", '"'))
    embedded = demo_report.read_text(encoding="utf-8").count("<img ")
    assert facts["images"] == embedded + 1 and embedded > 100
    assert facts["broken"] == ["control"]  # every report image decoded; the control did not
    assert facts["charts"] == len(MODELS)
    assert facts["tables"] == len(MODELS)
    messages = console(result.stderr)
    assert len(messages) == 1 and "spqr-probe-control" in messages[0]  # the detector works


def test_report_loads_without_console_messages_and_renders(demo_report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    result = chromium(demo_report, tmp_path / "profile", "--hide-scrollbars",
                      "--window-size=1280,1800", f"--screenshot={shot}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert console(result.stderr) == []
    with Image.open(shot) as image:
        assert image.size == (1280, 1800)
        colours = image.convert("RGB").resize((320, 450)).getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 500  # text, tables, charts: not a blank page
