"""The class-token-only last block gives the model's own logits."""
from __future__ import annotations

import pytest
import torch

from models import create_model
from models.inference import _supports_class_token_path, class_token_logits


@pytest.mark.parametrize("name, supported", [("vit_agcam_tiny_patch16_224", True),
                                             ("deit3_small_patch16_224", True),
                                             ("deit_tiny_distilled_patch16_224", False)])
def test_class_token_logits_equal_the_forward(name, supported):
    torch.manual_seed(0)
    model = create_model(name, pretrained=False)
    images = torch.randn(2, 3, 224, 224)
    assert _supports_class_token_path(model) is supported
    with torch.inference_mode():
        expected = model(images)
        actual = class_token_logits(model, images)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
