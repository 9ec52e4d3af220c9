"""The attention-exposing timm Vision Transformer that every explainer runs on, and model loading
(timm names and checkpoints, Hugging Face checkpoints, the learnt model)."""
from models import learnt  # noqa: F401  (registers vit_agcam_learnt with timm)
from models.attention import AttentionRecord, AttentionRecorder, AttentionRecordingError
from models.transformers import (
                                 ConversionError,
                                 from_transformers,
                                 load_timm_checkpoint,
                                 save_timm_checkpoint,
)
from models.vit import (
                                 DEFAULT_MODEL,
                                 ModelError,
                                 WeightsUnavailableError,
                                 build_transform,
                                 create_model,
                                 load_checkpoint,
                                 load_image,
                                 model_geometry,
)

__all__ = [
    "AttentionRecord",
    "AttentionRecorder",
    "AttentionRecordingError",
    "ConversionError",
    "DEFAULT_MODEL",
    "ModelError",
    "WeightsUnavailableError",
    "build_transform",
    "create_model",
    "from_transformers",
    "load_checkpoint",
    "load_image",
    "load_timm_checkpoint",
    "model_geometry",
    "save_timm_checkpoint",
]
