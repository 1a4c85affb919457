"""The datasets the examples download: one module per dataset, plus the download machinery.

* `<dataset>.py` (nietzsche, mnist, fashion_mnist, imdb, reuters): `FILES`, the
  files of that dataset with their URLs, exact sizes and checksums, and the
  loader that reads them from data/raw/<dataset>/.
* `fetch.py`: finds the dataset modules by file name and downloads and
  verifies their FILES (`python -m stages download <dataset>` calls it).
* `npz.py`: the restricted reader for the pickled object arrays of imdb/reuters.

Adding a dataset is adding one module here. This file holds no code on
purpose: every dataset module imports it, and dvc.yaml does not list it as a
dependency of the stages that read a dataset.
"""
