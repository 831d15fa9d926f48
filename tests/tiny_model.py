"""The tiny multi-stream model with active task attention, as after stage-2 training (shared by fixtures)."""


def tiny_with_active_task_attention():  # noqa: ANN201
    """Random tiny multi-stream model whose task-attention outputs are non-zero, so multi-stream != single."""
    import torch

    from stablemtl_edge.model.stablemtl import StableMTL

    model = StableMTL.from_preset("tiny", multi_stream=True, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for ta in model.main.task_attention:
            ta.to_out_task.weight.copy_(torch.randn(ta.to_out_task.weight.shape, generator=g) * 0.2)
            ta.to_out_task.bias.copy_(torch.randn(ta.to_out_task.bias.shape, generator=g) * 0.2)
    return model
