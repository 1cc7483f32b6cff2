"""ImageRef (lazy images from files, bytes and parquet rows), deterministic subsets, galleries."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vlm_retain.data.benchmarks import (
    BadImage,
    EvalItem,
    ImageRef,
    build_gallery,
    select,
    selection_record,
)


def png_bytes(color: tuple[int, int, int] = (200, 10, 10), size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_path_is_opened_only_on_load(tmp_path: Path) -> None:
    path = tmp_path / "later.png"
    ref = ImageRef.from_path(path)  # the file does not exist yet: no error
    with pytest.raises(BadImage, match="image missing"):
        ref.load()
    Image.new("L", (5, 7), 128).save(path)
    image = ref.load()
    assert image.mode == "RGB" and image.size == (5, 7)
    assert ref.key == str(path)


def test_bytes_load_and_broken_bytes() -> None:
    image = ImageRef.from_bytes(png_bytes((1, 2, 3)), key="x").load()
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (1, 2, 3)
    with pytest.raises(BadImage, match="unreadable"):
        ImageRef.from_bytes(b"not an image", key="bad").load()
    truncated = png_bytes(size=64)[:60]
    with pytest.raises(BadImage):
        ImageRef.from_bytes(truncated, key="cut").load()


def test_parquet_rows_are_read_lazily(tmp_path: Path) -> None:
    path = tmp_path / "validation-00000-of-00001.parquet"
    cells = [{"bytes": png_bytes((i * 40, 0, 0)), "path": f"{i}.png"} for i in range(5)]
    cells[4] = {"bytes": None, "path": "gone.png"}
    table = pa.table({"id": list(range(5)), "image": cells})
    pq.write_table(table, path, row_group_size=2)
    refs = [ImageRef.from_parquet(path, i // 2, i % 2) for i in range(5)]
    assert refs[3].in_parquet and "#1:1" in refs[3].key
    assert refs[3].load().getpixel((0, 0)) == (120, 0, 0)
    assert refs[0].load().getpixel((0, 0)) == (0, 0, 0)
    with pytest.raises(BadImage, match="no bytes"):
        refs[4].load()
    with pytest.raises(BadImage):
        ImageRef.from_parquet(tmp_path / "missing.parquet", 0, 0).load()


def _items(n: int) -> list[EvalItem]:
    return [
        EvalItem(id=f"q{i:03d}", image=ImageRef.from_path(f"{i}.png"), answers=["a"])
        for i in range(n)
    ]


def test_select_is_deterministic_sorted_and_nested() -> None:
    items = _items(50)
    shuffled = list(reversed(items))
    a = select(items, 10, seed=3)
    assert [i.id for i in a] == [i.id for i in select(shuffled, 10, seed=3)]
    assert [i.id for i in a] == sorted(i.id for i in a)
    assert {i.id for i in a} <= {i.id for i in select(items, 20, seed=3)}
    assert [i.id for i in a] != [i.id for i in select(items, 10, seed=4)]
    assert [i.id for i in select(shuffled, None)] == [i.id for i in items]
    assert len(select(items, 500)) == 50 and select(items, 0) == []
    with pytest.raises(ValueError):
        select(items, -1)
    record = selection_record(a, n_total=50, limit=10, seed=3)
    assert record["ids"] == [i.id for i in a] and record["n"] == 10 and record["n_total"] == 50


def test_gallery_flattens_captions() -> None:
    items = [
        EvalItem(id=str(i), image=ImageRef.from_path(f"{i}.png"), references=[f"c{i}a", f"c{i}b"])
        for i in range(6)
    ]
    items.append(EvalItem(id="none", image=ImageRef.from_path("n.png"), references=None))
    gallery = build_gallery(items, n_images=4, seed=0)
    assert len(gallery.images) == 4 and len(gallery.texts) == 8
    assert "none" not in gallery.image_ids
    for text, index, text_id in zip(
        gallery.texts, gallery.text_image, gallery.text_ids, strict=True
    ):
        assert text.startswith(f"c{gallery.images[index].id}")
        assert text_id.startswith(f"{gallery.images[index].id}#")
    assert build_gallery(items, n_images=4, seed=0) == gallery
