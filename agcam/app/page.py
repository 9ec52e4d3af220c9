"""The page, laid out with Gradio (imported here only, when the page is built).

Left: the image (a shipped sample or an upload), the model (a name, a checkpoint on the server,
random weights), the methods, the box threshold, *Explain*. Right: one status line (what was
done, or what was refused and why), the top-5 classes with their probabilities, the class
explained (click another to see its maps), one ``agcam explain`` figure per method, *Save figure*
(every method in one PNG, offered for download).

Every handler turns :class:`~agcam.app.engine.AppError` into the status line and leaves the
server serving. The raw maps of what is shown are also in a hidden text field (JSON, exact), so a
browser test can compare them with ``get_explainer``'s.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
from typing import List, Optional, Sequence, Tuple

from agcam.app.engine import (
    DEFAULT_MODEL,
    AppError,
    Engine,
    Explanation,
    ModelSpec,
    list_samples,
    one_line,
    parse_prompts,
    zero_shot_available,
)
from agcam.registry import method_label, ordered_methods

#: the models offered in the list (any timm name, ``hf:<repo>`` or checkpoint may be typed)
MODEL_CHOICES = (DEFAULT_MODEL, "vit_base_patch16_224", "vit_small_patch16_224",
                 "deit_small_patch16_224")
#: the longest side of the preview image sent to the browser
PREVIEW_SIZE = 384
#: uploads larger than this are refused by Gradio before they reach the engine
MAX_UPLOAD = "100mb"
ERROR = "error: "
#: the map figures are 3:1 (image | overlay | boxes): gallery cells of that shape, not squares
CSS = "#agcam-maps .thumbnail-item { aspect-ratio: 3 / 1; }"

# ids the browser test finds the components by
IDS = dict(sample="agcam-sample", upload="agcam-upload", preview="agcam-preview",
           model="agcam-model", checkpoint="agcam-checkpoint", random="agcam-random",
           prompts="agcam-prompts",
           methods="agcam-methods", threshold="agcam-threshold", explain="agcam-explain",
           status="agcam-status", top="agcam-top", target="agcam-class", maps="agcam-maps",
           save="agcam-save", saved="agcam-saved", raw="agcam-raw")


def _preview(engine: Engine, path: Optional[str]):
    image, _ = engine.image(path)
    small = image.copy()
    small.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))
    return small


def _status(explanation: Explanation, what: str, timed: bool = True) -> str:
    done = [m for m in explanation.methods if m in explanation.heatmaps]
    text = (f"{explanation.spec.describe()}: {what} {explanation.class_label(explanation.target)}"
            f" by {', '.join(method_label(m) for m in done) or 'no method'}")
    if timed:
        text += f" in {explanation.seconds:.2f} s"
    if explanation.refused:
        text = ERROR + "; ".join(explanation.refused.values()) + " | " + text
    return text


class Page:
    """The handlers, bound to one :class:`Engine` (the Gradio wiring is :meth:`build`)."""

    def __init__(self, engine: Engine, samples: Sequence[Tuple[str, str]], out_dir: str,
                 default_model: str = DEFAULT_MODEL):
        self.engine = engine
        self.samples = list(samples)
        self.out_dir = out_dir
        self.default_model = default_model

    # -- handlers (plain Python: tested without a browser too) ----------------------------------
    def pick_image(self, path: Optional[str]):
        """A sample chosen or a file uploaded: the other input is cleared, the image previewed
        (or the one line saying why it cannot be)."""
        if not path:
            return None, None, ""
        try:
            return None, _preview(self.engine, path), f"image {os.path.basename(path)}"
        except AppError as exc:
            return None, None, ERROR + str(exc)

    def explain(self, upload, sample, model, checkpoint, random_weights, prompts, methods,
                threshold, progress=None):
        spec = ModelSpec(name=(model or "").strip(), checkpoint=(checkpoint or "").strip() or None,
                         pretrained=not random_weights, prompts=parse_prompts(prompts))
        return self._run(lambda: self.engine.explain(upload or sample, spec, methods or [],
                                                     progress=progress),
                         threshold, "class")

    def pick_class(self, view: Optional[Explanation], target, threshold, progress=None):
        if view is None:
            return self._failed("explain an image first; nothing explained")
        return self._run(lambda: self.engine.explain(view.image_path, view.spec, view.methods,
                                                     target=int(target), progress=progress),
                         threshold, "class")

    def redraw(self, view: Optional[Explanation], threshold):
        """The boxes at a new threshold, drawn from the maps the page holds (none recomputed)."""
        if view is None:
            return [], ""
        try:
            return self._gallery(view, threshold), \
                _status(view, f"boxes at {float(threshold):g} redrawn (maps kept) for", False)
        except AppError as exc:
            return [], ERROR + str(exc)

    def save(self, view: Optional[Explanation], threshold):
        if view is None:
            return None, ERROR + "nothing to save: explain an image first"
        try:
            path = self.engine.save(view, float(threshold), self.out_dir)
        except AppError as exc:
            return None, ERROR + str(exc)
        except OSError as exc:
            return None, ERROR + f"cannot write the figure to {self.out_dir} ({exc})"
        return path, f"saved {path}"

    def _gallery(self, view: Explanation, threshold) -> List[Tuple[object, str]]:
        return self.engine.render(view, float(threshold))

    def _run(self, compute, threshold, what: str):
        try:
            view = compute()
            gallery = self._gallery(view, threshold)
        except AppError as exc:
            return self._failed(f"{exc}; nothing explained")
        except Exception as exc:     # a bug: one line on the page, the traceback in the log
            traceback.print_exc(file=sys.stderr)
            return self._failed(f"internal error ({type(exc).__name__}: {one_line(exc)}); "
                                "nothing explained")
        top = {view.class_label(i): p for i, p in view.top}
        choices = [(f"{view.class_label(i)}  {p:.1%}", str(i)) for i, p in view.top]
        return (_status(view, f"maps of {what}"), gallery, top, (choices, str(view.target)),
                json.dumps(view.as_json()), view)

    def _failed(self, message: str):
        return ERROR + message, [], None, ([], None), "", None

    # -- the Gradio page ------------------------------------------------------------------------
    def build(self):
        """The :class:`gradio.Blocks` page."""
        import gradio as gr

        def targets(result):
            status, gallery, top, (choices, value), raw, view = result
            return status, gallery, top, gr.update(choices=choices, value=value), raw, view

        def explain(upload, sample, model, checkpoint, random_weights, prompts, methods,
                    threshold, progress=gr.Progress()):
            return targets(self.explain(upload, sample, model, checkpoint, random_weights,
                                        prompts, methods, threshold, _progress(progress)))

        def pick_class(view, target, threshold, progress=gr.Progress()):
            return targets(self.pick_class(view, target, threshold, _progress(progress)))

        def save(view, threshold):
            path, status = self.save(view, threshold)
            return gr.update(value=path, visible=path is not None), status

        with gr.Blocks(title="AGCAM: explanations of a ViT") as page:
            gr.Markdown("## Attention Guided CAM: explain a Vision Transformer's decision\n"
                        "Pick or upload an image, pick a model, tick methods, *Explain*. "
                        "Click a class to see its maps; the threshold redraws the boxes.")
            view = gr.State(None)
            with gr.Row():
                with gr.Column(scale=1):
                    sample = gr.Dropdown(choices=self.samples, value=None, label="sample image",
                                         elem_id=IDS["sample"])
                    upload = gr.File(label="or upload an image", type="filepath",
                                     elem_id=IDS["upload"])
                    preview = gr.Image(label="image", type="pil", format="png",
                                       interactive=False, height=240, elem_id=IDS["preview"])
                    clip = ("clip_agcam_learnt",) if zero_shot_available() else ()
                    model = gr.Dropdown(choices=list(dict.fromkeys((self.default_model,)
                                                                   + MODEL_CHOICES + clip)),
                                        value=self.default_model, allow_custom_value=True,
                                        label="model: a timm name, hf:<repo>, or the "
                                              "architecture of a state-dict checkpoint",
                                        elem_id=IDS["model"])
                    checkpoint = gr.Textbox(label="checkpoint on the server (a Hugging Face "
                                                  "folder or a .pth/.safetensors file; optional)",
                                            elem_id=IDS["checkpoint"])
                    random_weights = gr.Checkbox(label="random weights (no download)",
                                                 value=False, elem_id=IDS["random"])
                    if zero_shot_available():
                        prompts = gr.Textbox(label="prompts, for an image-text model (clip_agcam"
                                                   "_learnt, hf:<CLIP repo>, open_clip:<arch>/<"
                                                   "tag>): one per line, or comma-separated; "
                                                   "class i is prompt i", lines=2,
                                             elem_id=IDS["prompts"])
                    else:
                        prompts = gr.Textbox(label="prompts: image-text models need "
                                                   "agcam.clip, which this version lacks",
                                             interactive=False, elem_id=IDS["prompts"])
                    methods = gr.CheckboxGroup(choices=list(ordered_methods()), value=["agcam"],
                                               label="methods", elem_id=IDS["methods"])
                    threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="box threshold",
                                          elem_id=IDS["threshold"])
                    run = gr.Button("Explain", variant="primary", elem_id=IDS["explain"])
                with gr.Column(scale=2):
                    status = gr.Textbox(label="status", interactive=False, lines=1, max_lines=2,
                                        elem_id=IDS["status"])
                    top = gr.Label(num_top_classes=5, label="top-5 classes",
                                   elem_id=IDS["top"])
                    target = gr.Radio(choices=[], label="class explained (click another to see "
                                                        "its maps)", elem_id=IDS["target"])
                    gallery = gr.Gallery(label="maps", columns=1, format="png", height="auto",
                                         object_fit="contain", elem_id=IDS["maps"])
                    save_button = gr.Button("Save figure", elem_id=IDS["save"])
                    saved = gr.File(label="saved figure", visible=False, interactive=False,
                                    elem_id=IDS["saved"])
                    raw = gr.Textbox(label="raw maps (JSON)", visible="hidden",
                                     elem_id=IDS["raw"])

            sample.input(self.pick_image, [sample], [upload, preview, status],
                         api_name="pick_sample")
            upload.upload(self.pick_image, [upload], [sample, preview, status],
                          api_name="pick_upload")
            outputs = [status, gallery, top, target, raw, view]
            run.click(explain, [upload, sample, model, checkpoint, random_weights, prompts,
                                methods, threshold], outputs, api_name="explain")
            target.input(pick_class, [view, target, threshold], outputs, api_name="pick_class")
            threshold.change(self.redraw, [view, threshold], [gallery, status],
                             trigger_mode="always_last", api_name="redraw")
            save_button.click(save, [view, threshold], [saved, status], api_name="save")
        return page


def _progress(progress):
    return lambda fraction, text: progress(fraction, desc=text)


def serve(engine: Engine, host: str = "127.0.0.1", port: Optional[int] = None,
          samples_dir: Optional[str] = None, out_dir: Optional[str] = None,
          default_model: str = DEFAULT_MODEL):
    """Build the page and start serving it on ``host:port`` (``port`` ``None``: Gradio's first
    free one from 7860) in a thread; returns the running :class:`gradio.Blocks` (its
    ``local_url``; ``block_thread()`` waits until Ctrl+C, ``close()`` stops it)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from agcam.app.engine import SAMPLES_DIR
    samples_dir = samples_dir or SAMPLES_DIR
    out_dir = out_dir or os.path.join(tempfile.gettempdir(), "agcam-app")
    page = Page(engine, list_samples(samples_dir), out_dir, default_model).build()
    page.queue(default_concurrency_limit=1)
    allowed = [d for d in (samples_dir, out_dir) if d]
    page.launch(server_name=host, server_port=port, prevent_thread_lock=True,
                allowed_paths=allowed, max_file_size=MAX_UPLOAD, quiet=True,
                footer_links=[], css=CSS)
    return page
