"""What a person looks at: pictures of masks and CAMs, figures of a run, and the HTML run report.

- :mod:`~cosa.reporting.pictures` — colours, overlays, heat maps, image grids, PNG bytes;
- :mod:`~cosa.reporting.predictions` — the grid of a network's predictions on a few images;
- :mod:`~cosa.reporting.plots` — training curves and the confusion matrix (``cosa plot``);
- :mod:`~cosa.reporting.run_report` — one self-contained HTML page of a run (``cosa report``, ``cosa demo``).
"""
