"""What the page computes, without the page: images, models, maps and figures.

- Images are checked from their header before anything is decoded: an empty file, a file PIL
  cannot identify and an image over :data:`MAX_PIXELS` are refused in one line
  (:class:`AppError`), so a 20000 x 20000 upload costs a header read, not 1.2 GB of pixels.
- A model is loaded once and kept (:data:`KEEP_MODELS`, least recently used first out); requests
  that ask for a model being loaded wait for that load instead of starting another. A model runs
  one explanation at a time (its lock): the methods hook its modules while they run.
- Raw maps are cached per (image, model, method, class) (:data:`KEEP_MAPS`); a class-agnostic
  method (Rollout) has one entry per image and model. Moving the threshold redraws the boxes from
  the :class:`Explanation` the page holds; clicking a class computes only the maps not cached.
- Heatmaps and figures are those of ``agcam explain``: the raw map through
  :func:`agcam.maps.to_heatmap` at the model's input size (as
  :func:`agcam.figures.heatmaps.explain_heatmaps`), drawn by
  :func:`agcam.figures.plotting.explanation_figure` (image | overlay | boxes).
"""
from __future__ import annotations

import collections
import hashlib
import os
import re
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from agcam.figures.heatmaps import class_name, class_names_of, num_classes_of, top_k
from agcam.figures.plotting import explanation_figure, methods_figure, save_figure
from agcam.maps import to_heatmap
from agcam.registry import available_methods, get_explainer, method_label

#: images over this many pixels are refused from their header, before decoding (40 MP passes a
#: large phone photograph; PIL's own decompression-bomb error starts at 2 x 89.5 MP)
MAX_PIXELS = 40_000_000
#: models kept loaded at once (least recently used first out)
KEEP_MODELS = 2
#: raw maps kept (each a patch grid or an input-sized map, with its heatmap)
KEEP_MAPS = 512
#: decoded images kept (the page redraws from them)
KEEP_IMAGES = 8
#: classes listed (and clickable) on the page
TOP_K = 5
DEFAULT_MODEL = "vit_agcam_learnt"
#: the repository's samples/ (absent from an installed package: ``agcam app --samples DIR``)
SAMPLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "samples")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

Progress = Callable[[float, str], None]


class AppError(ValueError):
    """Bad input on the page (an image, a model, a method): shown in one line; the server goes
    on serving."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, flags named as the page names them."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for flag, word in (("--model ", "model "), ("--checkpoint ", "checkpoint ")):
        text = text.replace(flag, word)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def read_image(path: Optional[str], max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open ``path`` as RGB, refusing (:class:`AppError`) a missing, empty or unidentifiable file
    and, from its header alone, an image over ``max_pixels``."""
    if not path:
        raise AppError("no image: pick a sample or upload an image")
    name = os.path.basename(path)
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise AppError(f"{name}: cannot read the file ({exc.strerror or exc})") from None
    if size == 0:
        raise AppError(f"{name}: empty file (0 bytes), not an image")
    try:
        with Image.open(path) as image:          # reads the header; pixels are decoded below
            width, height = image.size
            if width * height > max_pixels:
                raise AppError(f"{name}: {width} x {height} pixels ({width * height / 1e6:.0f} "
                               f"MP) is over the page's limit of {max_pixels / 1e6:g} MP; refused "
                               "before decoding")
            return image.convert("RGB")
    except AppError:
        raise
    except Image.DecompressionBombError as exc:    # PIL refuses it from the header too
        found = re.search(r"\((\d+) pixels\)", str(exc))
        if found and int(found.group(1)) > max_pixels:
            raise AppError(f"{name}: {int(found.group(1)) / 1e6:.0f} MP is over the page's "
                           f"limit of {max_pixels / 1e6:g} MP; refused before decoding") from None
        raise AppError(f"{name}: refused by PIL's decompression-bomb limit ({exc})") from None
    except UnidentifiedImageError:
        raise AppError(f"{name}: not an image (PIL cannot identify the file's format)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise AppError(f"{name}: cannot decode the image ({type(exc).__name__}: "
                       f"{one_line(exc)})") from None


def list_samples(root: str = SAMPLES_DIR, per_folder: int = 2) -> List[Tuple[str, str]]:
    """``(label, path)`` of the shipped sample images: every image directly in ``root`` and in
    ``root/synthetic/pairs`` (the two-object images), and the first ``per_folder`` of each class
    folder of ``root/synthetic/ILSVRC`` (the learnt model's held-out set); ``[]`` without
    ``root``."""
    def images(folder: str) -> List[str]:
        if not os.path.isdir(folder):
            return []
        return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                      if f.lower().endswith(IMAGE_SUFFIXES))

    found = images(root) + images(os.path.join(root, "synthetic", "pairs", "Data", "CLS-LOC",
                                               "val"))
    classes = os.path.join(root, "synthetic", "ILSVRC", "Data", "CLS-LOC", "val")
    if os.path.isdir(classes):
        for wnid in sorted(os.listdir(classes)):
            found += images(os.path.join(classes, wnid))[:per_folder]
    return [(os.path.relpath(path, root), path) for path in found]


def image_digest(image: Image.Image) -> str:
    """A key of the decoded pixels (the same picture uploaded twice is one cache entry)."""
    digest = hashlib.sha1(f"{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()[:20]


def zero_shot_available() -> bool:
    """Whether this version has the zero-shot head of image-text models (``agcam.clip``,
    ``models.clip``)."""
    import importlib.util
    return all(importlib.util.find_spec(m) is not None for m in ("agcam.clip", "models.clip"))


def parse_prompts(text: Optional[str]) -> Tuple[str, ...]:
    """The prompts typed on the page: one a line; a single line is split at commas."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if len(lines) == 1:
        lines = [part.strip() for part in lines[0].split(",") if part.strip()]
    return tuple(lines)


def _is_clip_name(name: str) -> bool:
    from models.clip import is_clip_name
    return is_clip_name(name)


@dataclass(frozen=True)
class ModelSpec:
    """A model as the page names it: a timm name (``vit_agcam_learnt``, ``hf:<repo>``), a
    checkpoint on the server (a Hugging Face folder, an ``agcam convert`` file, a state dict for
    ``name``), and whether timm's pretrained weights are fetched (off: random weights). With
    ``prompts``, ``name`` (or the checkpoint folder) is an image-text model (``clip_agcam_learnt``,
    ``hf:<repo>``, ``open_clip:<arch>/<pretrained>``) and the model explained is its zero-shot
    classifier of the prompts (:func:`agcam.clip.zero_shot`): class ``i`` is prompt ``i``."""

    name: str = DEFAULT_MODEL
    checkpoint: Optional[str] = None
    pretrained: bool = True
    prompts: Tuple[str, ...] = ()

    @property
    def key(self) -> str:
        checkpoint = os.path.abspath(self.checkpoint) if self.checkpoint else ""
        return (f"{self.name}|{checkpoint}|{'pretrained' if self.pretrained else 'random'}|"
                + "\n".join(self.prompts))

    @property
    def clip_key(self) -> str:
        """The image-text model's key (one copy whatever the prompts)."""
        checkpoint = os.path.abspath(self.checkpoint) if self.checkpoint else ""
        return f"clip|{self.name}|{checkpoint}"

    def describe(self) -> str:
        if self.checkpoint:
            text = f"checkpoint {self.checkpoint}"
        else:
            text = f"model {self.name}" + ("" if self.pretrained else " (random weights)")
        return text + (f" with {len(self.prompts)} prompts" if self.prompts else "")


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: torch.nn.Module
    transform: Callable
    num_classes: int
    class_names: Optional[List[str]]
    seconds: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    explainers: Dict[str, object] = field(default_factory=dict)


@dataclass
class Explanation:
    """One image's maps under one model for one class: what the page shows and redraws from."""

    image_path: str
    image_key: str
    image_name: str
    spec: ModelSpec
    methods: List[str]
    top: List[Tuple[int, float]]
    target: int
    num_classes: int
    class_names: Optional[List[str]]
    raw: Dict[str, np.ndarray]
    heatmaps: Dict[str, np.ndarray]
    refused: Dict[str, str]
    seconds: float

    def class_label(self, index: int) -> str:
        return f"{class_name(index, self.num_classes, self.class_names)} ({index})"

    def as_json(self) -> dict:
        """The raw maps and classes, exactly (float32 values are exact as JSON doubles)."""
        return {"image": self.image_key, "model": self.spec.key, "target": self.target,
                "top": [[int(i), float(p)] for i, p in self.top],
                "maps": {m: {"shape": list(raw.shape), "values": raw.ravel().tolist()}
                         for m, raw in self.raw.items()},
                "refused": dict(self.refused)}


def check_methods(methods: Sequence[str]) -> List[str]:
    methods = list(methods or [])
    if not methods:
        raise AppError("no method ticked: tick at least one")
    unknown = [m for m in methods if m not in available_methods()]
    if unknown:
        raise AppError(f"unknown method {', '.join(unknown)}; choose from "
                       f"{', '.join(available_methods())}")
    return methods


def figure_pixels(fig) -> np.ndarray:
    """A figure drawn by the Agg canvas, as ``[H, W, 3]`` uint8 RGB."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def method_figure(image: Image.Image, explanation: Explanation, method: str, threshold: float):
    """The ``agcam explain`` figure of one method: image | overlay | boxes at ``threshold``."""
    return explanation_figure(
        image, explanation.heatmaps[method], method, explanation.target, threshold,
        top=explanation.top, title=explanation.image_name, num_classes=explanation.num_classes,
        class_names=explanation.class_names)


class Engine:
    """Models, images and maps shared by every request of the page (thread-safe)."""

    def __init__(self, device: Optional[torch.device | str] = None,
                 max_pixels: int = MAX_PIXELS, keep_models: int = KEEP_MODELS,
                 keep_maps: int = KEEP_MAPS):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.max_pixels = int(max_pixels)
        self.keep_models = int(keep_models)
        self.keep_maps = int(keep_maps)
        self.counts: collections.Counter = collections.Counter()
        self._lock = threading.Lock()
        self._models: "collections.OrderedDict[str, LoadedModel]" = collections.OrderedDict()
        self._loading: Dict[str, threading.Lock] = {}
        self._clips: Dict[str, torch.nn.Module] = {}
        self._maps: "collections.OrderedDict[tuple, Tuple[np.ndarray, np.ndarray]]" = \
            collections.OrderedDict()
        self._tops: "collections.OrderedDict[tuple, list]" = collections.OrderedDict()
        self._images: "collections.OrderedDict[tuple, Tuple[Image.Image, str]]" = \
            collections.OrderedDict()

    # -- images -------------------------------------------------------------------------------
    def image(self, path: Optional[str]) -> Tuple[Image.Image, str]:
        """``(RGB image, digest)`` of ``path``, checked by :func:`read_image`, kept decoded."""
        if path:
            try:
                stat = os.stat(path)
                key = (os.path.abspath(path), stat.st_mtime_ns, stat.st_size)
            except OSError:
                key = None
            with self._lock:
                if key in self._images:
                    self._images.move_to_end(key)
                    return self._images[key]
        image = read_image(path, self.max_pixels)
        entry = (image, image_digest(image))
        if path and key is not None:
            self._remember(self._images, key, entry, KEEP_IMAGES)
        return entry

    # -- models -------------------------------------------------------------------------------
    def model(self, spec: ModelSpec) -> LoadedModel:
        """The loaded model of ``spec``: loaded once (concurrent requests wait for one load)."""
        with self._lock:
            if spec.key in self._models:
                self._models.move_to_end(spec.key)
                return self._models[spec.key]
            loading = self._loading.setdefault(spec.key, threading.Lock())
        with loading:
            with self._lock:
                if spec.key in self._models:
                    return self._models[spec.key]
            try:
                loaded = self._load(spec)
            finally:
                with self._lock:
                    self._loading.pop(spec.key, None)
            with self._lock:
                self._models[spec.key] = loaded
                while len(self._models) > self.keep_models:
                    self._models.popitem(last=False)
                self.counts["model_loads"] += 1
        return loaded

    def loaded_models(self) -> List[str]:
        with self._lock:
            return list(self._models)

    def _load(self, spec: ModelSpec) -> LoadedModel:
        from models.vit import ModelError, build_transform, create_model
        name = (spec.name or "").strip()
        if not name and not spec.checkpoint:
            raise AppError("no model: type a model name or a checkpoint")
        if spec.checkpoint and not os.path.exists(spec.checkpoint):
            raise AppError(f"checkpoint {spec.checkpoint}: no such file or folder on the server")
        start = time.perf_counter()
        try:
            if spec.prompts:
                model = self._zero_shot(spec)
            else:
                if name and not name.startswith("hf:") and zero_shot_available() and \
                        _is_clip_name(name):
                    raise AppError(f"model {name} is an image-text model: type its prompts, "
                                   "one per class")
                model = create_model(name or DEFAULT_MODEL, checkpoint=spec.checkpoint or None,
                                     pretrained=spec.pretrained, device=self.device)
        except AppError:
            raise
        except ModelError as exc:
            raise AppError(one_line(exc)) from None
        except Exception as exc:     # a folder or file that does not load fails in many ways
            raise AppError(f"{spec.describe()}: cannot load it ({type(exc).__name__}: "
                           f"{one_line(exc)})") from None
        return LoadedModel(spec=spec, model=model, transform=build_transform(model),
                           num_classes=num_classes_of(model), class_names=class_names_of(model),
                           seconds=time.perf_counter() - start)

    def _zero_shot(self, spec: ModelSpec) -> torch.nn.Module:
        """The zero-shot classifier of ``spec.prompts`` on the image-text model ``spec`` names;
        the image-text model itself is loaded once and kept for other prompts."""
        if not zero_shot_available():
            raise AppError("prompts need the zero-shot head of image-text models "
                           "(agcam.clip), which this version does not have")
        from agcam.clip import zero_shot
        from models.clip import create_clip
        with self._lock:
            clip = self._clips.get(spec.clip_key)
        if clip is None:
            clip = create_clip(spec.name or "clip_agcam_learnt",
                               checkpoint=spec.checkpoint or None).to(self.device)
            with self._lock:
                self._clips = {spec.clip_key: clip}     # one image-text model at a time
        return zero_shot(clip, list(spec.prompts))

    # -- maps ---------------------------------------------------------------------------------
    def explain(self, path: Optional[str], spec: ModelSpec, methods: Sequence[str],
                target: Optional[int] = None, progress: Optional[Progress] = None
                ) -> Explanation:
        """The maps of ``methods`` for the image at ``path`` under ``spec``, for ``target`` (the
        top-1 class when ``None``). A method that refuses the model is listed in ``refused``
        (its reason, one line) and the others are explained."""
        progress = progress or (lambda fraction, text: None)
        start = time.perf_counter()
        methods = check_methods(methods)
        image, key = self.image(path)
        progress(0.0, f"loading {spec.describe()}")
        loaded = self.model(spec)
        raw, heatmaps, refused = {}, {}, {}
        with loaded.lock:
            images = torch.stack([loaded.transform(image)]).to(self.device)
            top = self._top(loaded, key, images)
            if target is None:
                target = top[0][0]
            if not 0 <= int(target) < loaded.num_classes:
                raise AppError(f"class {target}: outside [0, {loaded.num_classes})")
            for i, method in enumerate(methods):
                progress(i / len(methods), f"{method_label(method)} ({i + 1}/{len(methods)})")
                try:
                    raw[method], heatmaps[method] = self._map(loaded, key, images, method,
                                                              int(target))
                except AppError as exc:
                    refused[method] = str(exc)
        progress(1.0, "drawing")
        name = os.path.basename(path) if path else "image"
        return Explanation(image_path=path, image_key=key, image_name=name, spec=spec,
                           methods=methods, top=top, target=int(target),
                           num_classes=loaded.num_classes, class_names=loaded.class_names,
                           raw=raw, heatmaps=heatmaps, refused=refused,
                           seconds=time.perf_counter() - start)

    def _top(self, loaded: LoadedModel, key: str, images: torch.Tensor):
        cache_key = (key, loaded.spec.key)
        with self._lock:
            if cache_key in self._tops:
                return self._tops[cache_key]
        top = top_k(loaded.model, images, TOP_K)[0]
        self._remember(self._tops, cache_key, top, self.keep_maps)
        return top

    def _explainer(self, loaded: LoadedModel, method: str):
        if method not in loaded.explainers:
            try:
                loaded.explainers[method] = get_explainer(method, loaded.model)
            except Exception as exc:    # the method's check of the model: one line
                loaded.explainers[method] = AppError(
                    f"{method} refuses {loaded.spec.describe()}: {one_line(exc)}")
        explainer = loaded.explainers[method]
        if isinstance(explainer, AppError):
            raise explainer
        return explainer

    def _map(self, loaded: LoadedModel, key: str, images: torch.Tensor, method: str,
             target: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(raw map, heatmap)`` of one method, from the cache or computed (caller holds the
        model's lock)."""
        explainer = self._explainer(loaded, method)
        cache_key = (key, loaded.spec.key, method,
                     target if explainer.class_specific else None)
        with self._lock:
            if cache_key in self._maps:
                self._maps.move_to_end(cache_key)
                return self._maps[cache_key]
        try:
            _, maps = explainer.explain(images, target if explainer.class_specific else None)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            raise AppError(f"{method} failed on {loaded.spec.describe()}: "
                           f"{type(exc).__name__}: {one_line(exc)}") from None
        maps = maps.detach()
        # the heatmap of agcam explain (agcam.figures.heatmaps.explain_heatmaps)
        heatmap = to_heatmap(maps, explainer.geometry.input_size)[0].float().cpu().numpy()
        entry = (maps[0].cpu().numpy(), heatmap)
        self._count("maps_computed")
        self._remember(self._maps, cache_key, entry, self.keep_maps)
        return entry

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def _remember(self, cache: collections.OrderedDict, key, value, limit: int) -> None:
        with self._lock:
            cache[key] = value
            cache.move_to_end(key)
            while len(cache) > limit:
                cache.popitem(last=False)

    # -- figures ------------------------------------------------------------------------------
    def render(self, explanation: Explanation, threshold: float
               ) -> List[Tuple[np.ndarray, str]]:
        """One ``(pixels, caption)`` per explained method: the figure of ``agcam explain`` at
        ``threshold``, drawn from the explanation's heatmaps (nothing recomputed)."""
        image, _ = self.image(explanation.image_path)
        self._count("renders")
        return [(figure_pixels(method_figure(image, explanation, m, threshold)),
                 f"{method_label(m)}: {explanation.class_label(explanation.target)}, boxes at "
                 f"{threshold:g}")
                for m in explanation.methods if m in explanation.heatmaps]

    def save(self, explanation: Explanation, threshold: float, folder: str) -> str:
        """Every method of ``explanation`` in one figure (:func:`methods_figure`), as a PNG in
        ``folder``; returns its path."""
        if not explanation.heatmaps:
            raise AppError("nothing to save: no method gave a map")
        image, _ = self.image(explanation.image_path)
        stem = os.path.splitext(explanation.image_name)[0] or "image"
        model = os.path.basename((explanation.spec.checkpoint or explanation.spec.name)
                                 .rstrip("/")).replace(":", "_").replace("/", "_")
        path = os.path.join(folder, f"{stem}_{model}_class{explanation.target}_"
                                    f"t{threshold:g}.png")
        fig = methods_figure(image, explanation.heatmaps, top=explanation.top,
                             threshold=threshold,
                             title=f"{explanation.image_name}: "
                                   f"{explanation.class_label(explanation.target)}",
                             num_classes=explanation.num_classes,
                             class_names=explanation.class_names)
        os.makedirs(folder, exist_ok=True)
        save_figure(fig, path)
        return path
