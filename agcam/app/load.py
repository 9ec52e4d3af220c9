"""``python -m agcam.app.load``: the page under 8 requests at once, and its click-to-maps time.

Starts the page on 127.0.0.1 (a free port) in this process, loads the model once, then sends
requests from another process through the page's own API (``gradio_client``, the call the
browser makes on *Explain*), after one warm-up request:

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


def check(answer: str, path: str, model, methods: Sequence[str]) -> None:
    """The classes and raw maps of ``answer`` (the page's raw-maps JSON) equal
    ``get_explainer``'s on ``path``, exactly."""
    import numpy as np
    import torch

    from agcam.figures.heatmaps import top_k
    from agcam.registry import get_explainer
    from models.vit import build_transform, load_image
    sent = json.loads(answer)
    images = torch.stack([build_transform(model)(load_image(path))])
    top = top_k(model, images)[0]
    if sent["top"] != [[i, p] for i, p in top]:
        raise AssertionError(f"{path}: top-5 {sent['top']} != {top}")
    for method in methods:
        _, maps = get_explainer(method, model).explain(images, top[0][0])
        got = np.asarray(sent["maps"][method]["values"], np.float32).reshape(maps.shape[1:])
        if not np.array_equal(got, maps[0].cpu().numpy()):
            raise AssertionError(f"{path}: the {method} map differs from get_explainer's")


def client(url: str, model: str, random_weights: bool, methods: Sequence[str],
           singles: Sequence[str], burst: Sequence[str]) -> dict:
    """The requests, from a process of their own (so the page's server does not share its
    interpreter with them): ``singles`` one after another, then ``burst`` at once. Returns each
    request's seconds and answer (status, raw maps)."""
    from gradio_client import Client, handle_file
    connection = Client(url, verbose=False)

    def request(path: str):
        began = time.perf_counter()
        answer = connection.predict(handle_file(path), None, model, "", random_weights, "",
                                    list(methods), 0.5, api_name="/explain")
        return {"path": path, "seconds": time.perf_counter() - began, "status": answer[0],
                "raw": answer[4]}

    request(singles[0])      # warm-up: first-call costs (method imports, the first figure)
    done = {"singles": [request(path) for path in singles[1:]], "burst": [None] * len(burst)}

    def ask(i: int) -> None:
        done["burst"][i] = request(burst[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(burst))]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done["wall"] = time.perf_counter() - began
    return done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agcam.app.load",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_agcam_learnt")
    parser.add_argument("--random", action="store_true",
                        help="random weights (pretrained=False; no download)")
    parser.add_argument("--methods", nargs="+", default=["agcam"])
    parser.add_argument("--singles", type=int, default=3)
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--client", default=None, help=argparse.SUPPRESS)   # the client process
    args = parser.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    paths = images_for(1 + args.singles + args.concurrent)
    singles, burst = paths[:1 + args.singles], paths[1 + args.singles:]
    if args.client:
        print(json.dumps(client(args.client, args.model, args.random, args.methods, singles,
                                burst)))
        return 0

    import subprocess

    import torch

    from agcam.app.engine import Engine, ModelSpec
    from agcam.app.page import serve
    engine = Engine()
    spec = ModelSpec(args.model, pretrained=not args.random)
    start = time.perf_counter()
    loaded = engine.model(spec)
    print(f"model {args.model}{' (random weights)' if args.random else ''}: loaded in "
          f"{time.perf_counter() - start:.2f} s; methods {' '.join(args.methods)}; "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs", flush=True)
    page = serve(engine, "127.0.0.1", None)
    try:
        rss_before, loads = rss_mb(), engine.counts["model_loads"]
        command = [sys.executable, "-m", "agcam.app.load", "--client", page.local_url,
                   "--model", args.model, "--methods", *args.methods, "--singles",
                   str(args.singles), "--concurrent", str(args.concurrent)]
        command += ["--random"] if args.random else []
        answer = subprocess.run(command, capture_output=True, text=True, check=False)
        if answer.returncode != 0:
            raise SystemExit(f"error: the client failed: {answer.stderr.strip()[-500:]}")
        done = json.loads(answer.stdout.strip().splitlines()[-1])
        rss_after = rss_mb()
    finally:
        page.close()
    for result in done["singles"] + done["burst"]:
        if str(result["status"]).startswith("error"):
            raise SystemExit(f"error: the page answered {result['status']}")
        check(result["raw"], result["path"], loaded.model, args.methods)
    singles = [r["seconds"] for r in done["singles"]]
    times = sorted(r["seconds"] for r in done["burst"])
    bound = max(singles) * len(times)
    print(f"single requests (request to maps drawn and sent): "
          f"{', '.join(f'{s:.2f}' for s in singles)} s; slowest {max(singles):.2f} s")
    print(f"{len(times)} requests at once: all {len(times)} answers equal get_explainer's; "
          f"times {', '.join(f'{s:.2f}' for s in times)} s; slowest {times[-1]:.2f} s, bound "
          f"(slowest single x {len(times)}) {bound:.2f} s, ratio {times[-1] / bound:.2f}; all "
          f"done in {done['wall']:.2f} s")
    print(f"memory of the server process: resident {rss_before:.0f} MB before the requests, "
          f"{rss_after:.0f} MB after; model loads during them: "
          f"{engine.counts['model_loads'] - loads}; models held: {len(engine.loaded_models())}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
