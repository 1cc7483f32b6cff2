"""Manifests written in other tools' formats, so data imported here can be used there.

``llamafactory``: sharegpt JSON per split plus a ``dataset_info.json`` that LLaMA-Factory loads
as it is. ``parquet``: the Hugging Face ``data/{train,validation,test}.parquet`` layout with an
``Image`` feature, readable by ``datasets.load_dataset`` and by ``data import hf``.
"""
