"""A zero-shot classifier from text prompts: what every method explains a prompt through.

``zero_shot(clip, ["a cat", "a dog"])`` encodes the prompts with the model's own tokenizer and
text tower and returns a copy of its image tower (the project's timm ViT) whose head maps the
image embedding onto the prompts: ``logits = logit_scale * normalize(image) @ normalize(text).T``,
CLIP's ``logits_per_image`` (:class:`models.clip.ZeroShotHead`; plus SigLIP's bias). Every
class-specific method then explains prompt ``i`` as class ``i``, with no special case::

    classifier = zero_shot(create_clip("clip_agcam_learnt"), ["red", "striped", "circle"])
    predictions, maps = get_explainer("agcam", classifier).explain(images, target=1)

``templates`` (``"a photo of a {}."``, ...) follow CLIP's zero-shot recipe: each prompt is put in
every template, the embeddings are normalised, averaged and normalised again.
:data:`CLIP_TEMPLATES` are the few the CLIP paper's notebook recommends for ImageNet.

For the evaluations: :func:`load_prompts` reads one prompt per class from a file (or, for
``--prompts classnames``, :func:`agcam.cli.common.class_name_prompts` puts the data set's class
names in a template) and :func:`prompt_classifier` turns a model name (or model) and the
prompts into the classifier.
"""
from __future__ import annotations

import copy
import os
from typing import Any, List, Optional, Sequence

from agcam.errors import UsageError

#: the seven ImageNet templates of OpenAI's "Prompt Engineering for ImageNet" notebook
CLIP_TEMPLATES = ("itap of a {}.", "a bad photo of the {}.", "a origami {}.",
                  "a photo of the large {}.", "a {} in a video game.", "art of the {}.",
                  "a photo of the small {}.")


def prompt_embeddings(model, prompts: Sequence[str], templates: Optional[Sequence[str]] = None):
    """``[P, E]`` normalised text embeddings of the prompts (each averaged over ``templates``,
    then normalised again, as CLIP's zero-shot recipe), in the model's dtype, no gradient."""
    import torch
    import torch.nn.functional as F
    with torch.no_grad():
        if not templates:
            return F.normalize(model.encode_text(list(prompts)), dim=-1)
        rows = []
        for prompt in prompts:
            texts = [t.format(prompt) if "{}" in t else f"{t} {prompt}" for t in templates]
            rows.append(F.normalize(F.normalize(model.encode_text(texts), dim=-1).mean(0), dim=0))
        return torch.stack(rows)


def zero_shot(model: Any, prompts: Sequence[str], templates: Optional[Sequence[str]] = None):
    """The zero-shot classifier of ``prompts``: a timm ViT (a copy of the image tower, eval mode,
    the model's dtype and device) whose logit ``i`` is CLIP's image-text logit of prompt ``i``.

    Args:
        model: a :class:`models.clip.ImageTextModel` (:func:`models.clip.create_clip`), a
            transformers ``CLIPModel`` or an open_clip model.
        prompts: one text per class.
        templates: optional ``"... {} ..."`` strings averaged per prompt (e.g.
            :data:`CLIP_TEMPLATES`).

    The result carries ``label_names`` (the prompts), ``num_classes`` and ``prompts``.
    """
    from models.clip import as_image_text
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = [str(p) for p in prompts]
    if not prompts:
        raise ValueError("zero_shot needs at least one prompt")
    clip = as_image_text(model)
    text = prompt_embeddings(clip, prompts, templates)
    return classifier_from_embeddings(clip.visual, text, clip.logit_scale, clip.logit_bias,
                                      prompts)


def classifier_from_embeddings(visual, text, logit_scale, logit_bias=None,
                               labels: Optional[Sequence[str]] = None):
    """The zero-shot classifier of an image tower (a timm ViT whose head is the projection) and
    ``[P, E]`` normalised text embeddings: a copy of the tower with a
    :class:`models.clip.ZeroShotHead` (``logit_scale * text``, the bias added)."""
    import torch

    from models.clip import ZeroShotHead
    classifier = copy.deepcopy(visual)
    scale = torch.as_tensor(logit_scale, dtype=text.dtype, device=text.device)
    bias = None if logit_bias is None else torch.as_tensor(logit_bias).detach()
    classifier.head = ZeroShotHead(classifier.head, (scale * text).detach(), bias)
    labels = list(labels) if labels is not None else [str(i) for i in range(len(text))]
    classifier.num_classes = len(text)
    classifier.label_names = labels
    classifier.prompts = labels
    cfg = dict(getattr(classifier, "pretrained_cfg", None) or {})
    classifier.pretrained_cfg = dict(cfg, num_classes=len(text), label_names=labels)
    return classifier.eval()


#: ``--prompts classnames`` (or ``classnames:TEMPLATE``): a prompt per class from the data set's
#: own class names (:func:`agcam.datasets.class_names`) put in a template
CLASS_NAMES = "classnames"
#: the template of ``--prompts classnames`` per data set (others: CLIP's "a photo of a {}.")
NAME_TEMPLATES = {"synthetic": "a {} shape"}
DEFAULT_TEMPLATE = "a photo of a {}."


def is_class_names(value: str) -> bool:
    """Whether a ``--prompts`` value asks for the data set's class names, not a file."""
    return value == CLASS_NAMES or value.startswith(CLASS_NAMES + ":")


def name_template(value: str, dataset: str, flag: str = "--prompts") -> str:
    """The template of ``classnames[:TEMPLATE]`` (checked: it holds one ``{}``)."""
    template = value.partition(":")[2] or NAME_TEMPLATES.get(dataset, DEFAULT_TEMPLATE)
    if template.count("{}") != 1:
        raise UsageError(f"{flag} {value}: the template must hold one {{}} where the class name "
                         "goes, e.g. classnames:'a photo of a {}.'")
    return template


def load_prompts(path: str, num_classes: Optional[int] = None, flag: str = "--prompts"
                 ) -> List[str]:
    """One prompt per class from a text file (one a line, blank lines and ``#`` lines skipped),
    class ``i`` on the ``i``-th; with ``num_classes``, the count must match the data set's.
    :class:`agcam.errors.UsageError` (one line naming the flag and file) otherwise."""
    if not os.path.isfile(path):
        raise UsageError(f"{flag} {path}: no such file")
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle]
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{flag} {path}: cannot read it ({exc})") from None
    prompts = [line for line in lines if line and not line.startswith("#")]
    if not prompts:
        raise UsageError(f"{flag} {path}: holds no prompt (one prompt per class, one a line)")
    if num_classes is not None and len(prompts) != num_classes:
        raise UsageError(f"{flag} {path}: {len(prompts)} prompts for a data set of "
                         f"{num_classes} classes (one prompt per class, one a line)")
    return prompts


def prompt_classifier(model: Any, prompts: Sequence[str], checkpoint: Optional[str] = None,
                      templates: Optional[Sequence[str]] = None, device=None):
    """The zero-shot classifier that the evaluations run: ``model`` a name for
    :func:`models.clip.create_clip` (``hf:<repo>``, ``open_clip:<arch>/<pretrained>``,
    ``clip_agcam_learnt``; ``checkpoint`` a folder) or an image-text model, and the prompts."""
    from models.clip import create_clip
    clip = create_clip(model, checkpoint=checkpoint) if isinstance(model, str) or model is None \
        else model
    classifier = zero_shot(clip, prompts, templates)
    return classifier if device is None else classifier.to(device)
