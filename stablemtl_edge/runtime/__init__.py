"""The torch-free runtime: backends, scheduler, streaming, visualisation, ROS 2 node.

Embedding it takes three lines::

    from stablemtl_edge.runtime import Runtime
    rt = Runtime.from_artifacts("artifacts/small", tasks=["depth", "normal"], mode="single")
    res = rt.infer(frame)        # res.predictions["depth"].value: (H, W) float32 in [0, 1]

Nothing here imports torch, diffusers or transformers; onnxruntime, TensorRT and CUDA are imported when a
runner is activated.
"""

from __future__ import annotations

from ..artifact.manifest import Mode, Precision
from .api import Runtime
from .backends import Backend
from .prediction import FrameResult, Prediction
from .preprocess import Layout

__all__ = ["Runtime", "Prediction", "FrameResult", "Mode", "Precision", "Backend", "Layout"]
