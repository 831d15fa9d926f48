"""The reference StableMTL model and predictor (torch): the ground truth every artifact is compared to.

``StableMTL`` owns the VAE, the single-stream / auxiliary UNet and, for a multi-stream model, the main
UNet. ``predict`` takes uint8 RGB frames at a processing size (a multiple of 64 pixels) and returns the
decoded per-task predictions in the units of :mod:`stablemtl_edge.tasks` codecs. The runtime adds
letterboxing to camera sizes on top of exactly this computation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from ..config import UNET_DOWNSAMPLE, VAE_DOWNSAMPLE, ModelPreset, get_preset
from ..errors import StableMTLError
from ..artifact.manifest import Mode
from ..tasks import TASKS, TaskSpec, parse_tasks
from .embeddings import pseudo_task_embeddings
from .multistream import MainStreamUNet, auxiliary_tasks, stack_features
from .unet import TaskUNet, build_unet
from .vae import LatentVAE, build_vae

__all__ = ["StableMTL", "frames_to_tensor", "unet_input"]


def frames_to_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 RGB ``[B, H, W, 3]`` (or ``[H, W, 3]``) -> float ``[B, 3, H, W]`` in [-1, 1]."""
    x = torch.as_tensor(frames)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise StableMTLError(f"frames must be uint8 RGB of shape (H, W, 3) or (B, H, W, 3), got {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def unet_input(z1: torch.Tensor, z2: torch.Tensor | None = None) -> torch.Tensor:
    """``[z(frame1), z(frame2 or frame1 again), zeros(4)]`` -> ``[B, 12, h, w]``; the order matters."""
    return torch.cat([z1, z1 if z2 is None else z2, torch.zeros_like(z1)], dim=1)


def _check_second(first, second, tasks: tuple[TaskSpec, ...], names: tuple[str, str], what: str) -> None:
    """The second input (frame or latent) has the first's shape, and is there when a flow task needs it."""
    if second is not None and tuple(second.shape) != tuple(first.shape):
        raise StableMTLError(f"`{names[1]}` {tuple(second.shape)} must have the shape of `{names[0]}` "
                             f"{tuple(first.shape)}")
    if second is None and any(t.frames == 2 for t in tasks):
        flows = ", ".join(t.key for t in tasks if t.frames == 2)
        raise StableMTLError(f"{flows} need(s) `{names[1]}` ({what})")


class StableMTL(nn.Module):
    """VAE + task UNet (+ main stream): the full single-step multi-task model.

    Args:
        preset: architecture.
        vae: latent codec.
        unet: single-stream UNet; in a multi-stream model it is the frozen auxiliary stream.
        main: the main stream of a multi-stream model, or None.
    """

    def __init__(self, preset: ModelPreset, vae: LatentVAE, unet: TaskUNet, main: MainStreamUNet | None = None) -> None:
        super().__init__()
        self.preset = preset
        self.vae = vae
        self.unet = unet
        self.main = main
        self.unet.install_feature_taps()
        self.counters: Counter[str] = Counter()
        self.source: dict = {}

    @classmethod
    def from_preset(cls, preset: str | ModelPreset, multi_stream: bool = False, seed: int = 0) -> StableMTL:
        """A randomly initialised model (diffusers' initialisation, seeded) with pseudo task embeddings."""
        preset = get_preset(preset)
        torch.manual_seed(seed)
        table, lengths = pseudo_task_embeddings(preset)
        model = cls(preset, LatentVAE(build_vae(preset)), TaskUNet(build_unet(preset), table, lengths))
        if multi_stream:
            model.add_main_stream()
        return model.eval()

    @classmethod
    def skeleton(
        cls, preset: str | ModelPreset, task_embeddings: torch.Tensor, task_lengths: torch.Tensor,
        multi_stream: bool = False,
    ) -> StableMTL:
        """The model laid out without weights (``meta`` tensors), to be filled with ``load_state_dict(assign=True)``.

        Loading weights into a randomly initialised model holds them twice and spends the time to draw them;
        filling a skeleton makes the file's own tensors the parameters. Only the task conditioning, which
        derives non-persistent buffers, is built for real.
        """
        preset = get_preset(preset)
        with torch.device("meta"):
            vae, unet = build_vae(preset), build_unet(preset)
        model = cls(preset, LatentVAE(vae), TaskUNet(unet, task_embeddings, task_lengths))
        if multi_stream:
            with torch.device("meta"):
                main_unet = build_unet(preset)
            conditioned = TaskUNet(main_unet, task_embeddings, task_lengths)
            with torch.device("meta"):
                model.main = MainStreamUNet(conditioned, preset)
        return model

    def add_main_stream(self) -> MainStreamUNet:
        """Start stage 2: a main stream initialised from the single-stream weights, zero task attention."""
        copy = TaskUNet(build_unet(self.preset), self.unet.task_embeddings, self.unet.task_lengths)
        copy.load_state_dict(self.unet.state_dict())
        self.main = MainStreamUNet(copy, self.preset)
        return self.main

    @property
    def multi_stream(self) -> bool:
        return self.main is not None

    # -- tensor level ------------------------------------------------------------------------------------
    def encode(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 RGB frames ``[B, H, W, 3]`` -> latents ``[B, 4, H/8, W/8]``."""
        x = frames_to_tensor(frames).to(self.device)
        self.counters["encoder_rows"] += x.shape[0]
        return self.vae.encode(x)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self.counters["decoder_rows"] += latents.shape[0]
        return self.vae.decode(latents)

    def run_single(self, samples: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        self.counters["unet_rows"] += samples.shape[0]
        return self.unet(samples, task_ids)

    def run_auxiliary(self, samples: torch.Tensor, task_ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self.counters["unet_rows"] += samples.shape[0]
        return self.unet(samples, task_ids, return_features=True)

    def run_main(
        self,
        samples: torch.Tensor,
        task_ids: torch.Tensor,
        aux_features: list[torch.Tensor] | None,
        task_attention: bool = True,
    ) -> torch.Tensor:
        if self.main is None:
            raise StableMTLError("this model is single-stream: it has no main stream for `mode=multi`")
        self.counters["unet_main_rows"] += samples.shape[0]
        return self.main(samples, task_ids, aux_features, task_attention)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- predictor ---------------------------------------------------------------------------------------
    def check_frames(self, frame1: np.ndarray, frame2: np.ndarray | None, tasks: tuple[TaskSpec, ...]) -> None:
        step = VAE_DOWNSAMPLE * UNET_DOWNSAMPLE
        for name, f in (("frame1", frame1), ("frame2", frame2)):
            if f is None:
                continue
            if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
                raise StableMTLError(f"`{name}` must be uint8 RGB (H, W, 3), got {f.dtype} {f.shape}")
            if f.shape[0] % step or f.shape[1] % step:
                raise StableMTLError(
                    f"`{name}` is {f.shape[1]}x{f.shape[0]}: the reference predictor needs a multiple of "
                    f"{step} pixels (the runtime letterboxes camera frames for you)"
                )
        _check_second(frame1, frame2, tasks, ("frame1", "frame2"), "the next frame")

    def check_latents(self, z1: torch.Tensor, z2: torch.Tensor | None, tasks: tuple[TaskSpec, ...]) -> None:
        channels = self.unet.unet.config.in_channels // 3
        for name, z in (("z1", z1), ("z2", z2)):
            if z is None:
                continue
            if z.ndim != 4 or z.shape[0] != 1 or z.shape[1] != channels or not z.is_floating_point():
                raise StableMTLError(f"`{name}` must be one float latent [1, {channels}, h, w], got {z.dtype} "
                                     f"{tuple(z.shape)}")
            if z.shape[2] % UNET_DOWNSAMPLE or z.shape[3] % UNET_DOWNSAMPLE:
                raise StableMTLError(f"`{name}` is {z.shape[3]}x{z.shape[2]} latent cells: the UNet needs a multiple "
                                     f"of {UNET_DOWNSAMPLE} on each side")
        _check_second(z1, z2, tasks, ("z1", "z2"), "the next frame's latent")

    @torch.no_grad()
    def predict_from_latents(
        self,
        z1: torch.Tensor,
        z2: torch.Tensor | None = None,
        tasks: str | Iterable[str] | None = None,
        mode: Mode | str = Mode.SINGLE,
        task_attention: bool = True,
    ) -> tuple[tuple[TaskSpec, ...], torch.Tensor]:
        """The UNet schedule on given latents: ``(tasks, latents [k, 4, h, w])``, at any latent size the UNet takes.

        The entry for debugging an import or a training run without the VAE in the way: feed the latents
        another implementation encoded, compare the latents it predicts.

        Args:
            z1: the frame's latent ``[1, 4, h, w]`` (VAE posterior mean times the scale), h and w multiples of 8.
            z2: the next frame's latent, needed by the flow tasks.
            tasks: task keys (default: all seven).
            mode: ``single`` or ``multi`` (shared auxiliary passes + main stream).
            task_attention: multi-stream only: False runs the main stream without its task-attention branch
                (and without the auxiliary passes it would read).
        """
        specs = parse_tasks(tasks)
        mode = Mode.parse(mode, "mode")
        self.check_latents(z1, z2, specs)
        z1 = z1.to(self.device, torch.float32)
        z2 = None if z2 is None else z2.to(self.device, torch.float32)

        def sample(task: TaskSpec) -> torch.Tensor:
            return unet_input(z1, z2 if task.frames == 2 else None)

        ids = torch.tensor([t.index for t in specs], device=self.device)
        samples = torch.cat([sample(t) for t in specs])  # [k, 12, h, w]
        if mode is Mode.SINGLE:
            if not task_attention:
                raise StableMTLError("`task_attention=False` switches a main-stream branch off: use mode `multi`")
            return specs, self.run_single(samples, ids)
        if not task_attention:
            return specs, self.run_main(samples, ids, None, task_attention=False)

        aux = auxiliary_tasks(ids.tolist())
        aux_samples = torch.cat([sample(TASKS[a]) for a in aux])  # [6 or 7, 12, h, w]
        _, feats = self.run_auxiliary(aux_samples, torch.tensor(aux, device=self.device))
        per_task = {a: [f[i : i + 1] for f in feats] for i, a in enumerate(aux)}
        stacked = stack_features(per_task, [f[:1] for f in feats])  # 16 x [1, 7, N, C]
        shared = [f.expand(len(specs), *f.shape[1:]) for f in stacked]
        return specs, self.run_main(samples, ids, shared)

    @torch.no_grad()
    def predict_latents(
        self,
        frame1: np.ndarray,
        frame2: np.ndarray | None = None,
        tasks: str | Iterable[str] | None = None,
        mode: Mode | str = Mode.SINGLE,
        task_attention: bool = True,
    ) -> tuple[tuple[TaskSpec, ...], torch.Tensor]:
        """Encode, run the UNet schedule (:meth:`predict_from_latents`) and return ``(tasks, latents [k, 4, h, w])``."""
        specs = parse_tasks(tasks)
        self.check_frames(frame1, frame2, specs)
        frames = np.stack([frame1] if frame2 is None else [frame1, frame2])
        z = self.encode(frames)  # [1 or 2, 4, h, w]
        return self.predict_from_latents(z[:1], z[1:] if frame2 is not None else None, specs, mode, task_attention)

    @torch.no_grad()
    def predict(
        self,
        frame1: np.ndarray,
        frame2: np.ndarray | None = None,
        tasks: str | Iterable[str] | None = None,
        mode: Mode | str = Mode.SINGLE,
    ) -> dict[str, np.ndarray]:
        """Decoded predictions per task key, at the frames' resolution.

        Args:
            frame1: uint8 RGB ``(H, W, 3)``, H and W multiples of 64.
            frame2: the next frame, needed by the flow tasks.
            tasks: task keys (default: all seven).
            mode: ``single`` (one pass per task) or ``multi`` (shared auxiliary passes + main stream).
        """
        specs, latents = self.predict_latents(frame1, frame2, tasks, mode)
        images = self.decode(latents).permute(0, 2, 3, 1).cpu().numpy()  # [k, H, W, 3]
        return {t.key: t.codec.decode(img) for t, img in zip(specs, images)}
