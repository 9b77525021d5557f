"""Training: datasets as tensors, batching, losses and metrics, the trainer, data parallelism."""
