"""python -m bench: run every benchmark in this folder."""

import importlib
import pkgutil
import sys
from pathlib import Path

for module in sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_")):
    print(f"\n=== bench.{module} ===", flush=True)
    importlib.import_module(f"bench.{module}").main(sys.argv[1:])
