"""Regenerate docs/trial.png, the picture of the trial page in docs/annotate.md, from the demo study.

python docs/screenshot.py      # needs Debian's chromium
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright
from werkzeug.serving import make_server

from annotate import create_app
from annotate.demo import training_order

HERE = Path(__file__).parent


def main() -> int:
    instance = Path(tempfile.mkdtemp()) / "instance"
    subprocess.run(
        [sys.executable, "-m", "annotate", "--instance", str(instance), "demo", "--no-serve"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    demo = instance / "demo"
    app = create_app(
        {
            "SESSION_COOKIE_SECURE": False,
            "GREY_SCREEN_MS": 0,
            "TRAINING_STIMULI": training_order(demo / "study" / "manifest.csv"),
        },
        instance_path=str(demo),
    )
    http = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{http.server_port}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1000, "height": 640})
        page.goto(base + "/consent")
        page.check("#agree")
        page.click("#consent-continue")
        page.fill("#age", "30")
        page.fill("#vision_screening", "20/20")
        page.click("#register")
        page.click("#environment-continue")
        page.goto(base + "/trial")
        page.wait_for_selector("#grey.hidden", state="attached")
        page.focus("#consistency-slider")
        page.keyboard.press("3")
        page.focus("#perception-slider")
        page.keyboard.press("2")
        page.screenshot(path=str(HERE / "trial.png"))
        browser.close()
    http.shutdown()
    print(f"wrote {HERE / 'trial.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
