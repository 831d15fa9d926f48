"""The torch StableMTL model: task-conditioned UNet, task attention, multi-stream, VAE, checkpoints."""
