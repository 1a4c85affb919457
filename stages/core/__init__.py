"""What every step of every example runs: CLI, params, paths, atomic files, errors.

dvc.yaml lists this folder as a dependency of every stage; step-specific
helpers (datasets/, training.py, plotting.py) sit beside the examples and are
listed only by the steps that use them.
"""
