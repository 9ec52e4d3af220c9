"""The exact DINOv2-with-registers conversion (models/transformers.py): a float32 checkpoint,
converted and run in float64, equals transformers' own float64 run of the same weights to
rounding (the class token's position is added at run time, in the run's dtype; the registers get
zero positions), where folding ``pos[:, 0]`` into the class token in float32 left 6e-8."""
from __future__ import annotations

import torch

from models.transformers import from_transformers
from tests.helpers import relative_error


def tiny_dinov2_registers():
    import transformers
    torch.manual_seed(3)
    config = transformers.Dinov2WithRegistersConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_register_tokens=3, num_labels=5)
    model = transformers.Dinov2WithRegistersForImageClassification(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def test_float32_registers_checkpoint_runs_exactly_in_float64():
    hf32 = tiny_dinov2_registers()
    assert hf32.dtype == torch.float32
    model = from_transformers(hf32).double()            # converted from the float32 weights
    hf64 = hf32.double()
    assert model.num_prefix_tokens == 4 and not model.no_embed_class
    assert model.pos_embed.shape[1] == 4 + 16
    assert torch.equal(model.pos_embed[0, 1:4], torch.zeros_like(model.pos_embed[0, 1:4]))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        expected = hf64(pixel_values=x, output_hidden_states=True)
        tokens = model.forward_features(x)
        logits = model(x)
    # the embedding (class token + position, registers, patches) and the logits
    with torch.no_grad():
        embedded = model._pos_embed(model.patch_embed(x))
    assert relative_error(embedded, expected.hidden_states[0]) <= 1e-15
    assert relative_error(logits, expected.logits) <= 1e-12
    assert relative_error(tokens[:, 0], hf64.dinov2_with_registers(pixel_values=x)
                          .last_hidden_state[:, 0].detach()) <= 1e-12
