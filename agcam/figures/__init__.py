"""Figures: what they show, computed (:mod:`.heatmaps`: top-k classes, heatmaps, boxes) and drawn
(:mod:`.plotting`), shared by ``agcam explain`` and ``visualization.ipynb``; the committed figures
under ``docs/figures`` are drawn by :mod:`agcam.study.figures` (``agcam figures``)."""
