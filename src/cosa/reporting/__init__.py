"""What a person looks at: pictures of masks and CAMs, figures of a run, and the HTML run report.

- :mod:`~cosa.reporting.pictures` — colours, overlays, heat maps, image grids, PNG bytes;
- :mod:`~cosa.reporting.predictions` — the files of ``cosa predict`` and the grid of a network's predictions;
- :mod:`~cosa.reporting.plots` — training curves and the confusion matrix;
- :mod:`~cosa.reporting.run_report` — one self-contained HTML page of a run (``cosa report``, ``cosa demo``).
"""
