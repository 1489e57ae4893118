"""IVOCT plaque detection: the CCCV2017-style adapter (manifest, 60/90 label maps, detector boxes).

See ``pipelines/ivoct/README.md`` for what is confirmed and what is our assumption.
"""

from pipelines.ivoct.cccv import ANNOTATION_COLUMNS, FrameRef, discover_frames, index_cccv, read_annotations
from pipelines.ivoct.commands import PIPELINE

__all__ = ["ANNOTATION_COLUMNS", "FrameRef", "discover_frames", "index_cccv", "read_annotations", "PIPELINE"]
