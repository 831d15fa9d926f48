"""The runtime imports and runs a real artifact in a process where torch, diffusers and transformers fail."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from stablemtl_edge.artifact.manifest import Mode
from tests.runtime.artifact_zoo import ToyModel

BLOCKED = ("torch", "torchvision", "diffusers", "transformers", "accelerate", "safetensors.torch")

BLOCKER = f'''
import importlib.abc
import sys

BLOCKED = {BLOCKED!r}


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"{{name}} is blocked: the runtime must not import it")
        return None


sys.meta_path.insert(0, _Blocker())
'''

SCRIPT = textwrap.dedent(
    """
    import sys
    try:
        import torch
    except ImportError as e:
        assert "blocked" in str(e), e
    else:
        raise SystemExit("the blocker did not block torch")
    import numpy as np
    import stablemtl_edge.runtime as runtime
    from stablemtl_edge.runtime import Runtime

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (50, 90, 3), dtype=np.uint8) for _ in range(2)]
    with Runtime.from_artifacts(sys.argv[1], tasks="all", mode="multi") as rt:
        res = [rt.infer(f, layout="bgr") for f in frames]
        pred = rt.predict(frames[0], frames[1])
    assert set(res[1].predictions) == set(rt.tasks) and res[1]["depth"].shape == (50, 90)
    assert set(pred) == set(rt.tasks)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in {blocked})
    assert not loaded, loaded
    print("OK", rt.counters["unet_rows"], rt.counters["unet_main_rows"])
    """
).replace("{blocked}", repr({b.split(".")[0] for b in BLOCKED if "." not in b}))


def test_runtime_runs_where_torch_cannot_be_imported(tmp_path):
    artifact = ToyModel().write(tmp_path / "artifact", Mode.MULTI)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(artifact)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # frame 0: 7 auxiliary + 5 main rows (no flows yet), frame 1: 7 + 7, predict: 7 + 7
    assert proc.stdout.split() == ["OK", "21", "19"]
