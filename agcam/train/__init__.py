"""Training: fine-tuning the paper's ViT on VOC and CUB (:mod:`.finetune`, ``agcam finetune``), and
the learnt model trained here from scratch on the synthetic shapes (:mod:`.learnt`)."""
