"""Cold start: time and peak RSS of importing function_app, against importing the Graph SDK eagerly.

Each variant runs in a fresh interpreter (as a cold Functions worker does), several times; the
figures are medians, and the ratios compare against a bare interpreter start measured in the same run.
The app must not pull the Graph SDK in at import: the notification path has to stay light.

The figure: the import cost of function_app (its median over a bare interpreter's), target <= 0.5 s. The
storage queue SDK, httpx and PyJWT are not part of it: the app imports them in a background thread once
its functions are declared (``shared.adapters.lazy_imports``). The row "function_app, warm-up finished"
shows what that thread adds until the first request finds everything loaded.

    python -m bench.cold_start [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TARGET_SECONDS = 0.5
WARMED = "import function_app\nfrom shared.adapters.lazy_imports import settled\nsettled()\n"

APP_INSIGHTS = ("import os\nos.environ['APPLICATIONINSIGHTS_CONNECTION_STRING'] = "
                "'InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:9/'\n")
VARIANTS = {
    "bare interpreter": "pass",
    "import function_app": "import function_app",
    "function_app, warm-up finished": WARMED,
    # As on Azure, where the exporter is on: its set-up (~0.4 s) runs in the warm-up thread too.
    "import function_app, App Insights on": APP_INSIGHTS + "import function_app",
    "App Insights on, warm-up finished": APP_INSIGHTS + WARMED,
    "function_app + msgraph eagerly": (
        WARMED +  # no Graph SDK import beside the warm-up's (shared.adapters.lazy_imports)
        "from msgraph import GraphServiceClient\n"
        "from kiota_abstractions.authentication import AnonymousAuthenticationProvider\n"
        "from msgraph import GraphRequestAdapter\n"
        "client = GraphServiceClient(request_adapter=GraphRequestAdapter(AnonymousAuthenticationProvider()))\n"
        # What a first call loads: the request builders and models for the routes the app uses.
        "client.solutions.booking_businesses.by_booking_business_id('x').appointments.to_get_request_information()\n"
        "client.users.by_user_id('x').events.to_get_request_information()\n"
        "client.subscriptions.to_get_request_information()\n"
        "from msgraph.generated.models.booking_appointment import BookingAppointment\n"
        "from msgraph.generated.models.subscription import Subscription"
    ),
}
# The child reports when its code was done (wall clock, as the parent's start): what it spends exiting (it waits
# for the warm-up thread, shared.adapters.lazy_imports) is not start-up.
REPORT = "import sys, json, time; print(json.dumps([time.time(), sorted(m for m in sys.modules "\
         "if m.split('.')[0] in ('msgraph', 'kiota_abstractions', 'azure'))]))"


def _settings_env() -> dict[str, str]:
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    return {**os.environ, **values}


def run_once(code: str) -> tuple[float, int, list[str]]:
    started = time.time()
    process = subprocess.Popen([sys.executable, "-c", f"{code}\n{REPORT}"], cwd=ROOT, env=_settings_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    out = process.stdout.read().decode() if process.stdout else ""
    if status != 0:
        # The exit code (negative: killed by that signal) says what an empty stderr cannot.
        raise RuntimeError(f"variant failed with exit code {os.waitstatus_to_exitcode(status)}: "
                           f"{process.stderr.read().decode() if process.stderr else ''}")
    done_at, loaded = json.loads(out.strip().splitlines()[-1])
    return done_at - started, usage.ru_maxrss, loaded


def measure(runs: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    samples: dict[str, list[tuple[float, int]]] = {name: [] for name in VARIANTS}
    modules: dict[str, list[str]] = {}
    for _ in range(runs):  # interleaved so machine noise hits every variant alike
        for name, code in VARIANTS.items():
            elapsed, rss, loaded = run_once(code)
            samples[name].append((elapsed, rss))
            modules[name] = loaded
    for name, values in samples.items():
        results[name] = {
            "seconds": statistics.median(v[0] for v in values),
            "peak_rss_mb": statistics.median(v[1] for v in values) / 1024,
            "msgraph_loaded": any(m.startswith("msgraph") for m in modules[name]),
        }
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    results = measure(args.runs)
    base = results["bare interpreter"]
    app = results["import function_app"]
    eager = results["function_app + msgraph eagerly"]
    print(f"{'variant':34} {'median s':>9} {'peak RSS MB':>12} {'msgraph loaded':>15}")
    for name, r in results.items():
        print(f"{name:34} {r['seconds']:9.3f} {r['peak_rss_mb']:12.1f} {r['msgraph_loaded']!s:>15}")
    app_cost = app["seconds"] - base["seconds"]
    eager_cost = eager["seconds"] - base["seconds"]
    warmed_cost = results["function_app, warm-up finished"]["seconds"] - base["seconds"]
    print(f"\nimport cost over a bare interpreter: function_app {app_cost:.3f} s, with msgraph {eager_cost:.3f} s; "
          f"until the warm-up imports are done {warmed_cost:.3f} s")
    print(f"ratio eager/lazy import time: {eager['seconds'] / app['seconds']:.2f}x; "
          f"peak RSS: {eager['peak_rss_mb'] / app['peak_rss_mb']:.2f}x "
          f"(+{eager['peak_rss_mb'] - app['peak_rss_mb']:.0f} MB)")
    insights_cost = results["import function_app, App Insights on"]["seconds"] - base["seconds"]
    worst = max(app_cost, insights_cost)
    print(f"import cost of function_app: {app_cost:.3f} s, with App Insights on {insights_cost:.3f} s "
          f"(target <= {TARGET_SECONDS} s: {'met' if worst <= TARGET_SECONDS else 'NOT met'})")
    if app["msgraph_loaded"] or results["function_app, warm-up finished"]["msgraph_loaded"]:
        print("FAIL: importing function_app loads the Graph SDK")
        sys.exit(1)


if __name__ == "__main__":
    main()
