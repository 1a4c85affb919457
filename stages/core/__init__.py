"""The foundation every step of every example runs: params, paths, atomic files, errors.

dvc.yaml lists this folder as a dependency of every preprocess, train,
evaluate and plot stage, so editing any file here re-runs them all. Helpers
used by some steps only sit beside the examples (datasets/, training.py,
plotting.py) and are listed only by the stages that import them; the command
dispatcher (stages/cli.py) and the repro summary (stages/report.py) are listed
by none, since they change no result.
"""
