"""Entry point: python -m stages <step> <example>.

STAGES_RECORD_IMPORTS=<file> appends one JSON line per command: the stage DVC
ran (DVC_STAGE) and every project module it imported. The tests compare these
with the code dependencies dvc.yaml declares, so a stage that starts running
code its stage does not list is caught.
"""

import atexit
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of stage logs


def _record_imports(path: str) -> None:
    root = Path(__file__).resolve().parent.parent
    files = set()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and (getattr(module, "__name__", "") or "").startswith("stages"):
            files.add(Path(file).resolve().relative_to(root).as_posix())
    line = json.dumps({"stage": os.environ.get("DVC_STAGE"), "argv": sys.argv[1:], "modules": sorted(files)})
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


if os.environ.get("STAGES_RECORD_IMPORTS"):
    atexit.register(_record_imports, os.environ["STAGES_RECORD_IMPORTS"])

from stages.cli import main, quiet_tensorflow_import  # noqa: E402

quiet_tensorflow_import()
sys.exit(main())
