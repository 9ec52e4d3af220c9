"""Figures: what they show, computed (:mod:`.heatmaps`: top-k classes, heatmaps, boxes) and drawn
(:mod:`.plotting`), shared by ``agcam explain`` and ``visualization.ipynb``; the learnt model's
figures under ``docs/figures`` (:mod:`.learnt`)."""
