"""Benchmarks that print ratios side by side in one run: every method against the forward pass
(:mod:`.methods`, ``agcam bench``) and batched ABPC against the released loop (:mod:`.abpc`,
``agcam bench-abpc``)."""
