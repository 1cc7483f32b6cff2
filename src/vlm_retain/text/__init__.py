"""Text normalization shared by importers and metrics (the two must agree to score honestly)."""

from vlm_retain.text.normalize import clean_text, is_nfc

__all__ = ["clean_text", "is_nfc"]
