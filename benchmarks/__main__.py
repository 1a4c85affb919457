"""`python -m benchmarks` (make bench): run every benchmark module's main() in turn."""

import importlib
import pkgutil
from pathlib import Path

for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
    if not info.name.startswith("_"):
        print(f"== benchmarks.{info.name}")
        importlib.import_module(f"benchmarks.{info.name}").main()
