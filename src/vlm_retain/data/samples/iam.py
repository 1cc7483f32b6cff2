"""A tiny IAM release in the real layout: ``ascii/{lines,forms}.txt`` and the ``lines/`` PNG tree.

Rows follow the real ``lines.txt``: the original header, then ``id ok|err graylevel components
x y w h token|token|...``. Most text comes from real IAM lines (tokenized the IAM way: punctuation
and clitics are their own tokens); the ``r06-000`` form is written for the sample to hold the
contractions. ``forms.txt`` follows the real one too: its header, then ``form-id writer-id
sentences prt|all lines lines-ok words words-ok``, with counts computed from the sample's rows
(a writer, as in IAM, may have written several forms). Split lists are a separate download in
the real world, so they have their own writer here (:func:`write_lwitlrt_lists`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vlm_retain.data.samples.render import render_line

#: The header of the real ``ascii/lines.txt``, kept verbatim (comment lines start with ``#``).
LINES_HEADER = """\
#--- lines.txt ---------------------------------------------------------------#
#
# iam database line information
#
# format: a01-000u-00 ok 154 19 408 746 1663 91 A|MOVE|to|stop|Mr.|Gaitskell|from
#
#     a01-000u-00  -> line id for form a01-000u
#     ok              -> result of word segmentation
#                            ok: line is correctly segmented
#                            err: segmentation of line has one or more errors
#
#                        notice: if the line could not be properly segmented
#                                the transcription and extraction of the whole
#                                line should not be affected negatively
#
#     154             -> graylevel to binarize line
#     19              -> number of components for this line
#     408 746 1663 91 -> bounding box around this line in x,y,w,h format
#
#     A|MOVE|to|stop|Mr.|Gaitskell|from
#                     -> transcription for this line. word tokens are separated
#                        by the character |
#
"""

#: The header of the real ``ascii/forms.txt``, verbatim as public copies of the file show it.
FORMS_HEADER = """\
#--- forms.txt --------------------------------------------------------------#
#
# iam database form information
#
# format: a01-000u 000 2 prt 7 5 52 36
#
#     a01-000u  -> form id
#     000       -> writer id
#     2         -> number of sentences
#     prt       -> word segmentation
#                     prt: some lines correctly segmented
#                     all: all lines correctly segmented
#     7 5       -> 5 of 7 lines are correctly segmented into words
#     52 36     -> the form contains 52 words,
#                  36 are in lines which have been correctly segmented
"""

#: Form id -> writer id (three digits, as in forms.txt); writer 150 wrote two forms.
FORM_WRITERS = {
    "a01-000u": "000",
    "c04-160": "150",
    "c06-083": "150",
    "e01-014": "211",
    "f07-036": "300",
    "r06-000": "552",
}

#: line id -> (segmentation flag, tokenized transcription, text after --detokenize)
LINES: dict[str, tuple[str, str, str]] = {
    "a01-000u-00": ("ok", "A|MOVE|to|stop|Mr.|Gaitskell|from", "A MOVE to stop Mr. Gaitskell from"),
    "a01-000u-01": (
        "ok",
        "nominating|any|more|Labour|life|Peers",
        "nominating any more Labour life Peers",
    ),
    "a01-000u-02": (
        "ok",
        "is|to|be|made|at|a|meeting|of|Labour",
        "is to be made at a meeting of Labour",
    ),
    "c04-160-06": (
        "ok",
        "effect|.|MORE|than|100|viewers|complained|to",
        "effect. MORE than 100 viewers complained to",
    ),
    "c04-160-08": (
        "ok",
        '"|Britain|-|Blood|,|Sweat|,|and|Tears|...|Plus',
        '"Britain - Blood, Sweat, and Tears... Plus',
    ),
    "c04-160-09": ("ok", 'Twenty|Years|,|"|was|anti-British|.', 'Twenty Years," was anti-British.'),
    "c06-083-06": (
        "ok",
        "after|this|annual|idyll|his|major-domo|(|Walter|Slezak",
        "after this annual idyll his major-domo (Walter Slezak",
    ),
    "c06-083-07": (
        "ok",
        "at|his|most|nauseating|)|turns|the|palazzo|into|a|luxury",
        "at his most nauseating) turns the palazzo into a luxury",
    ),
    "e01-014-03": (
        "ok",
        "did|n't|mean|he|was|prepared|to|do|as|much",
        "didn't mean he was prepared to do as much",
    ),
    "e01-014-04": (
        "ok",
        "for|his|lady|,|for|he|records|testily|:|'|My|wife",
        "for his lady, for he records testily: 'My wife",
    ),
    "e01-014-05": (
        "ok",
        "and|I|fell|out|about|my|not|being|willing",
        "and I fell out about my not being willing",
    ),
    "e01-014-06": ("ok", "to|have|her|gown|laced|.|'", "to have her gown laced.'"),
    "f07-036-00": (
        "ok",
        "When|Nero|supped|in|#|his|Golden|House|,",
        "When Nero supped in # his Golden House,",
    ),
    "r06-000-00": ("ok", "We|'ll|go|,|she|said|;|do|n't|wait|!", "We'll go, she said; don't wait!"),
    "r06-000-01": ("ok", "It|'s|(|quite|)|late|?|Yes|.", "It's (quite) late? Yes."),
}

#: Rows added with the gotchas: (flag, tokenized, detokenized); detokenized None = skipped.
GOTCHA_LINES: dict[str, tuple[str, str, str | None]] = {
    # word segmentation failed: the line is still fine for line-level HTR
    "a01-000u-03": (
        "err",
        "M|Ps|tomorrow|.|Mr.|Michael|Foot|has",
        "M Ps tomorrow. Mr. Michael Foot has",
    ),
    # a token with spaces inside: more than nine space-separated fields
    "c04-160-07": (
        "err",
        "the|B B C|last|night|that|an|American|film|,",
        "the B B C last night that an American film,",
    ),
    # its PNG is missing from lines/
    "f07-036-01": (
        "ok",
        "a|mingled|shower|of|flowers|and|odorous",
        "a mingled shower of flowers and odorous",
    ),
    # nothing after the eighth field but the separator
    "f07-036-02": ("ok", "", None),
}

MISSING_IMAGE = "f07-036-01"

#: Forms per LWITLRT list in the sample (real lists hold line ids and leave some lines out).
LWITLRT_FORMS = {
    "trainset.txt": ("a01-000u", "c04-160", "e01-014"),
    "validationset1.txt": ("c06-083",),
    "validationset2.txt": ("r06-000",),
    "testset.txt": ("f07-036",),
}


@dataclass
class IamSample:
    """What a test needs to know about the written sample."""

    root: Path
    rows: list[str] = field(default_factory=list)  # every data row id, file order
    tokenized: dict[str, str] = field(default_factory=dict)  # id -> text with | as space
    detokenized: dict[str, str] = field(default_factory=dict)  # id -> text with --detokenize
    err: list[str] = field(default_factory=list)
    missing_image: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)

    @property
    def usable(self) -> list[str]:
        """Ids that end in a manifest when every line is in some split."""
        return [i for i in self.rows if i not in self.missing_image and i not in self.empty]


def line_image_path(root: Path, line_id: str) -> Path:
    """``lines/a01/a01-000u/a01-000u-00.png`` for ``a01-000u-00``."""
    form = line_id.rsplit("-", 1)[0]
    return root / "lines" / line_id.split("-")[0] / form / f"{line_id}.png"


def write_iam_sample(root: Path, *, with_gotchas: bool = True) -> IamSample:
    """Write the sample under ``root``; gotchas add an ``err`` row, a token with spaces, a
    missing PNG and an empty transcription."""
    sample = IamSample(root=root)
    lines = dict(LINES)
    if with_gotchas:
        lines.update(GOTCHA_LINES)
    rows = [LINES_HEADER]
    for index, line_id in enumerate(sorted(lines)):
        flag, tokenized, detokenized = lines[line_id]
        image = render_line(detokenized or " ", height=32)
        x, y = 380 + 7 * index % 40, 700 + 180 * int(line_id[-2:])
        components = tokenized.count("|") + len(tokenized.replace("|", ""))
        rows.append(
            f"{line_id} {flag} {150 + index % 30} {components} {x} {y} "
            f"{image.width * 4} {image.height * 3} {tokenized}\n"
        )
        sample.rows.append(line_id)
        sample.tokenized[line_id] = " ".join(tokenized.replace("|", " ").split())
        if detokenized is None:
            sample.empty.append(line_id)
            continue
        sample.detokenized[line_id] = detokenized
        if flag == "err":
            sample.err.append(line_id)
        if line_id == MISSING_IMAGE:
            sample.missing_image.append(line_id)
            continue
        path = line_image_path(root, line_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
    (root / "ascii").mkdir(parents=True, exist_ok=True)
    (root / "ascii" / "lines.txt").write_text("".join(rows), encoding="utf-8")
    write_forms_txt(root / "ascii" / "forms.txt", lines)
    return sample


def write_forms_txt(
    path: Path,
    lines: dict[str, tuple[str, str, str | None]],
    writers: dict[str, str] = FORM_WRITERS,
) -> None:
    """Write ``forms.txt`` for the forms of ``lines`` (line id -> flag, tokenized, ...), with
    the counts the real file gives: sentences, lines and words, and how many are in lines whose
    word segmentation is ``ok``."""
    by_form: dict[str, list[tuple[str, str]]] = {}
    for line_id in sorted(lines):
        flag, tokenized, _ = lines[line_id]
        by_form.setdefault(line_id.rsplit("-", 1)[0], []).append((flag, tokenized))
    rows = [FORMS_HEADER]
    for form, form_lines in by_form.items():
        words = [len([t for t in tokenized.split("|") if t]) for _, tokenized in form_lines]
        ok = [flag == "ok" for flag, _ in form_lines]
        sentences = sum(
            tokenized.split("|").count(end) for _, tokenized in form_lines for end in ".!?"
        )
        rows.append(
            f"{form} {writers[form]} {max(1, sentences)} {'all' if all(ok) else 'prt'} "
            f"{len(form_lines)} {sum(ok)} {sum(words)} "
            f"{sum(n for n, good in zip(words, ok, strict=True) if good)}\n"
        )
    path.write_text("".join(rows), encoding="utf-8")


def write_lwitlrt_lists(
    folder: Path, sample: IamSample, *, leave_out: tuple[str, ...] = ()
) -> None:
    """Write ``trainset.txt``... with line ids, as the LWITLRT task lists do; ``leave_out``
    drops lines, as the real lists leave some lines of their pages out."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, forms in LWITLRT_FORMS.items():
        ids = [i for i in sample.rows if i.rsplit("-", 1)[0] in forms and i not in leave_out]
        (folder / name).write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
