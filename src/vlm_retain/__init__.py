"""vlm-retain: teach vision-language models to read historical handwriting without forgetting.

The package is layered (see docs/architecture.md): ``cli`` on top; ``train``, ``evaluate``,
``merge`` and ``report`` in the middle; ``models``, ``data`` and ``text`` at the bottom.
Layers import downward only.
"""

__version__ = "0.1.0"
