"""The dashboard's own figures: `python -m bench.dashboard [--url URL] [--key KEY] [--runs N]`.

Against a running platform (`make run`, seeded): how long the overview takes to become
interactive in Debian's chromium (navigation start to every card drawn, a fresh browser
context each run, so nothing cached), and what the page's JavaScript and CSS weigh gzipped.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics

import httpx
from playwright.sync_api import sync_playwright
from tests.browser import chromium as chromium_args

READY = """() => {
  const cards = [...document.querySelectorAll('section.card')];
  return cards.length > 0 && cards.every((c) => c.dataset.state === 'ready');
}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", help="an api:read key when the platform requires one")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is missing: apt-get install chromium")
    times: list[float] = []
    assets: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=chromium_args.ARGS)
        for _ in range(args.runs):
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            if args.key:
                script = f"sessionStorage.setItem('medrobotics.apiKey', {json.dumps(args.key)})"
                context.add_init_script(script)
            page = context.new_page()
            page.goto(f"{args.url}/api/dashboard")
            page.wait_for_function(READY, timeout=30_000)
            times.append(page.evaluate("performance.now()"))
            assets = page.evaluate(
                "performance.getEntriesByType('resource')"
                ".filter((e) => /\\.(js|css)$/.test(new URL(e.name).pathname))"
                ".map((e) => e.name)"
            )
            context.close()
        browser.close()
    sizes = {}
    for url in sorted(set(assets)):
        body = httpx.get(url, timeout=10).content
        sizes[url.removeprefix(args.url)] = (len(body), len(gzip.compress(body, 9)))
    print(f"overview interactive (every card drawn), {args.runs} cold loads:")
    print(f"  median {statistics.median(times):.0f} ms, min {min(times):.0f}, max {max(times):.0f}")
    print("JavaScript and CSS the overview loads:")
    for name, (raw, packed) in sizes.items():
        print(f"  {name}: {raw / 1024:.1f} kB, {packed / 1024:.1f} kB gzipped")
    total = sum(packed for _, packed in sizes.values())
    print(
        f"  total: {sum(raw for raw, _ in sizes.values()) / 1024:.1f} kB, "
        f"{total / 1024:.1f} kB gzipped"
    )


if __name__ == "__main__":
    main()
