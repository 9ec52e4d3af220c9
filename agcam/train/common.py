"""What the two from-scratch trainings share (``agcam train-learnt``, ``agcam train-clip``): the
learning-rate schedule, the clock and load record of a run, and the log written beside the
weights."""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import time
from typing import Dict, List, Sequence


def learning_rate(step: int, steps: int, base: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at ``steps``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def cpu_seconds() -> Dict[str, float]:
    """CPU seconds (user + system) of this process and of its finished children (the data
    workers, once joined): what the run costs whatever else the machine is doing."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"main": own.ru_utime + own.ru_stime,
            "workers": children.ru_utime + children.ru_stime}


def load_average() -> List[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        return []


class RunClock:
    """The wall time, CPU time and load average of a training loop: start it before the loop,
    :meth:`stop` it after the data workers are joined (so that their CPU time counts)."""

    def __init__(self):
        self.load_start, self.cpu_start = load_average(), cpu_seconds()
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def stop(self) -> Dict[str, object]:
        """What the log records of the run's cost."""
        seconds = self.elapsed()
        cpu = {k: round(v - self.cpu_start[k], 1) for k, v in cpu_seconds().items()}
        return {"train_seconds": round(seconds, 1),
                # CPU time of the training loop: the model's thread(s) and the data workers; on
                # an idle machine with a core each, the wall time is about the larger of the two
                "train_cpu_seconds": cpu,
                "load_average_start": self.load_start, "load_average_end": load_average()}


def run_record(model: str, out: str, written, args: argparse.Namespace,
               cost: Dict[str, object], log: List[Dict[str, float]]) -> Dict[str, object]:
    """The log of a training run: the weights written, their size and the parameters of the
    model read back from them (``written``), the cost (:class:`RunClock`), the machine, the
    arguments and the per-step log."""
    import torch
    return {
        "model": model, "weights": os.path.basename(out), "weights_bytes": os.path.getsize(out),
        "parameters": sum(p.numel() for p in written.parameters()),
        **{k: cost[k] for k in ("train_seconds", "train_cpu_seconds")},
        "images_seen": args.steps * args.batch_size, "torch_threads": args.threads,
        "loader_workers": args.workers, "cpu_count": os.cpu_count(),
        "load_average_start": cost["load_average_start"],
        "load_average_end": cost["load_average_end"],
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "args": vars(args), "log": log,
    }


def write_run(result: Dict[str, object], out: str, committed_weights: str, committed_log: str,
              summary: Sequence[str]) -> int:
    """Write the log beside the weights (the committed log for the committed weights), print the
    ``summary`` keys as one JSON line; the exit code."""
    log_path = os.path.splitext(out)[0] + ".json"
    if os.path.abspath(out) == os.path.abspath(committed_weights):
        log_path = committed_log
    with open(log_path, "w") as handle:
        json.dump(result, handle, indent=2)
        handle.write("\n")
    print(json.dumps({k: result[k] for k in summary if k in result}), flush=True)
    return 0
