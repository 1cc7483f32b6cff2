"""Tiny datasets written in the exact on-disk layouts of the real ones.

They let the demo, the tests and a curious user run every importer without downloading
anything. Each module writes one source's layout, including that source's known gotchas when
asked (see the ``with_gotchas`` arguments), so importers are tested against what they will meet.
Images are plain rendered text: these samples test data handling, not recognition (the
synthetic-handwriting generator is a separate module).
"""
