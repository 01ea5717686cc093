"""What importing function_app loads (cold start, notification path): never the Graph SDK, and the heavy
SDKs of ``shared.adapters.lazy_imports`` only in the warm-up thread, never on the import path itself."""

from __future__ import annotations

import json
import subprocess
import sys

from devhost.processes import ROOT
from shared.adapters.lazy_imports import LAZY_MODULES
from testing.settings import sample_settings

GRAPH_SDK = ("msgraph", "kiota_abstractions", "msgraph_core")
# LAZY_MODULES, and what only they bring along: the queue SDK's sync half, azure-core's requests transport,
# cryptography (PyJWT's RSA keys, the queue SDK's client-side encryption).
HEAVY = (*LAZY_MODULES, "azure.storage.queue", "requests", "urllib3", "cryptography")


def _loaded_after(code: str, prefixes: tuple[str, ...]) -> list[str]:
    """Modules under ``prefixes`` that a fresh interpreter holds after running ``code``."""
    report = (f"import sys, json; print(json.dumps(sorted(m for m in sys.modules "
              f"if any(m == p or m.startswith(p + '.') for p in {prefixes!r}))))")
    result = subprocess.run([sys.executable, "-c", f"{code}\n{report}"], cwd=ROOT,
                            env={**sample_settings(), "PATH": ""}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_function_app_import_does_not_load_msgraph() -> None:
    assert _loaded_after("import function_app", GRAPH_SDK) == []


def test_the_warm_up_does_not_load_msgraph_either() -> None:
    code = "import function_app\nfrom shared.adapters.lazy_imports import settled\nsettled()"
    assert _loaded_after(code, GRAPH_SDK) == []


def test_function_app_import_leaves_the_heavy_sdks_to_the_warm_up() -> None:
    # The warm-up held back (it would load them at once, in its own thread): what the import itself needs.
    code = ("import shared.adapters.lazy_imports as lazy_imports\n"
            "lazy_imports.warm_up = lambda then=None: None\n"
            "import function_app")
    assert _loaded_after(code, HEAVY) == []


def test_the_exporter_is_set_up_by_the_warm_up_not_by_the_import() -> None:
    on = ("import os\nos.environ['APPLICATIONINSIGHTS_CONNECTION_STRING'] = "
          "'InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:9/'\n")
    held_back = "import shared.adapters.lazy_imports as lazy_imports\nlazy_imports.warm_up = lambda then=None: None\n"
    assert _loaded_after(on + held_back + "import function_app", ("azure.monitor",)) == []
    # Once the warm-up is done the exporter is on, before any event could be emitted (track_event waits).
    code = (on + "import function_app\nfrom shared.adapters import monitoring\n"
            "monitoring.track_event('FlowRegistered')\nassert monitoring._configured and monitoring._tracer")
    assert "azure.monitor.opentelemetry" in _loaded_after(code, ("azure.monitor",))


def test_the_warm_up_loads_every_lazy_module() -> None:
    code = "import function_app\nfrom shared.adapters.lazy_imports import settled\nsettled()"
    loaded = _loaded_after(code, LAZY_MODULES)
    assert [m for m in LAZY_MODULES if m not in loaded] == []


def test_a_lazy_module_must_be_one_the_warm_up_loads() -> None:
    from shared.adapters.lazy_imports import lazy

    assert repr(lazy("httpx")).startswith("<lazy module 'httpx'")
    try:
        lazy("msgraph")
    except ValueError as error:
        assert "LAZY_MODULES" in str(error)
    else:
        raise AssertionError("lazy() accepted a module the warm-up does not load")
