"""Training: datasets (procedural and real formats), task-isolating sampler, loss, trainer."""
