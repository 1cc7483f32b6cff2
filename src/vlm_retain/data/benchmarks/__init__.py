"""Benchmark loaders: the official and lmms-lab layouts of each benchmark, read into
:class:`EvalItem` lists with lazily loaded images. Pure data: nothing here imports a model or a
metric (the task registry in ``vlm_retain.evaluate.tasks`` ties loaders, prompts and metrics).

One module per source layout: ``vqav2`` (also the synthetic world's ``vqav2/`` and ``signs/``),
``coco``, ``flickr30k`` (both over ``karpathy``), ``textvqa``, ``docvqa``, ``ocr`` (manifests),
``parquet`` (lmms-lab shards); ``discover`` finds them under a data folder, ``subset`` takes
deterministic ``--limit`` subsets and ``retrieval`` builds retrieval galleries.
"""

from vlm_retain.data.benchmarks.coco import load_coco
from vlm_retain.data.benchmarks.docvqa import load_docvqa
from vlm_retain.data.benchmarks.flickr30k import load_flickr30k
from vlm_retain.data.benchmarks.items import BadImage, EvalItem, ImageRef
from vlm_retain.data.benchmarks.ocr import load_ocr
from vlm_retain.data.benchmarks.retrieval import Gallery, build_gallery
from vlm_retain.data.benchmarks.subset import select, selection_record
from vlm_retain.data.benchmarks.textvqa import load_textvqa
from vlm_retain.data.benchmarks.vqav2 import load_vqav2

__all__ = [
    "BadImage",
    "EvalItem",
    "Gallery",
    "ImageRef",
    "build_gallery",
    "load_coco",
    "load_docvqa",
    "load_flickr30k",
    "load_ocr",
    "load_textvqa",
    "load_vqav2",
    "select",
    "selection_record",
]
