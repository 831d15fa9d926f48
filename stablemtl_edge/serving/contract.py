"""The wire contract of the ``stablemtl`` model: tensor names, types and their meaning.

The model is stateful over a Triton *sequence* (one camera stream; Triton's sequence batcher keeps a
stream on one model instance). It runs the artifact's :class:`~stablemtl_edge.artifact.schedule.Scheduler`,
so it speaks at the network resolution: letterboxing a camera frame in and decoding the task images out
stay with the caller, as with any Triton model (Isaac ROS puts them in its encoder and decoder nodes).

Inputs (no batch dimension, ``max_batch_size: 0``; settings are numbers, not strings, so that every
client and the Python backend's stub under numpy 2 read them alike):

- ``FRAME1`` uint8 ``[H, W, 3]``: RGB at the manifest's processing size (left out only by the request
  that ends a stream without a frame: it releases the stream's state, so the server drains at once);
- ``FRAME2`` uint8 ``[H, W, 3]``, optional: the next frame, for flow tasks of a one-request sequence;
- ``TASK_IDS`` int32 ``[k]``, optional: the tasks, as canonical indices (the graphs' ``task_id``;
  default all seven);
- ``MODE`` int32 ``[1]``, optional: 0 single-stream, 1 multi-stream (default the artifact's mode);
- ``RATES`` int32 ``[7]``, optional: run task i every ``RATES[i]``-th frame (1 = every frame);
- ``AUX_REUSE`` int32 ``[1]``, optional: recompute the auxiliary features every n-th frame;
- the control tensors ``START``, ``END`` (int32 0/1) and ``CORRID`` (uint64), filled by Triton from the
  request's sequence flags; settings are read on a sequence's first request.

A request that starts and ends its sequence is stateless (every requested task on ``FRAME1``, flows on
``FRAME1 -> FRAME2``); inside a longer sequence each request is the stream's next frame (flows on the
previous frame and this one, task rates and auxiliary-feature reuse as in-process).

Outputs: one ``[3, H, W]`` tensor per task computed on this request, named by its task key, with the
decoder's image in [-1, 1] (float32, or float16 where the repository was generated with ``--wire float16``) (decode it with the task's codec, :mod:`stablemtl_edge.tasks`);
``FRAME_INDEX`` int64 ``[1]`` (the frame's index in its sequence) and ``STAGE_MS`` float32 ``[4]`` (time
spent in encoder, unet, unet_main and decoder on the server, milliseconds).
"""

from __future__ import annotations

from ..artifact.manifest import Component, Mode

__all__ = [
    "MODEL_NAME", "FRAME1", "FRAME2", "TASK_IDS", "MODE", "MODES", "RATES", "AUX_REUSE", "START", "END", "CORRID",
    "FRAME_INDEX", "STAGE_MS", "STAGES", "MANIFEST_SHA256", "PROTOCOL_VERSION",
]

MODEL_NAME = "stablemtl"
FRAME1, FRAME2 = "FRAME1", "FRAME2"
TASK_IDS, MODE, RATES, AUX_REUSE = "TASK_IDS", "MODE", "RATES", "AUX_REUSE"
MODES = (Mode.SINGLE, Mode.MULTI)  # the values of MODE
START, END, CORRID = "START", "END", "CORRID"
FRAME_INDEX, STAGE_MS = "FRAME_INDEX", "STAGE_MS"
STAGES = (Component.ENCODER, Component.UNET, Component.UNET_MAIN, Component.DECODER)  # order of STAGE_MS
#: Model-config parameter holding the served manifest's sha256: a client refuses a server that serves
#: another artifact than the manifest it letterboxes and decodes for.
MANIFEST_SHA256 = "manifest_sha256"
PROTOCOL_VERSION = "protocol_version"  # model-config parameter; bumped when this contract changes
