"""``agcam explain IMAGE ... --model <image-text model> --text PROMPT ...``: explain text prompts.

The model (``hf:<CLIP repo>``, ``open_clip:<arch>/<pretrained>``, ``clip_agcam_learnt``, or
``--checkpoint DIR``) becomes the zero-shot classifier of the prompts
(:func:`agcam.clip.zero_shot`);
every image is explained for every prompt by every ``--method``: one PNG per image, prompt and
method (``<image stem>_<method>_p<i>.png``, ``i`` the prompt's position), titled with the prompt
and its probability (the softmax of the image-text logits over the prompts given, CLIP's
zero-shot probability). The probabilities are printed per image.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Sequence

from agcam.cli.common import (
    UsageError,
    check_out_dir,
    report_pngs,
    resolve_device,
    resolve_methods,
    typed,
)


def prompt_title(prompt: str, probability: float) -> str:
    """The figure title of a prompt: ``"a red circle": 93.1%``."""
    return f'"{prompt[:60]}": {probability:.1%}'


def explain_prompts(args: argparse.Namespace, names: Sequence[str]) -> int:
    """The ``--text`` run of ``agcam explain`` (``names``: one output stem per image)."""
    import torch
    from tqdm import tqdm

    from agcam.clip import prompt_classifier
    from agcam.figures.heatmaps import explain_heatmaps
    from agcam.figures.plotting import explanation_figure, save_figure
    from agcam.registry import get_explainer
    from models.clip import is_clip_name
    from models.vit import ModelError, build_transform, load_image

    prompts = [p.strip() for p in args.text]
    if not all(prompts):
        raise UsageError("--text: a prompt is empty")
    if args.target is not None:
        raise UsageError("--target: with --text the prompts are the classes; drop --target")
    if args.checkpoint is None and not is_clip_name(args.model):
        raise UsageError(f"--model {args.model}: --text needs an image-text model "
                         "(hf:<CLIP repo>, open_clip:<arch>/<pretrained>, clip_agcam_learnt, "
                         "or --checkpoint DIR)")
    methods = resolve_methods(args.method, args.precision, typed(args, "method"))
    try:
        model = prompt_classifier(args.model, prompts, checkpoint=args.checkpoint,
                                  device=resolve_device(args.device))
    except ModelError as exc:
        raise UsageError(str(exc)) from None
    explainers = {m: get_explainer(m, model, precision=args.precision) for m in methods}
    transform = build_transform(model)
    check_out_dir(args)
    failed: List[str] = []
    written = 0
    device = next(model.parameters()).device
    for path, name in tqdm(list(zip(args.images, names)), unit="image",
                           disable=len(names) < 2, file=sys.stderr):
        try:
            image = load_image(path)
        except Exception as exc:  # missing, not an image, truncated, too large, ...
            failed.append(path)
            tqdm.write(f"error: {path}: cannot read the image ({type(exc).__name__}: {exc})",
                       file=sys.stderr)
            continue
        images = transform(image)[None].to(device)
        with torch.no_grad():
            probs = model(images).float().softmax(dim=1)[0].cpu()
        tqdm.write(path + "".join(f"\n  {prompt_title(p, float(q))}"
                                  for p, q in zip(prompts, probs)))
        try:
            for index, prompt in enumerate(prompts):
                for method in methods:
                    heatmap = explain_heatmaps(explainers[method], images, index)[1][0]
                    fig = explanation_figure(
                        image, heatmap, method, index, args.threshold,
                        title=f"{os.path.basename(path)}\n"
                              f"{prompt_title(prompt, float(probs[index]))}",
                        num_classes=len(prompts), class_names=prompts)
                    save_figure(fig, os.path.join(args.out, f"{name}_{method}_p{index}.png"))
                    written += 1
        except OSError as exc:
            failed.append(path)
            tqdm.write(f"error: {path}: cannot write its PNG to {args.out} ({exc})",
                       file=sys.stderr)
    return report_pngs(written, args.out, failed, len(names))
