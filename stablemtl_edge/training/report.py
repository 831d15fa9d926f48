"""The held-out report of a trained model and its release as a compact checkpoint.

The report scores a model on the procedural ``test`` (or ``val``) split, which never shares a scene with
training data, in single-stream and (for multi-stream models) multi-stream mode, next to the trivial
baseline of :func:`stablemtl_edge.eval.fit_trivial_baseline`. The baseline's constants are fitted on the
held-out labels themselves (the best constant there), so it is the strictest floor a constant can set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..eval import DEPTH_RANGES, EvalResult, TaskResult, delta_m, evaluate, fit_trivial_baseline, make_accumulator
from ..model.checkpoint import load_pretrained, save_pretrained
from ..model.stablemtl import StableMTL
from ..data.sample import Sample
from ..tasks import get_task
from ..data.procedural import DOMAIN_TASKS, Domain, procedural_split
from .validate import evaluate_model

__all__ = ["HeldoutReport", "heldout_samples", "latent_ceiling", "heldout_report", "release_model"]


def heldout_samples(split: str, per_domain: int, size: tuple[int, int]) -> list[Sample]:
    """``per_domain`` samples of each procedural domain, labelled with the domain's official task set."""
    out = []
    for domain in Domain:
        source = procedural_split(split, domain, size=size, length=per_domain, tasks=DOMAIN_TASKS[domain])
        out.extend(source[i] for i in range(per_domain))
    return out


@torch.no_grad()
def latent_ceiling(model: StableMTL, samples: list[Sample]) -> EvalResult:
    """Metrics of the ground truth after a round trip through the VAE (encode, decode, task codec).

    No UNet can do better than its VAE lets it: this is the ceiling of the latent space, and for a small
    VAE trained from scratch it says how much of a task's error is the autoencoder's.
    """
    accs = {}
    for s in samples:
        for key, label in s.labels.items():
            image, _ = s.encode(key)
            x = torch.from_numpy(image).permute(2, 0, 1)[None].to(model.device)
            rec = model.decode(model.vae.encode(x))[0].permute(1, 2, 0).cpu().numpy()
            if key not in accs:
                accs[key] = make_accumulator(key, DEPTH_RANGES.get(s.domain))
            accs[key].update(get_task(key).codec.decode(rec), label.value, label.valid)
    order = sorted(accs, key=lambda k: get_task(k).index)
    return EvalResult(benchmark="VAE round trip of the ground truth",
                      tasks={k: TaskResult(task=k, frames=accs[k].frames, metrics=accs[k].result()) for k in order})


@dataclass
class HeldoutReport:
    """Model results per mode, the trivial baseline, the VAE ceiling and the derived gains."""

    split: str
    frames: int
    results: dict[str, EvalResult]
    baseline: EvalResult
    ceiling: EvalResult | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def delta_m(self) -> dict[str, float]:
        """delta_m (%) of each mode over the baseline, and of multi over single."""
        out = {f"{mode}_vs_baseline": delta_m(r, self.baseline) for mode, r in self.results.items()}
        if "multi" in self.results and "single" in self.results:
            out["multi_vs_single"] = delta_m(self.results["multi"], self.results["single"])
        return out

    @property
    def markdown(self) -> str:
        modes = list(self.results)
        ceiling = self.ceiling is not None
        head = ("| task | metric | baseline | " + " | ".join(modes) + (" | multi vs single" if len(modes) == 2 else "")
                + (" | VAE ceiling" if ceiling else "") + " |")
        lines = [f"Held-out procedural `{self.split}` split, {self.frames} frames", "", head,
                 "|" + "---|" * (3 + len(modes) + (1 if len(modes) == 2 else 0) + int(ceiling))]
        for task, base in self.baseline.tasks.items():
            row = [task, base.main_metric + (" (higher better)" if _higher(base) else " (lower better)"),
                   f"{base.main_value:.4f}"]
            values = [self.results[m][task].main_value for m in modes]
            row += [f"{v:.4f}" for v in values]
            if len(modes) == 2:
                rel = (values[1] - values[0]) / abs(values[0]) * 100 if values[0] else math.nan
                rel = rel if _higher(base) else -rel
                row.append(f"{rel:+.1f}%")
            if ceiling:
                row.append(f"{self.ceiling[task].main_value:.4f}" if task in self.ceiling.tasks else "-")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        lines += [f"delta_m {k.replace('_', ' ')}: {v:+.1f}%" for k, v in self.delta_m().items()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "frames": self.frames,
            "info": self.info,
            "results": {m: r.to_dict() for m, r in self.results.items()},
            "baseline": self.baseline.to_dict(),
            "vae_ceiling": self.ceiling.to_dict() if self.ceiling is not None else None,
            "main_metrics": {
                task: {"metric": base.main_metric, "baseline": base.main_value,
                       **{m: self.results[m][task].main_value for m in self.results},
                       **({"vae_ceiling": self.ceiling[task].main_value}
                          if self.ceiling is not None and task in self.ceiling.tasks else {})}
                for task, base in self.baseline.tasks.items()
            },
            "delta_m": self.delta_m(),
        }


def _higher(result) -> bool:
    from ..eval import higher_is_better

    return higher_is_better(result.task, result.main_metric)


def heldout_report(model: str | Path | StableMTL = "demo", split: str = "test", per_domain: int = 48) -> HeldoutReport:
    """Score a model (directory, bundled name or object) on the procedural held-out split."""
    if not isinstance(model, StableMTL):
        source = str(model)
        model = load_pretrained(model)
    else:
        source = model.source.get("checkpoint", "in-memory")
    samples = heldout_samples(split, per_domain, tuple(model.preset.resolution))
    modes = ("single", "multi") if model.multi_stream else ("single",)
    results = {m: evaluate_model(model, samples, m, benchmark=f"procedural-{split} ({m})", progress=True) for m in modes}
    baseline = evaluate(fit_trivial_baseline(samples), samples, benchmark=f"procedural-{split} (trivial baseline)",
                        progress=False)
    info = {"model": source, "preset": model.preset.name, "resolution": list(model.preset.resolution),
            "per_domain": per_domain, "baseline": "best constants fitted on the held-out labels"}
    return HeldoutReport(split=split, frames=len(samples), results=results, baseline=baseline,
                         ceiling=latent_ceiling(model, samples), info=info)


def release_model(model_dir: str | Path, output: str | Path, dtype: str = "fp16", overwrite: bool = False) -> Path:
    """Copy a trained model to ``output`` in the checkpoint format, stored in fp16 (or fp32).

    Loading casts back to fp32 (``load_pretrained``), so only storage shrinks.
    """
    model = load_pretrained(model_dir)
    extra = {k: v for k, v in model.source.items() if k not in ("checkpoint", "preset", "multi_stream")}
    extra["storage_dtype"] = dtype
    if dtype == "fp16":
        model = model.to(torch.float16)
    return save_pretrained(model, output, extra=extra, overwrite=overwrite)
