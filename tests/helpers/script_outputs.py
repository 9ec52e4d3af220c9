"""The five scripts' outputs on the golden set, for the byte-identity test and the runner test.

    python -m tests.helpers.script_outputs      # rewrites tests/fixtures/script_outputs/

:func:`run_scripts` runs ``localization.py`` (with ``--maxboxacc``), ``save_h5.py`` (label and
predicted targets), ``ABPC.py``, ``perturbation.py`` (all four tests) and ``segmentation.py`` in
this process on the golden model and images (the ImageNet-Segmentation fixture for the last),
with :data:`METHODS`, and returns ``{relative path: bytes}`` of every file they write. Paths to
the run's temporary folder and to the repository inside the text files are replaced by
``<OUT>`` and ``<ROOT>``, and files whose bytes
carry a run-dependent part are reduced to what a run decides:

- an HDF5 store: every dataset's dtype, shape and bytes and every attribute, as a text listing
  (``h5dump``-like, sorted; the HDF5 container itself records no content decision);
- a PNG (matplotlib): kept as bytes (the same matplotlib writes the same file).

The fixture, ``tests/fixtures/script_outputs/manifest.json``, holds the SHA-256 of every file's
bytes, and ``fingerprint``: the SHA-256 of the golden model's float32 logits and AGCAM maps on
this machine. Float32 kernels differ between CPUs, so byte-identity can only be asked where the
fingerprint matches; elsewhere the numbers are checked by the float32-bound tests.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Dict, List

from tests.helpers.golden import GOLDEN_ILSVRC, GOLDEN_MODEL_NAME, GOLDEN_WEIGHTS, ROOT

FIXTURE_DIR = ROOT / "tests" / "fixtures" / "script_outputs"
MANIFEST = FIXTURE_DIR / "manifest.json"
#: AGCAM and LRP (whose float32 maps depend on the batch they are computed in)
METHODS = ["agcam", "lrp"]
COMMON = ["--model", GOLDEN_MODEL_NAME, "--checkpoint", str(GOLDEN_WEIGHTS), "--device", "cpu",
          "--no_progress", "--method", *METHODS]
DATA = ["--num_workers", "0", "--batch_size", "4"]


def script_commands(out: Path) -> List[tuple]:
    """``(module name, argv)`` of every run, in order (the stores come before their readers)."""
    from tests.helpers.imagenet_seg import FIXTURE
    return [
        ("localization", [*COMMON, *DATA, "--data_root", str(GOLDEN_ILSVRC), "--threshold", "0.5",
                          "0.3", "--maxboxacc", "--output", str(out / "localization")]),
        ("save_h5", [*COMMON, *DATA, "--data_root", str(GOLDEN_ILSVRC),
                     "--save_root", str(out / "label")]),
        ("save_h5", [*COMMON, *DATA, "--data_root", str(GOLDEN_ILSVRC), "--target", "predicted",
                     "--save_root", str(out / "predicted")]),
        ("ABPC", [*COMMON, "--h5_root", str(out / "label"), "--csv", "True", "--file", "True"]),
        ("perturbation", [*COMMON, "--h5_root", str(out / "predicted"), "--test", "positive",
                          "negative", "insertion", "deletion", "--csv", "True", "--file",
                          "True"]),
        ("segmentation", [*COMMON, *DATA, "--data_root", str(FIXTURE),
                          "--output", str(out / "segmentation")]),
    ]


def describe_hdf5(path: Path) -> bytes:
    """Every dataset (dtype, shape, SHA-256 of its bytes) and attribute of an HDF5 file, sorted."""
    import h5py
    import numpy as np

    lines = []

    def attrs(name, obj):
        for key in sorted(obj.attrs):
            value = obj.attrs[key]
            if isinstance(value, np.ndarray):
                value = f"{value.dtype}{value.shape}:{hashlib.sha256(value.tobytes()).hexdigest()}"
            elif isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            lines.append(f"attr {name}/{key} = {value}")

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            data = obj[()]
            if isinstance(data, np.ndarray) and data.dtype != object:
                raw = data.tobytes()
            else:   # strings: their text (an object array's bytes are pointers)
                raw = repr(data.tolist() if isinstance(data, np.ndarray) else data).encode()
            lines.append(f"dataset {name} {obj.dtype} {obj.shape} "
                         f"{hashlib.sha256(raw).hexdigest()}")
        attrs(name, obj)

    with h5py.File(path, "r") as handle:
        attrs("", handle)
        handle.visititems(visit)
    return ("\n".join(sorted(lines)) + "\n").encode()


def collect(out: Path) -> Dict[str, bytes]:
    """``{relative path: bytes}`` of every file under ``out`` (see the module docstring)."""
    files = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        if path.suffix in (".hdf5", ".h5"):
            files[rel + ".listing"] = describe_hdf5(path)
        elif path.suffix == ".png":
            files[rel] = path.read_bytes()
        else:
            files[rel] = (path.read_bytes().replace(str(out).encode(), b"<OUT>")
                          .replace(str(ROOT).encode(), b"<ROOT>"))
    return files


def run_scripts(out: Path) -> Dict[str, bytes]:
    """Run every command of :func:`script_commands` into ``out``; their files (:func:`collect`).
    Standard output is swallowed (it holds times); a failing run raises."""
    import importlib

    from tests.helpers.scripts import run

    for name, argv in script_commands(out):
        module = importlib.import_module(name)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = run(module, argv)
        if code != 0:
            raise RuntimeError(f"{name}.py {' '.join(argv)} exited {code}")
    return collect(out)


def fingerprint() -> str:
    """SHA-256 of the golden model's float32 logits and AGCAM maps on the golden inputs, as this
    machine's kernels compute them."""
    import numpy as np
    import torch

    from agcam.registry import get_explainer
    from models import create_model
    from tests.helpers.golden import GOLDEN

    model = create_model(GOLDEN_MODEL_NAME, checkpoint=str(GOLDEN_WEIGHTS))
    inputs = torch.from_numpy(np.load(GOLDEN / "reference.npz")["inputs"])
    with torch.no_grad():
        logits = model(inputs)
    _, maps = get_explainer("agcam", model).explain(inputs)
    digest = hashlib.sha256(logits.numpy().tobytes())
    digest.update(maps.detach().numpy().tobytes())
    return digest.hexdigest()


def manifest(files: Dict[str, bytes]) -> Dict[str, str]:
    return {rel: hashlib.sha256(data).hexdigest() for rel, data in sorted(files.items())}


def main(argv=None) -> int:
    import tempfile

    FIXTURE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        files = run_scripts(Path(tmp))
    record = {"fingerprint": fingerprint(), "methods": METHODS, "files": manifest(files)}
    MANIFEST.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    # the text outputs themselves, to read and diff (the manifest is what the test compares)
    for rel, data in files.items():
        if not rel.endswith(".png"):
            target = FIXTURE_DIR / "files" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    print(f"wrote {MANIFEST} ({len(files)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
