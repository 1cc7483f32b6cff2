"""IAM lines: ``ascii/lines.txt`` + ``lines/<a>/<a>-<b>/<id>.png``, splits from id lists or by form.

Gotchas handled (see docs/datasets/iam.md): ``#`` header lines skipped; the transcription is
everything after the eighth field, so tokens that contain spaces (``B B C``) survive; ``|``
separates tokens (a space by default, or detokenized on request, with quote state carried across
the lines of a form); ``err`` lines are kept (the flag is about word segmentation only); empty
transcriptions skipped and counted; image paths built from the id, never searched for, so a
missing PNG is counted by the shared image check; split lists may name lines or whole forms.

Writers come from ``ascii/forms.txt`` when it is there (it ships in the same ``ascii.tgz``): each
line gets ``meta.writer``, which lets ``data check`` tell the same LOB text copied by another
writer (IAM's design) from a leak, and lets ``--group-by writer`` derive a writer-independent
split (lines of one writer in one split), as the official IAM tasks are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vlm_retain.data.importers.base import ImportContext, require_dir, require_file
from vlm_retain.data.manifest import Record
from vlm_retain.data.naming import SPLIT_WORDS
from vlm_retain.data.splits import check_fractions, grouped_split
from vlm_retain.errors import InputError
from vlm_retain.fsutil import read_utf8

_LAYOUT_HINT = (
    "pass the IAM root holding ascii/lines.txt (from ascii.tgz) and the lines/ image tree "
    "(from lines.tgz, lines/a01/a01-000u/a01-000u-00.png)"
)
#: Eight space-separated fields, then one separator and the transcription (which may hold spaces).
_ROW = re.compile(r"^(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)(?:\s(.*))?$")
#: ``a01-000u-00``: text group ``a01``, form ``a01-000u``, line ``00``. Also keeps ids path-safe.
_LINE_ID = re.compile(r"^(?P<group>[A-Za-z0-9]+)-[A-Za-z0-9]+-[0-9]+$")
#: A ``forms.txt`` row: form id, writer id, sentences, prt|all, lines, lines ok, words, words ok.
_FORM_ROW = re.compile(
    r"^(?P<form>[A-Za-z0-9]+-[A-Za-z0-9]+) (?P<writer>[0-9]+) (?P<sentences>[0-9]+)"
    r" (?P<segmentation>prt|all) (?P<lines>[0-9]+) (?P<lines_ok>[0-9]+)"
    r" (?P<words>[0-9]+) (?P<words_ok>[0-9]+)$"
)
_FORMS_FORMAT = (
    "rows read: form-id writer-id sentences prt|all lines lines-ok words words-ok, "
    "e.g. a01-000u 000 2 prt 7 5 52 36"
)
GROUP_BY = ("form", "writer")
_NUMERIC_FIELDS = ("graylevel", "components", "x", "y", "w", "h")
_SEGMENTATION = ("ok", "err")

#: The Large Writer Independent Text Line Recognition Task lists, as the IAM site ships them.
LWITLRT_LISTS = {
    "trainset.txt": "train",
    "validationset1.txt": "val",
    "validationset2.txt": "val",
    "testset.txt": "test",
}
#: Generic names (RWTH/Aachen ``*.uttlist``, Laia ``tr/va/te.lst``, IAM-Splitting ``valid.txt``).
LIST_STEMS = {**SPLIT_WORDS, "tr": "train", "va": "val", "te": "test"}
LIST_SUFFIXES = (".txt", ".lst", ".uttlist")

# Detokenization: which tokens lose the space before or after them.
_QUOTES = frozenset({'"', "'"})
_OPENING = frozenset({"(", "[", "{"})
_CLOSING = frozenset({")", "]", "}"})
_PUNCTUATION = re.compile(r"^[.,;:!?]+$")
_CLITIC = re.compile(r"^(?:n't|'(?:s|d|ll|m|ve|re|t))$", re.IGNORECASE)


@dataclass(frozen=True)
class IamOptions:
    """``group_by``/``seed``/``val_frac``/``test_frac`` apply only when no ``--splits`` folder
    is given; ``group_by`` is ``form`` or ``writer`` (which needs ``ascii/forms.txt``)."""

    splits: Path | None = None
    detokenize: bool = False
    group_by: str = "form"
    seed: int = 0
    val_frac: float = 0.1
    test_frac: float = 0.1


@dataclass(frozen=True, slots=True)
class IamLine:
    """One data row of ``lines.txt``, fields checked but the transcription left as written."""

    id: str
    form: str
    group: str
    segmentation: str
    graylevel: int
    components: int
    bbox: tuple[int, int, int, int]
    tokenized: str
    row: int

    def meta(self) -> dict[str, object]:
        """What a manifest keeps of the row besides the text (the tokenized original included)."""
        return {
            "form": self.form,
            "segmentation": self.segmentation,
            "graylevel": self.graylevel,
            "components": self.components,
            "bbox": list(self.bbox),
            "tokenized": self.tokenized,
        }


def build(ctx: ImportContext, opts: IamOptions) -> list[Record]:
    """Read ``lines.txt`` (and ``forms.txt`` when present) into one record per line.

    Image paths are built from the ids rather than searched for, so a missing PNG is counted by
    the shared image check instead of making the import slow on a 13k-file tree.
    """
    root = ctx.src
    ascii_dir = root / "ascii"
    if not ascii_dir.is_dir() and (root / "lines.txt").is_file():
        raise InputError(
            "ascii/ folder not found",
            path=ascii_dir,
            hint="lines.txt lies directly in the source folder; move it into ascii/",
        )
    require_dir(ascii_dir, "ascii/ folder", _LAYOUT_HINT)
    lines_file = require_file(ascii_dir / "lines.txt", "ascii/lines.txt", _LAYOUT_HINT)
    lines_dir = require_dir(root / "lines", "lines/ image folder", _LAYOUT_HINT)
    forms_file = ascii_dir / "forms.txt"
    _check_group_by(opts, forms_file)
    if opts.splits is None:
        check_fractions(opts.val_frac, opts.test_frac)

    rows = parse_lines_txt(lines_file)
    writer_of = parse_forms_txt(forms_file) if forms_file.is_file() else None
    by_group: dict[str, str] = {}
    listed: dict[str, tuple[str, str]] = {}
    if opts.splits is None:
        groups = (_group_key(row.form, opts.group_by, writer_of) for row in rows)
        by_group = grouped_split(
            groups, seed=opts.seed, val_frac=opts.val_frac, test_frac=opts.test_frac
        )
    else:
        listed = read_split_lists(ctx, Path(opts.splits), rows)

    # One relative path for the tree, then string joins: no per-line filesystem calls.
    lines_ref = ctx.reference(lines_dir)
    open_quotes: dict[str, bool] = {}
    current_form = None
    records: list[Record] = []
    for row in rows:
        if row.form != current_form:  # quotes never stay open across forms
            current_form, open_quotes = row.form, {}
        tokens = [token for token in row.tokenized.split("|") if token.strip()]
        text = detokenize(tokens, open_quotes) if opts.detokenize else " ".join(tokens)
        if not text.strip():
            ctx.skip("empty transcription", row.id)
            continue
        meta = row.meta()
        if opts.splits is None:
            split = by_group[_group_key(row.form, opts.group_by, writer_of)]
            meta["split_rule"] = f"grouped by {opts.group_by}, seed {opts.seed}"
        elif row.id in listed:
            split, list_name = listed[row.id]
            meta["original_split"] = list_name
        else:
            ctx.skip("not in any split list", row.id)
            continue
        if writer_of is not None:
            if row.form in writer_of:
                meta["writer"] = writer_of[row.form]
            else:
                ctx.note("lines whose form is not in forms.txt (no writer)")
        if row.segmentation == "err":
            ctx.note("lines with word segmentation 'err' (kept)")
        if any(" " in token.strip() for token in tokens):
            ctx.note("transcriptions with spaces inside a token (kept)")
        image = f"{lines_ref}/{row.group}/{row.form}/{row.id}.png"
        records.append(
            Record.create(
                id=row.id, image=image, text=text, lang="en", source="iam", split=split, meta=meta
            )
        )
    return records


def _check_group_by(opts: IamOptions, forms_file: Path) -> None:
    """``--group-by`` must name a known grouping, and ``writer`` needs writers to group by."""
    if opts.group_by not in GROUP_BY:
        raise InputError(f"--group-by must be one of {', '.join(GROUP_BY)}, got {opts.group_by!r}")
    if opts.group_by != "writer":
        return
    if opts.splits is not None:
        raise InputError(
            "--group-by writer applies only to a derived split, not to --splits lists",
            hint="leave out one of the two",
        )
    if not forms_file.is_file():
        raise InputError(
            "--group-by writer needs ascii/forms.txt, which was not found",
            path=forms_file,
            hint="extract forms.txt from ascii.tgz next to lines.txt, or use --group-by form",
        )


def _group_key(form: str, group_by: str, writer_of: dict[str, str] | None) -> str:
    """The unit that goes to one split whole: a form, or the writer of the form (a form
    missing from forms.txt stays a group of its own rather than joining some writer)."""
    if group_by == "writer" and writer_of is not None and form in writer_of:
        return f"writer {writer_of[form]}"
    return f"form {form}"


def parse_forms_txt(path: Path) -> dict[str, str]:
    """Form id -> writer id from ``ascii/forms.txt``; a malformed row names its line number.

    Strict like ``lines.txt``: a row that does not have the eight documented fields means the
    file is not what we think, and a guessed writer would silently corrupt a writer split.
    """
    writers: dict[str, str] = {}
    for number, raw in enumerate(read_utf8(path).split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        match = _FORM_ROW.match(" ".join(fields))
        if match is None:
            problem = (
                f"expected 8 space-separated fields, found {len(fields)}"
                if len(fields) != 8
                else "a field has the wrong form"
            )
            raise InputError(problem, path=path, line=number, hint=_FORMS_FORMAT)
        form = match["form"]
        if form in writers:
            raise InputError(
                f"form id {form!r} listed twice",
                path=path,
                line=number,
                hint="a form has one writer; keep one of the two rows",
            )
        writers[form] = match["writer"]
    return writers


def parse_lines_txt(path: Path) -> list[IamLine]:
    """Every data row of ``lines.txt`` in file order; a malformed row names its line number."""
    rows: list[IamLine] = []
    seen: set[str] = set()
    for number, raw in enumerate(read_utf8(path).split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line.startswith("#"):
            continue
        match = _ROW.match(line)
        if match is None or match[9] is None:
            found = len(line.split())
            raise InputError(
                f"expected at least 9 space-separated fields, found {found}",
                path=path,
                line=number,
                hint="rows read: id ok|err graylevel components x y w h transcription",
            )
        line_id, segmentation = match[1], match[2]
        id_match = _LINE_ID.match(line_id)
        if id_match is None:
            raise InputError(
                f"line id {line_id!r} is not like a01-000u-00", path=path, line=number, field="id"
            )
        if segmentation not in _SEGMENTATION:
            raise InputError(
                f"segmentation flag {segmentation!r} is not ok or err",
                path=path,
                line=number,
                field="segmentation",
            )
        numbers: list[int] = []
        for name, value in zip(_NUMERIC_FIELDS, match.groups()[2:8], strict=True):
            try:
                numbers.append(int(value))
            except ValueError:
                raise InputError(
                    f"{name} is not an integer: {value!r}", path=path, line=number, field=name
                ) from None
        if line_id in seen:
            raise InputError(
                f"line id {line_id!r} listed twice", path=path, line=number, field="id"
            )
        seen.add(line_id)
        graylevel, components, x, y, w, h = numbers
        rows.append(
            IamLine(
                id=line_id,
                form=line_id.rsplit("-", 1)[0],
                group=id_match["group"],
                segmentation=segmentation,
                graylevel=graylevel,
                components=components,
                bbox=(x, y, w, h),
                tokenized=match[9],
                row=number,
            )
        )
    return rows


def detokenize(tokens: Iterable[str], open_quotes: dict[str, bool]) -> str:
    """Join IAM tokens as the text was written: ``said , they`` -> ``said, they``.

    Punctuation (``. , ; : ! ?`` runs), closing brackets and clitics (``n't``, ``'s``, ``'d``,
    ``'ll``, ``'m``, ``'ve``, ``'re``, ``'t``) attach to the token before; opening brackets to the
    token after. A bare ``"`` or ``'`` token opens a quote (attaches to the token after) unless
    one of the same kind is open, in which case it closes it (attaches to the token before).
    ``open_quotes`` carries that state from line to line of one form, because quotations run
    across lines. Everything else is separated by one space.
    """
    parts: list[str] = []
    glue_next = True
    for token in tokens:
        if token in _QUOTES:
            closing = open_quotes.get(token, False)
            open_quotes[token] = not closing
            attach_left, attach_right = closing, not closing
        elif token in _OPENING:
            attach_left, attach_right = False, True
        elif token in _CLOSING or _PUNCTUATION.match(token) or _CLITIC.match(token):
            attach_left, attach_right = True, False
        else:
            attach_left, attach_right = False, False
        if parts and not (attach_left or glue_next):
            parts.append(" ")
        parts.append(token)
        glue_next = attach_right
    return "".join(parts)


def split_list_files(folder: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    """The split lists in ``folder`` with the split each feeds (one naming scheme at a time),
    and the names of other files there, which are not read (e.g. Aachen's train_val.uttlist)."""
    require_dir(folder, "--splits folder", "pass the folder holding the split id lists")
    lwitlrt: list[tuple[Path, str]] = []
    generic: list[tuple[Path, str]] = []
    ignored: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name in LWITLRT_LISTS and path.is_file():
            lwitlrt.append((path, LWITLRT_LISTS[path.name]))
        elif path.suffix in LIST_SUFFIXES and path.stem in LIST_STEMS and path.is_file():
            generic.append((path, LIST_STEMS[path.stem]))
        elif not path.name.startswith("."):
            ignored.append(path.name)
    if lwitlrt and generic:
        raise InputError(
            "holds both LWITLRT lists (trainset.txt...) and train/val/test lists "
            f"({', '.join(p.name for p, _ in generic)})",
            path=folder,
            hint="the two are different splits; keep one scheme per folder",
        )
    if not (lwitlrt or generic):
        raise InputError(
            "no split lists found",
            path=folder,
            hint="expected trainset.txt, validationset1.txt, validationset2.txt, testset.txt, or "
            "train/val/validation/test (also tr/va/te, valid) ending in .txt, .lst or .uttlist",
        )
    return (lwitlrt or generic), ignored


def read_split_lists(
    ctx: ImportContext, folder: Path, rows: list[IamLine]
) -> dict[str, tuple[str, str]]:
    """Map line id -> (split, list name). Entries are line ids or form ids (all their lines)."""
    line_ids = {row.id for row in rows}
    form_lines: dict[str, list[str]] = {}
    for row in rows:
        form_lines.setdefault(row.form, []).append(row.id)
    # line id -> (split, list name, where it was listed as path:line)
    assigned: dict[str, tuple[str, str, str]] = {}
    unmatched = 0
    lists, ignored = split_list_files(folder)
    if ignored:
        ctx.note("files in the --splits folder that are not split lists (not read)", len(ignored))
    for path, split in lists:
        for number, raw in enumerate(read_utf8(path).splitlines(), start=1):
            fields = raw.split()
            if not fields or fields[0].startswith("#"):
                continue
            entry = fields[0]
            if entry in line_ids:
                targets = [entry]
            elif entry in form_lines:
                targets = form_lines[entry]
            else:
                unmatched += 1
                continue
            for line_id in targets:
                previous = assigned.get(line_id)
                if previous is not None and previous[0] != split:
                    raise InputError(
                        f"{entry!r} puts line {line_id} in {split}, but {previous[2]} puts it "
                        f"in {previous[0]}",
                        path=path,
                        line=number,
                        hint="a line may be in one split only; fix one of the two lists",
                    )
                if previous is None:
                    assigned[line_id] = (split, path.stem, f"{path}:{number}")
    if unmatched:
        ctx.note("split-list entries matching no line in lines.txt", unmatched)
    return {line_id: (split, name) for line_id, (split, name, _) in assigned.items()}
