"""What the thin scripts (localization.py, segmentation.py) share: the runner of agcam evaluate
in a folder of this run only, removed at the end (a script keeps its released behaviour:
nothing to resume, its own files)."""
from __future__ import annotations

import contextlib
import shutil
import tempfile


@contextlib.contextmanager
def scratch_run(ctx, network, script: str, **config):
    """Run :class:`agcam.evaluation.run.RunConfig` ``config`` (without ``out``) on ``network``;
    yields ``(results, folder)``: the results on rank 0 (``None`` elsewhere) and the folder of
    the per-image records (:func:`agcam.evaluation.run.method_records`). Under torchrun, rank 0
    makes the folder and every rank writes its records there (one machine)."""
    from agcam import distributed
    from agcam.evaluation.run import RunConfig, run

    work = distributed.broadcast_from_main(
        tempfile.mkdtemp(prefix=f"agcam_{script}_") if ctx.is_main else None, ctx)
    try:
        results = run(RunConfig(out=work, **config), network, ctx,
                      log=lambda text: print(text, flush=True), report=False)
        yield results, work
    finally:
        distributed.gather_to_main([None], ctx)     # every process is done with the folder
        if ctx.is_main:
            shutil.rmtree(work, ignore_errors=True)
