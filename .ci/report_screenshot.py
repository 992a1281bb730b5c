#!/usr/bin/env python
"""Screenshot a Snakemake report in headless Chromium, after clicking through its menus.

    apt-get install -y chromium      # Debian's package
    python .ci/report_screenshot.py results/report.html shot.png \
        --click Results Tables table2/page

The report is a single-page app that shows one result at a time, so a copy of it gets a small
script that clicks the given labels in order, 1.5 s apart: the innermost visible element whose
text is exactly the label (its link or button), or, for "a/b", the result row whose first cells
read a, b (its 'show' link); Chromium then renders the page and saves the PNG.
Not run by CI (Chromium is not a project dependency); a developer check of what the report shows.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CLICKER = """
<script>
(function () {
  const labels = %s;
  function rowOf(cells) {  // "table2/page": the result row whose first cells read so
    return [...document.querySelectorAll('tr')].find(tr => {
      const t = [...tr.querySelectorAll('td')].map(td => td.textContent.trim()).filter(x => x);
      return cells.every((c, i) => t[i] === c);
    });
  }
  function click(label) {
    if (label.includes('/')) {
      const row = rowOf(label.split('/'));
      if (!row) { document.title = 'MISSING ' + label; return; }
      (row.querySelector('a, button') || row).click();
      return;
    }
    const all = [...document.querySelectorAll('a, button, td, th, span, div, li')];
    // the innermost visible element with exactly that text, then its link, button or row
    const hit = all.filter(e => e.textContent.trim() === label && e.getClientRects().length).pop();
    if (!hit) { document.title = 'MISSING ' + label; return; }
    const row = hit.closest('tr');  // a result's row: its first link is the 'show' (eye) icon
    ((row && row.querySelector('a, button')) || hit.closest('a, button') || hit).click();
  }
  function run(i) { if (i < labels.length) { click(labels[i]); setTimeout(() => run(i + 1), 1500); } }
  window.addEventListener('load', () => setTimeout(() => run(0), 1500));
})();
</script>
"""
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("report")
    ap.add_argument("out")
    ap.add_argument("--click", nargs="*", default=[], help="labels to click, in order")
    ap.add_argument("--size", default="1600,1200", help="window width,height")
    ap.add_argument("--browser", default=shutil.which("chromium") or "chromium")
    args = ap.parse_args(argv)
    text = Path(args.report).read_text(encoding="utf-8")
    at = text.rfind("</body>")  # the last one: the report's scripts hold the string too
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(text[:at] + CLICKER % json.dumps(args.click) + text[at:], encoding="utf-8")
        wait_ms = 4000 + 1500 * len(args.click)
        cmd = [
            args.browser, *FLAGS, f"--user-data-dir={tmp}/profile", f"--window-size={args.size}",
            f"--virtual-time-budget={wait_ms}", f"--screenshot={Path(args.out).resolve()}",
            page.as_uri(),
        ]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if res.returncode != 0 or not Path(args.out).is_file():
        print(res.stdout + res.stderr, file=sys.stderr)
        return 1
    print(f"{args.out}: clicked {args.click}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
