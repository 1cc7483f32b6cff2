"""One module per source; each exposes an options dataclass and ``build(ctx, options)``.

``IMPORTERS`` names them so the CLI and docs can list the sources without importing all of them.
"""

IMPORTERS = {
    "peter": "Digital Peter (Russian, images/ + words/ [+ mapper.csv])",
    "iam": "IAM lines (ascii/lines.txt + lines/ tree [+ split lists])",
    "lam": "LAM (lines/img + lines/split/<config>/{train,val,test}.json)",
    "vmlhd": "VML-HD (book folders with HADARA XML docElementsXml.ashx + page images)",
    "hf": "Hugging Face parquet (image {bytes, path} + text columns)",
    "sharegpt": "LLaMA-Factory sharegpt JSON (messages + images)",
}
