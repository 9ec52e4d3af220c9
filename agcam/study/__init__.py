"""The learnt model's study (see agcam.study.table, agcam.study.figures)."""
