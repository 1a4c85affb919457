"""Classic Keras examples as DVC pipelines.

One module per example (stages/<example>.py) holds its pure functions and its
four steps. Shared pieces: stages/core/ (CLI, params, paths, files; used by
every step), datasets/ (one module per dataset, and the download), training.py (the fit loop),
plotting.py. The command line is `python -m stages <step> <example>`.
"""
