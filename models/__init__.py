"""The attention-exposing timm Vision Transformer that every explainer runs on."""
from models import learnt  # noqa: F401  (registers vit_agcam_learnt with timm)
from models.attention import AttentionRecord, AttentionRecorder, AttentionRecordingError
from models.vit import (
    DEFAULT_MODEL,
    ModelError,
    WeightsUnavailableError,
    build_transform,
    create_model,
    load_checkpoint,
    model_geometry,
)

__all__ = [
    "AttentionRecord",
    "AttentionRecorder",
    "AttentionRecordingError",
    "DEFAULT_MODEL",
    "ModelError",
    "WeightsUnavailableError",
    "build_transform",
    "create_model",
    "load_checkpoint",
    "model_geometry",
]
