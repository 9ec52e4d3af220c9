"""``vit_agcam_learnt``: a small ViT trained here on the synthetic shapes (weights committed).

The one model this project can run offline whose maps mean something: trained from scratch by
``agcam train-learnt`` on :mod:`agcam.datasets.synthetic` (8 classes, shape x
texture, on cluttered backgrounds), weights in ``models/weights/vit_agcam_learnt.safetensors``
(float16; the training log with its measured accuracy and time beside it, ``.json``).

Architecture: timm's ``VisionTransformer`` (registered on top of it, not copied), 112 px input,
16 px patches (a 7 x 7 grid), one class token, embedding 128, 5 blocks of 4 heads, MLP ratio 3.
Its ``pretrained_cfg`` carries the input size, the mean and std (0.5, the paper's) and the local
file, so timm's own pretrained mechanism loads the committed weights without a network:

    create_model("vit_agcam_learnt")                          # the committed weights
    python localization.py --model vit_agcam_learnt --dataset synthetic \
        --data_root samples/synthetic/ILSVRC
    --model vit_agcam_learnt --checkpoint other.safetensors   # other weights of the same shape

Class ``i`` is ``agcam.datasets.synthetic.CLASSES[i]`` (the held-out set stores it under the
``i``-th sorted ImageNet wnid, so the ILSVRC reader gives label ``i``).
"""
from __future__ import annotations

import os

from timm.models import generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, _cfg, _create_vision_transformer

LEARNT_MODEL = "vit_agcam_learnt"
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
#: the committed weights (float16 safetensors)
LEARNT_WEIGHTS = os.path.join(WEIGHTS_DIR, f"{LEARNT_MODEL}.safetensors")
#: the training log written with them (arguments, time, machine load, accuracy)
LEARNT_LOG = os.path.join(WEIGHTS_DIR, f"{LEARNT_MODEL}.json")
#: the class names, output i first (those of agcam.datasets.synthetic.CLASSES; a test keeps the
#: two equal: models/ imports nothing of agcam)
LEARNT_LABEL_NAMES = ("red plain", "red striped", "yellow plain", "yellow striped", "green plain",
                      "green striped", "blue plain", "blue striped")
LEARNT_NUM_CLASSES = len(LEARNT_LABEL_NAMES)
LEARNT_INPUT_SIZE = 112

#: the architecture (timm ``VisionTransformer`` keyword arguments)
LEARNT_ARCH = dict(img_size=LEARNT_INPUT_SIZE, patch_size=16, embed_dim=128, depth=5,
                   num_heads=4, mlp_ratio=3.0, qkv_bias=True)

default_cfgs = generate_default_cfgs({
    LEARNT_MODEL: _cfg(file=LEARNT_WEIGHTS, num_classes=LEARNT_NUM_CLASSES,
                       input_size=(3, LEARNT_INPUT_SIZE, LEARNT_INPUT_SIZE), crop_pct=1.0,
                       interpolation="bilinear", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                       label_names=LEARNT_LABEL_NAMES),
})


@register_model
def vit_agcam_learnt(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """The learnt model (module docstring); ``pretrained`` loads the committed weights."""
    return _create_vision_transformer(LEARNT_MODEL, pretrained=pretrained,
                                      **dict(LEARNT_ARCH, **kwargs))
