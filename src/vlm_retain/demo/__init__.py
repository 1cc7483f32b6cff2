"""The demo: real forgetting and its cure, end to end on a laptop CPU (see docs/demo.md).

Modules: :mod:`.run` (``vlm-retain demo``), :mod:`.data_path` (every data command on sample
data in the real layouts), :mod:`.recipe` (the demo's data, base and fine-tuning recipes),
:mod:`.base` (``demo build-base`` and the shipped base), :mod:`.forgetting` (fine-tuning,
WiSE-FT sweep, report), :mod:`.evaluation` and :mod:`.summary`.
"""
