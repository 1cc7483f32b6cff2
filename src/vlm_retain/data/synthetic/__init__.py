"""Synthetic data for the offline default: manuscript lines and a general-skills world.

Everything here is generated, not copied: text from per-language letter and word statistics,
images rendered with fonts bundled in ``fonts/`` under their open licences, so the demo and the
tests need no download and no system fonts.
"""
