"""``vlm-retain data``: import, check, stats, export and purge manuscript datasets."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from vlm_retain.cli.options import comma_list
from vlm_retain.data.importers import IMPORTERS
from vlm_retain.data.importers.base import CommonOptions, run_import
from vlm_retain.errors import EXIT_PROBLEMS, InputError

app = typer.Typer(help="Import, check, describe, export and purge datasets.", no_args_is_help=True)
import_app = typer.Typer(
    help="Turn a dataset, exactly as its maintainers ship it, into DIR/manifest.jsonl"
    " + DIR/card.json.\n\n" + "\n\n".join(f"{name}: {what}" for name, what in IMPORTERS.items()),
    no_args_is_help=True,
)
export_app = typer.Typer(help="Write manifests in other tools' formats.", no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(export_app, name="export")
console = Console()
err_console = Console(stderr=True)

OUT = typer.Option(..., "--out", "-o", help="Folder to create (must not exist unless --overwrite).")
OVERWRITE = typer.Option(
    False, "--overwrite", help="Replace an existing output folder written by vlm-retain."
)
SKIP_BAD = typer.Option(
    False, "--skip-bad-images", help="Count and skip unreadable images instead of failing."
)
SEED = typer.Option(
    0, "--seed", help="Seed of the grouped split (used only when the source has no split)."
)
VAL_FRAC = typer.Option(
    0.1, "--val-frac", help="Share of groups for val when the split is derived."
)
TEST_FRAC = typer.Option(
    0.1, "--test-frac", help="Share of groups for test when the split is derived."
)
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars.")


def _common(out: Path, overwrite: bool, skip_bad_images: bool, quiet: bool) -> CommonOptions:
    return CommonOptions(
        out=out, overwrite=overwrite, skip_bad_images=skip_bad_images, progress=not quiet
    )


def _summarize(card: dict, out: Path) -> None:
    table = Table(title=f"{card['importer']['name']} -> {out}")
    table.add_column("split")
    table.add_column("lang")
    table.add_column("lines", justify="right")
    for split, by_lang in card["counts"].items():
        for lang, count in by_lang.items():
            table.add_row(split, lang, str(count))
    console.print(table)
    if card["skipped_total"]:
        console.print(
            f"skipped {card['skipped_total']}: "
            + ", ".join(f"{reason} ({info['count']})" for reason, info in card["skipped"].items())
        )
    for note, count in card["notes"].items():
        console.print(f"note: {note}: {count}")


@import_app.command("peter")
def import_peter(
    src: Path = typer.Argument(..., help="Folder with images/, words/ and optionally mapper.csv."),
    out: Path = OUT,
    seed: int = SEED,
    val_frac: float = VAL_FRAC,
    test_frac: float = TEST_FRAC,
    legacy_fixes: bool = typer.Option(
        False,
        "--legacy-fixes",
        help="Apply the organisers' fixes (і->i, c->с, ҍ->ѣ) for the old unfixed archive.",
    ),
    rotate_portrait: str = typer.Option(
        "none",
        "--rotate-portrait",
        help="none | cw | ccw: write rotated copies of portrait line images.",
    ),
    overwrite: bool = OVERWRITE,
    skip_bad_images: bool = SKIP_BAD,
    quiet: bool = QUIET,
) -> None:
    """Digital Peter (Russian): images/*.jpg + words/*.txt, splits from mapper.csv flags."""
    from vlm_retain.data.importers import peter

    options = peter.PeterOptions(
        seed=seed,
        val_frac=val_frac,
        test_frac=test_frac,
        legacy_fixes=legacy_fixes,
        rotate_portrait=rotate_portrait,
    )
    card = run_import(
        "peter", src, options, peter.build, _common(out, overwrite, skip_bad_images, quiet)
    )
    _summarize(card, out)


@import_app.command("iam")
def import_iam(
    src: Path = typer.Argument(..., help="Folder with ascii/lines.txt and the lines/ image tree."),
    out: Path = OUT,
    splits: Path | None = typer.Option(
        None,
        "--splits",
        help="Folder of split lists (LWITLRT trainset.txt... or train/val/test .txt/.lst/.uttlist)"
        ".",
    ),
    detokenize: bool = typer.Option(
        False,
        "--detokenize",
        help="Re-attach punctuation and contractions ('said , they' -> 'said, they').",
    ),
    group_by: str = typer.Option(
        "form",
        "--group-by",
        help="form | writer (needs ascii/forms.txt): groups of the derived split.",
    ),
    seed: int = SEED,
    val_frac: float = VAL_FRAC,
    test_frac: float = TEST_FRAC,
    overwrite: bool = OVERWRITE,
    skip_bad_images: bool = SKIP_BAD,
    quiet: bool = QUIET,
) -> None:
    """IAM lines (English): ascii/lines.txt + lines/<a>/<a-b>/<id>.png."""
    from vlm_retain.data.importers import iam

    options = iam.IamOptions(
        splits=splits,
        group_by=group_by,
        detokenize=detokenize,
        seed=seed,
        val_frac=val_frac,
        test_frac=test_frac,
    )
    card = run_import(
        "iam", src, options, iam.build, _common(out, overwrite, skip_bad_images, quiet)
    )
    _summarize(card, out)


@import_app.command("lam")
def import_lam(
    src: Path = typer.Argument(..., help="LAM root (holding lines/) or its lines/ folder."),
    out: Path = OUT,
    config: str = typer.Option(
        "basic",
        "--config",
        help="Split config under lines/split/, e.g. basic or leave_decade_out/leave_decade_3_out.",
    ),
    overwrite: bool = OVERWRITE,
    skip_bad_images: bool = SKIP_BAD,
    quiet: bool = QUIET,
) -> None:
    """LAM (Italian): lines/img + lines/split/<config>/{train,val,test}.json."""
    from vlm_retain.data.importers import lam

    card = run_import(
        "lam",
        src,
        lam.LamOptions(config=config),
        lam.build,
        _common(out, overwrite, skip_bad_images, quiet),
    )
    _summarize(card, out)


@import_app.command("vmlhd")
def import_vmlhd(
    src: Path = typer.Argument(
        ...,
        help="Folder of book folders (or one book folder) with docElementsXml.ashx and page"
        " images.",
    ),
    out: Path = OUT,
    level: str = typer.Option(
        "subword",
        "--level",
        help="subword (crop each transcribed zone) or line (group sub-words into lines).",
    ),
    paw_separator: str = typer.Option(
        "",
        "--paw-separator",
        help="Text put between sub-words when --level line (default none: PAWs are not words).",
    ),
    pad: int = typer.Option(2, "--pad", help="Pixels of margin around each crop."),
    seed: int = SEED,
    val_frac: float = VAL_FRAC,
    test_frac: float = TEST_FRAC,
    overwrite: bool = OVERWRITE,
    skip_bad_images: bool = SKIP_BAD,
    quiet: bool = QUIET,
) -> None:
    """VML-HD (Arabic): HADARA XML + page images, cropped to sub-words or lines."""
    from vlm_retain.data.importers import vmlhd

    options = vmlhd.VmlhdOptions(
        level=level,
        paw_separator=paw_separator,
        pad=pad,
        seed=seed,
        val_frac=val_frac,
        test_frac=test_frac,
    )
    card = run_import(
        "vmlhd", src, options, vmlhd.build, _common(out, overwrite, skip_bad_images, quiet)
    )
    _summarize(card, out)


@import_app.command("hf")
def import_hf(
    src: Path = typer.Argument(
        ..., help="A parquet file or a folder of them (e.g. data/{train,validation,test}.parquet)."
    ),
    out: Path = OUT,
    lang: str = typer.Option(
        ..., "--lang", help="ISO 639-1 language of the text (en, ru, it, ar...)."
    ),
    image_col: str = typer.Option(
        "image", "--image-col", help="Column holding {bytes, path} images."
    ),
    text_col: str = typer.Option("text", "--text-col", help="Column holding the transcription."),
    id_col: str | None = typer.Option(
        None,
        "--id-col",
        help="Column holding ids (default: 'id' when present, else <split>-<row>).",
    ),
    split: str | None = typer.Option(
        None, "--split", help="train | val | test for every file (default: from the file names)."
    ),
    source: str = typer.Option("hf", "--source", help="Source name written into the manifest."),
    overwrite: bool = OVERWRITE,
    skip_bad_images: bool = SKIP_BAD,
    quiet: bool = QUIET,
) -> None:
    """Hugging Face parquet (e.g. Teklia/IAM-line); image bytes copied as they are to DIR/images."""
    from vlm_retain.data.importers import hf

    options = hf.HfOptions(
        lang=lang,
        image_col=image_col,
        text_col=text_col,
        id_col=id_col,
        source=source,
        split=split,
    )
    card = run_import("hf", src, options, hf.build, _common(out, overwrite, skip_bad_images, quiet))
    _summarize(card, out)


@import_app.command("sharegpt")
def import_sharegpt(
    src: Path = typer.Argument(..., help="LLaMA-Factory sharegpt JSON (or JSONL) file."),
    out: Path = OUT,
    lang: str = typer.Option(..., "--lang", help="ISO 639-1 language of the answers."),
    split: str | None = typer.Option(
        None, "--split", help="train | val | test (default: from the file name)."
    ),
    image_dir: Path | None = typer.Option(
        None,
        "--image-dir",
        help="Folder relative image paths start from (default: the JSON's folder).",
    ),
    source: str = typer.Option(
        "sharegpt", "--source", help="Source name written into the manifest."
    ),
    overwrite: bool = OVERWRITE,
    skip_bad_images: bool = SKIP_BAD,
    quiet: bool = QUIET,
) -> None:
    """LLaMA-Factory sharegpt JSON: user turn <image> + prompt, assistant turn the text."""
    from vlm_retain.data.importers import sharegpt

    options = sharegpt.SharegptOptions(lang=lang, split=split, image_dir=image_dir, source=source)
    card = run_import(
        "sharegpt", src, options, sharegpt.build, _common(out, overwrite, skip_bad_images, quiet)
    )
    _summarize(card, out)


@app.command("check")
def check(
    folder: Path = typer.Argument(..., help="Manifest folder (or manifest.jsonl)."),
    json_out: Path | None = typer.Option(
        None, "--json-out", help="Also write every finding as JSON to this file."
    ),
    max_rows: int = typer.Option(20, "--max-rows", help="Examples shown per kind of problem."),
) -> None:
    """Re-validate a manifest: images, text, sizes, duplicates, leakage. Exit 1 on errors."""
    from vlm_retain.data.check import check_manifest

    report = check_manifest(folder)
    report.print(console, max_rows=max_rows)
    if json_out is not None:
        from vlm_retain.fsutil import atomic_write_json

        atomic_write_json(json_out, report.to_json())
    if report.errors:
        raise typer.Exit(EXIT_PROBLEMS)


@app.command("stats")
def stats(
    folder: Path = typer.Argument(..., help="Manifest folder (or manifest.jsonl)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Counts, charset per split, unseen characters in val/test, length distributions."""
    from vlm_retain.data.stats import manifest_stats, print_stats

    result = manifest_stats(folder)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print_stats(result, console)


@export_app.command("llamafactory")
def export_llamafactory(
    folders: list[Path] = typer.Argument(..., help="One or more manifest folders."),
    to: Path = typer.Option(
        ..., "--to", help="Folder to create with <name>_<split>.json and dataset_info.json."
    ),
    prompt: str | None = typer.Option(
        None, "--prompt", help="User prompt put after <image> (default: the OCR prompt)."
    ),
    overwrite: bool = OVERWRITE,
) -> None:
    """LLaMA-Factory sharegpt JSON per split and a dataset_info.json that loads as is."""
    from vlm_retain.data.export.llamafactory import DEFAULT_PROMPT
    from vlm_retain.data.export.llamafactory import export_llamafactory as run

    info = run(folders, to, prompt=prompt or DEFAULT_PROMPT, overwrite=overwrite)
    console.print(f"wrote {len(info)} datasets to {to}: " + ", ".join(sorted(info)))


@export_app.command("parquet")
def export_parquet(
    folder: Path = typer.Argument(..., help="Manifest folder."),
    to: Path = typer.Option(
        ..., "--to", help="Folder to create with data/{train,validation,test}.parquet."
    ),
    overwrite: bool = OVERWRITE,
) -> None:
    """Hugging Face parquet (image {bytes, path} + text + id, lang, source)."""
    from vlm_retain.data.export.parquet import export_parquet as run

    counts = run(folder, to, overwrite=overwrite)
    console.print(f"wrote {to}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@app.command("purge")
def purge(
    folder: Path = typer.Argument(..., help="A folder written by vlm-retain (import, export)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Remove what the tool derived (copies, crops, manifests, caches); never the sources."""
    from vlm_retain.data.purge import plan_purge, purge_folder

    plan = plan_purge(folder)
    console.print(
        f"{folder}: {plan.files} files, {plan.bytes / 1e6:.1f} MB"
        f" derived by vlm-retain ({plan.kind})"
    )
    if not yes and not typer.confirm("Delete them?", default=False):
        raise InputError("nothing deleted (not confirmed)", hint="pass --yes to skip the question")
    purge_folder(folder, plan)
    console.print(f"removed {folder} ({plan.kind})")


def _int_range(value: str, option: str) -> tuple[int, int]:
    """``"1,2"`` -> ``(1, 2)``; a one-line error naming the option otherwise."""
    parts = [part.strip() for part in value.split(",")]
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        raise InputError(f"{option} must be two whole numbers MIN,MAX (got {value!r})")
    return int(parts[0]), int(parts[1])


synth_app = typer.Typer(
    help="Generate the offline default data: manuscript lines and a general-skills world.",
    no_args_is_help=True,
)
app.add_typer(synth_app, name="synth")


@synth_app.command("htr")
def synth_htr(
    out: Path = OUT,
    langs: str = typer.Option("ru,en,it,ar", "--langs", help="Comma-separated: ru, en, it, ar."),
    per_lang: int = typer.Option(500, "--per-lang", help="Lines per language (all splits)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same bytes."),
    height: int = typer.Option(56, "--height", help="Line height in pixels (a multiple of 28)."),
    preview: bool = typer.Option(
        False, "--preview", help="Also write preview.png (contact sheet)."
    ),
    workers: int = typer.Option(2, "--workers", help="Rendering processes."),
    style: str = typer.Option(
        "manuscript", "--style", help="manuscript (hands, eras, wear) or print (clean type)."
    ),
    words: str = typer.Option(
        "", "--words", help="Words per line as MIN,MAX (default: each language's own, 2,5)."
    ),
    lexicon: int = typer.Option(
        0, "--lexicon", help="Draw words from N pseudo-words per language (0: open vocabulary)."
    ),
    overwrite: bool = OVERWRITE,
    quiet: bool = QUIET,
) -> None:
    """Handwriting-like text lines in Russian (pre-reform), English, Italian and Arabic."""
    from vlm_retain.data.synthetic.htr import HtrOptions
    from vlm_retain.data.synthetic.htr import synth_htr as run

    options = HtrOptions(
        langs=comma_list(langs),
        per_lang=per_lang,
        seed=seed,
        height=height,
        preview=preview,
        workers=workers,
        style=style,
        words=_int_range(words, "--words") if words else None,
        lexicon=lexicon or None,
    )
    card = run(out, options, overwrite=overwrite, progress=not quiet)
    _summarize(card, out)


@synth_app.command("world")
def synth_world(
    out: Path = OUT,
    n: int = typer.Option(1000, "--n", help="Number of scenes (images)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same bytes."),
    preview: bool = typer.Option(
        False, "--preview", help="Also write preview.png (contact sheet)."
    ),
    workers: int = typer.Option(2, "--workers", help="Rendering processes."),
    image_size: int = typer.Option(112, "--image-size", help="Scene side in pixels (x 28)."),
    max_shapes: int = typer.Option(4, "--max-shapes", help="At most this many shapes (1-6)."),
    questions_per_image: int = typer.Option(
        5, "--questions-per-image", help="VQA questions asked about each scene."
    ),
    sign_share: float = typer.Option(
        0.25, "--sign-share", help="Share of scenes that carry a printed sign (0 to 1)."
    ),
    kinds: str = typer.Option(
        "circle,square,triangle,star,cross",
        "--kinds",
        help="Comma-separated shape kinds drawn: circle, square, triangle, star, cross.",
    ),
    colours: str = typer.Option(
        "red,orange,yellow,green,blue,purple",
        "--colours",
        help="Comma-separated shape colours: red, orange, yellow, green, blue, purple.",
    ),
    families: str = typer.Option(
        "color,shape,count,count_attr,exists,relation,extreme",
        "--families",
        help="Comma-separated question families: color, shape, count, count_attr, exists,"
        " relation, extreme (sign questions follow --sign-share).",
    ),
    overwrite: bool = OVERWRITE,
    quiet: bool = QUIET,
) -> None:
    """Scenes of simple shapes with VQA (VQAv2 layout), captions (COCO and Karpathy layouts)
    and printed-sign reading, plus a manifest for training mixtures."""
    from vlm_retain.data.synthetic.world import WorldOptions
    from vlm_retain.data.synthetic.world import synth_world as run

    card = run(
        out,
        WorldOptions(
            n=n,
            seed=seed,
            preview=preview,
            workers=workers,
            image_size=image_size,
            max_shapes=max_shapes,
            questions_per_image=questions_per_image,
            sign_share=sign_share,
            kinds=comma_list(kinds),
            colours=comma_list(colours),
            families=comma_list(families),
        ),
        overwrite=overwrite,
        progress=not quiet,
    )
    _summarize(card, out)
