"""Classic Keras examples as DVC pipelines.

One module per example (stages/<example>.py) holds its pure functions and its
four steps. Shared pieces: stages/core/ (params, paths, files, errors; used by
every step), datasets/ (one module per dataset, and the verified fetch),
training.py (the fit loop), plotting.py. The command line is
`python -m stages <step> <example>` (stages/cli.py).

This file, stages/core/__init__.py and stages/datasets/__init__.py hold a
docstring only: every stage imports them and dvc.yaml lists none of them (a
test checks that they hold no code).
"""
