"""Writing the results of a run, and nothing else: ``results.json`` (a documented, versioned
schema), one CSV per evaluation, ``report.md`` and ``report.html`` (one self-contained page, its
figures embedded). The numbers come from :mod:`agcam.evaluation.run`; this package only lays
them out.

``results.json``, schema ``agcam-evaluate`` version 1 (docs/evaluate.md):

- ``schema``, ``schema_version``, ``created`` (UTC, ISO 8601);
- ``model``: ``name``, ``checkpoint``, ``checkpoint_sha256``, ``input_size``, ``grid``,
  ``mean``, ``std``;
- ``dataset``: ``name``, ``data_root``, ``split``, ``listed``, ``images`` (used, after
  ``--limit``), ``evaluated``
  (readable images), ``unreadable``;
- ``settings``: ``batch_size``, ``score_batch_size``, ``precision``, ``decode``, ``options``;
- ``methods``: per method ``name``, ``label``, ``seconds`` (its maps and evaluations),
  ``seconds_per_image``;
- ``evaluations``: per evaluation ``name``, ``label``, ``target`` (the class its maps explain),
  ``convention`` (one line), ``columns`` (``key``, ``label``, ``higher_is_better``);
- ``skipped_evaluations``: name -> why it does not apply to the data set;
- ``refused_methods``: name -> why the method refuses the model (left out of the run);
- ``results``: method -> evaluation -> its summary (the columns' keys among others; curves
  as lists);
- ``time``: ``predict_seconds`` (the one shared prediction), ``methods_seconds``;
- ``records_bytes``, ``records_bytes_per_image``: the size of the run's cache on disk;
- ``versions`` (python, torch, timm, numpy, agcam), ``device``.
"""
from agcam.report.writers import (
    SCHEMA,
    SCHEMA_VERSION,
    best_methods,
    build_results,
    markdown_lines,
    table_rows,
    write_report,
)

__all__ = ["SCHEMA", "SCHEMA_VERSION", "best_methods", "build_results", "markdown_lines",
           "table_rows", "write_report"]
