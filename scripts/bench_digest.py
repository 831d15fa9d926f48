#!/usr/bin/env python3
"""What checking a large external-data file costs at runtime start: full sha256 vs the digest cache.

Writes a file of --gib GiB (default 3.4, the official-size ``unet.onnx.data``), then times: a full hash,
a cached lookup of the unchanged file, and the re-hash after a same-size, same-mtime one-byte change.
Prints a Markdown table and writes JSON (--json). The page cache is warm for the full hash (the file was
just written); a cold read from flash is slower still, which only widens the ratio.

    .venv/bin/python scripts/bench_digest.py --gib 3.4 --json out/bench_digest.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from stablemtl_edge.artifact import digest


def _timed(fn) -> tuple[float, str]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=3.4, help="file size in GiB")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the file (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    size = int(args.gib * (1 << 30))
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        os.environ["STABLEMTL_EDGE_CACHE"] = str(Path(scratch) / "cache")
        path = Path(scratch) / "unet.onnx.data"
        block = os.urandom(1 << 24)
        with open(path, "wb") as f:
            for _ in range(size // len(block)):
                f.write(block)
            f.write(block[: size % len(block)])
        full, d0 = _timed(lambda: digest.file_sha256(path))
        first, d1 = _timed(lambda: digest.cached_sha256(path))  # miss: hashes and records
        hit, d2 = _timed(lambda: digest.cached_sha256(path))
        st = path.stat()
        with open(path, "r+b") as f:
            f.seek(size // 2)
            byte = f.read(1)
            f.seek(size // 2)
            f.write(bytes([byte[0] ^ 0x55]))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        changed, d3 = _timed(lambda: digest.cached_sha256(path))
        assert d0 == d1 == d2 != d3
    rows = [("full sha256", full), ("cache miss (hash + record)", first), ("cache hit (unchanged file)", hit),
            ("same-size, same-mtime change (re-hash)", changed)]
    print(f"| {args.gib:g} GiB external data | seconds | x full hash |\n|---|---:|---:|")
    for name, t in rows:
        print(f"| {name} | {t:.4f} | {t / full:.5f} |")
    result = {"gib": args.gib, "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "seconds": {name: t for name, t in rows}, "gb_per_s_full": size / full / 1e9}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
