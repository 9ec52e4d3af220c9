"""Figures: what they show, computed (:mod:`.heatmaps`: top-k classes, heatmaps, boxes) and drawn
(:mod:`.plotting`), shared by ``agcam explain`` and ``visualization.ipynb``."""
