"""``python -m agcam.app.load``: the page under 8 requests at once, and its click-to-maps time.

Starts the page on 127.0.0.1 (a free port) in this process, loads the model once, then through
the page's own API (``gradio_client``, the calls the browser makes on *Explain*):

1. ``--singles`` requests one after another, each on an image not seen before (every map is
   computed): the time from request to answer (maps computed and drawn, figures sent), min and
   max;
2. ``--concurrent`` requests at once, each on another unseen image: every answer's top-5 classes
   and raw maps checked against ``get_explainer`` run here on the same model, each request's
   time, the slowest against the slowest single request times ``--concurrent`` (the bound),
   the process's resident memory before and after, the model loads (1: one copy).

Prints figures, asserts nothing about time (times on a shared CPU are upper bounds). Example::

    python -m agcam.app.load                                   # vit_agcam_learnt
    python -m agcam.app.load --model vit_base_patch16_224 --random --methods agcam
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from typing import List, Sequence


def rss_mb() -> float:
    """The resident memory of this process now (Linux), in MB."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def images_for(count: int) -> List[str]:
    """``count`` distinct shipped images: the synthetic two-object pairs, then the held-out
    set."""
    from agcam.app.engine import SAMPLES_DIR, list_samples
    found = [path for _, path in list_samples(SAMPLES_DIR, per_folder=10**6)
             if os.sep + "synthetic" + os.sep in path]
    if len(found) < count:
        raise SystemExit(f"error: needs {count} sample images under {SAMPLES_DIR}, found "
                         f"{len(found)}")
    return found[:count]


def check(answer, path: str, model, methods: Sequence[str]) -> None:
    """The answer's classes and raw maps equal ``get_explainer``'s on ``path`` (exactly)."""
    import numpy as np
    import torch

    from agcam.figures.heatmaps import top_k
    from agcam.registry import get_explainer
    from models.vit import build_transform, load_image
    sent = json.loads(answer[4])
    images = torch.stack([build_transform(model)(load_image(path))])
    top = top_k(model, images)[0]
    if sent["top"] != [[i, p] for i, p in top]:
        raise AssertionError(f"{path}: top-5 {sent['top']} != {top}")
    for method in methods:
        _, maps = get_explainer(method, model).explain(images, top[0][0])
        got = np.asarray(sent["maps"][method]["values"], np.float32).reshape(maps.shape[1:])
        if not np.array_equal(got, maps[0].cpu().numpy()):
            raise AssertionError(f"{path}: the {method} map differs from get_explainer's")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agcam.app.load",
                                      description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_agcam_learnt")
    parser.add_argument("--random", action="store_true",
                        help="random weights (pretrained=False; no download)")
    parser.add_argument("--methods", nargs="+", default=["agcam"])
    parser.add_argument("--singles", type=int, default=3)
    parser.add_argument("--concurrent", type=int, default=8)
    args = parser.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import torch
    from gradio_client import Client, handle_file

    from agcam.app.engine import Engine, ModelSpec
    from agcam.app.page import serve

    paths = images_for(args.singles + args.concurrent)
    engine = Engine()
    spec = ModelSpec(args.model, pretrained=not args.random)
    start = time.perf_counter()
    loaded = engine.model(spec)
    print(f"model {args.model}{' (random weights)' if args.random else ''}: loaded in "
          f"{time.perf_counter() - start:.2f} s; methods {' '.join(args.methods)}; "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs", flush=True)
    page = serve(engine, "127.0.0.1", None, block=False)
    try:
        client = Client(page.local_url, verbose=False)

        def request(path: str):
            began = time.perf_counter()
            answer = client.predict(handle_file(path), None, args.model, "", args.random, "",
                                    list(args.methods), 0.5, api_name="/explain")
            if str(answer[0]).startswith("error"):
                raise SystemExit(f"error: the page answered {answer[0]}")
            return answer, time.perf_counter() - began

        # one warm-up request (first-call costs: method imports, the page's first figure)
        request(paths[0])
        singles = []
        for path in paths[1:args.singles + 1]:
            answer, seconds = request(path)
            check(answer, path, loaded.model, args.methods)
            singles.append(seconds)
        print(f"single requests (request to maps drawn and sent): "
              f"{', '.join(f'{s:.2f}' for s in singles)} s; slowest {max(singles):.2f} s",
              flush=True)

        burst = paths[args.singles + 1:args.singles + 1 + args.concurrent]
        if len(burst) < args.concurrent:
            burst = paths[-args.concurrent:]
        loads, rss_before = engine.counts["model_loads"], rss_mb()
        results = [None] * len(burst)

        def ask(i: int) -> None:
            results[i] = request(burst[i])

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(burst))]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - began
        if any(r is None for r in results):
            raise SystemExit("error: some concurrent requests got no answer")
        for (answer, _), path in zip(results, burst):
            check(answer, path, loaded.model, args.methods)
        times = sorted(seconds for _, seconds in results)
        bound = max(singles) * len(burst)
        print(f"{len(burst)} requests at once: all {len(burst)} answers equal get_explainer's; "
              f"times {', '.join(f'{s:.2f}' for s in times)} s; slowest {times[-1]:.2f} s, "
              f"bound (slowest single x {len(burst)}) {bound:.2f} s, ratio "
              f"{times[-1] / bound:.2f}; all done in {wall:.2f} s")
        print(f"memory: resident {rss_before:.0f} MB before, {rss_mb():.0f} MB after; model "
              f"loads during the burst: {engine.counts['model_loads'] - loads}; models held: "
              f"{len(engine.loaded_models())}", flush=True)
    finally:
        page.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
