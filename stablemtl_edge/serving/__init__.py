"""Serving an artifact from NVIDIA Triton Inference Server.

``contract`` names the tensors of the ``stablemtl`` frame model (shared by the generator, the model and the
runtime's ``triton`` backend); ``triton_repository`` writes a model repository from a manifest;
``triton_model`` is the Python-backend model that Triton loads. Nothing here imports torch; only
``triton_model`` imports the runtime, and only the server runs it.
"""
