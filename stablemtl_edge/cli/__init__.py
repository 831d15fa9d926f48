"""The command-line shell every tool shares (:mod:`.shell`) and its value parsers (:mod:`.parsers`).

Imports neither torch nor the runtime, so the export tools can use it; the runtime's own flags live
beside the runtime options in :mod:`stablemtl_edge.runtime.cli_args`.
"""
