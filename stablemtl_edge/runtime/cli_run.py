"""``stablemtl-run``: live inference on a camera, video, image folder, ROS 2 bag or test pattern.

Capture, inference and output run on separate threads (:mod:`.stream`); the console shows frame rate,
latency and dropped frames once a second; results go to a window (``--show``), a montage video
(``--output-video``) and/or per-frame ``.npy``/``.png`` files (``--output-dir``). Ctrl-C, ``q`` in the
window, the end of a file or a camera that stays disconnected end the run cleanly, with a summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ..atomic import atomic_write_text
from ..cli.parsers import int_at_least, new_or_dir, parse_list, positive_float, positive_int
from ..cli.shell import HelpFormatter, add_artifact_args, describe, run_cli
from .api import Runtime
from .cli_args import add_runtime_args, options_label, runtime_options
from .sinks import ConsoleSink, FrameFileSink, MontageRenderer, OutputFormat, Sink, VideoSink, WindowSink
from .sources import open_source
from .stream import DropPolicy, Stream

__all__ = ["build_parser", "main"]

log = logging.getLogger("stablemtl-run")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stablemtl-run",
        description=describe(__doc__),
        formatter_class=HelpFormatter,
        epilog="examples:\n"
        "  stablemtl-run 0 -a artifacts/small --show                      # camera 0 in a window\n"
        "  stablemtl-run drive.mp4 -a artifacts/small -o montage.mp4      # every frame of a video\n"
        "  stablemtl-run frames/ -a artifacts/small --tasks depth,semantic --output-dir out --save npy",
    )
    p.add_argument(
        "source",
        help="camera index (0), device or URL (/dev/video2, rtsp://...), video file, image folder, ROS 2 bag, "
        "or pattern:HxW[:N] (a moving test pattern)",
    )
    add_artifact_args(p)
    add_runtime_args(p)
    s = p.add_argument_group("source")
    s.add_argument("--topic", default=None, help="image topic of a ROS 2 bag (default: its only image topic)")
    s.add_argument("--loop", action="store_true", help="restart a video, folder or bag at its end")
    s.add_argument("--max-frames", type=positive_int, default=None, help="stop after reading this many frames")
    s.add_argument(
        "--drop", choices=[d.value for d in DropPolicy], default=None,
        help="`latest`: process the newest frame and drop older ones (bounded latency); `none`: process every "
        "frame; default: latest for cameras, none for files, folders and bags",
    )  # fmt: skip
    s.add_argument(
        "--pace-fps", type=positive_float, default=None,
        help="read the source at this rate (play a file like a camera); default: as fast as it delivers",
    )  # fmt: skip
    s.add_argument("--camera-retries", type=int_at_least(0), default=3, help="reconnect attempts after a camera disconnects")
    s.add_argument("--strict", action="store_true",
                   help="stop at the first unreadable image of a folder (default: skip it with a warning and count it)")
    o = p.add_argument_group("output")
    o.add_argument("--show", action="store_true", help="show the montage in a window (needs an OpenCV with GUI)")
    o.add_argument("--output-video", "-o", type=Path, default=None, help="record the montage to this .mp4/.avi/.mkv")
    o.add_argument(
        "--video-fps", type=positive_float, default=None,
        help="frame rate written in the video (default: the source's, else --pace-fps, else 10)",
    )  # fmt: skip
    o.add_argument("--tile-width", type=int_at_least(64), default=480, help="montage tile width in pixels (>= 64)")
    o.add_argument("--output-dir", type=new_or_dir, default=None, help="write every frame's predictions here")
    o.add_argument("--save", default="npy,png", help="per-frame formats for --output-dir: npy (values), png (colours)")
    o.add_argument("--stats-json", type=Path, default=None, help="write the run's final statistics to this JSON file")
    o.add_argument("--quiet", "-q", action="store_true", help="no console fps/latency readout")
    o.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return p


def _run(args: argparse.Namespace) -> int:
    options = runtime_options(args)
    source = open_source(
        args.source, loop=args.loop, topic=args.topic, camera_retries=args.camera_retries, strict=args.strict
    )
    with contextlib.ExitStack() as stack:
        rt = stack.enter_context(Runtime.from_options(options))
        log.info("%s on %s: tasks %s", options_label(options), source.description, ", ".join(rt.tasks))
        for component, engine in rt.describe().items():
            log.info("  %s: %s", component, engine)
        source.open()
        stack.callback(source.close)
        sinks: list[Sink] = []
        if not args.quiet:
            sinks.append(stack.enter_context(ConsoleSink()))
        renderer = MontageRenderer(rt.tasks, tile_width=args.tile_width) if args.show or args.output_video else None
        if args.show:
            assert renderer is not None
            sinks.append(stack.enter_context(WindowSink(renderer)))
        video: VideoSink | None = None
        if args.output_video is not None:
            fps = args.video_fps or source.nominal_fps or args.pace_fps or 10.0
            video = stack.enter_context(VideoSink(args.output_video, renderer, fps=fps))
            sinks.append(video)
        files: FrameFileSink | None = None
        if args.output_dir is not None:
            formats = [OutputFormat.parse(f, "output format") for f in parse_list(args.save)]
            files = stack.enter_context(FrameFileSink(args.output_dir, formats=formats, tasks=rt.tasks))
            sinks.append(files)
        policy = DropPolicy(args.drop) if args.drop is not None else None
        stream = Stream(source, rt, sinks, policy=policy, pace_fps=args.pace_fps, max_frames=args.max_frames)
        stats = stream.run()
    # The sinks are closed here (video moved into place).
    print(stats.summary(), file=sys.stderr)
    if video is not None and video.frames:
        print(f"wrote {video.frames} montage frames to {args.output_video}", file=sys.stderr)
    if files is not None:
        print(f"wrote {files.files} files to {args.output_dir}", file=sys.stderr)
    if args.stats_json is not None:
        record = {"options": options_label(options), "source": source.description, **stats.to_dict()}
        atomic_write_text(args.stats_json, json.dumps(record, indent=2) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
