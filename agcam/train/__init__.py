"""Training: fine-tuning the paper's ViT on VOC and CUB (:mod:`.finetune`, ``agcam finetune``)."""
