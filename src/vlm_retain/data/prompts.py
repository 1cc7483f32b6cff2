"""The prompts shared by training, transcription and evaluation, in the data layer so every
layer above can import them (``train`` may not import ``evaluate``).

Why these words:

- OCR: scores compare characters, so the model is asked for exactly the characters it sees, in
  the original spelling (pre-reform letters, abbreviations, diacritics kept), with no
  normalization and nothing but the text: a chat model otherwise adds quotes or commentary that
  the metric counts as errors. Training asks the same question the evaluation will ask.
- VQA, TextVQA, DocVQA and captions: lmms-eval's default prompts (``lmms_eval/tasks/vqav2``,
  ``textvqa``, ``docvqa``, ``coco_cap``, ``flickr30k``), so our numbers can be set beside
  published lmms-eval numbers. Changing a word changes the scores.
"""

from __future__ import annotations

DEFAULT_OCR_PROMPT = (
    "You are an expert transcriber of historical handwriting. Transcribe the text in this image "
    "exactly as written, character for character: keep the original spelling, letters, "
    "abbreviations, punctuation and diacritics; do not normalize, modernize, correct or "
    "translate anything. Output only the transcribed text as plain text, with no explanations."
)

#: lmms-eval's post-prompt for short-answer VQA (VQAv2, TextVQA, DocVQA; also VLMEvalKit's).
VQA_SUFFIX = "\nAnswer the question using a single word or phrase."

#: VQAv2 (and the synthetic world's VQA and sign questions): the question, then the suffix.
VQA_PROMPT = "{question}" + VQA_SUFFIX

#: TextVQA as lmms-eval asks it: the same template, with the question passed through
#: ``str.capitalize`` first (first letter upper, the rest lower), as ``textvqa_doc_to_text`` does.
TEXTVQA_PROMPT = VQA_PROMPT

#: DocVQA as lmms-eval asks it (the question as written, then the suffix).
DOCVQA_PROMPT = VQA_PROMPT

#: lmms-eval's COCO (coco2014/2017_cap) and Flickr30k captioning prompt.
CAPTION_PROMPT = "Provide a one-sentence caption for the provided image."
