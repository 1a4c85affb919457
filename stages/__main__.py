"""Entry point: python -m stages <step> <example>."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of stage logs

from stages.core.cli import main  # noqa: E402

sys.exit(main())
