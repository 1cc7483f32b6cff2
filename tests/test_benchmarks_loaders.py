"""Each benchmark loader on small fixtures in the real layouts, and the wrong-layout errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vlm_retain.data.benchmarks import (
    BadImage,
    load_coco,
    load_docvqa,
    load_flickr30k,
    load_ocr,
    load_textvqa,
    load_vqav2,
)
from vlm_retain.data.manifest import Record, write_manifest
from vlm_retain.data.synthetic.layouts import (
    CaptionImage,
    VqaItem,
    coco_captions_document,
    coco_image_name,
    karpathy_document,
    write_json,
    write_vqa,
)
from vlm_retain.errors import InputError

INFO = {"description": "test", "version": "2.0", "year": 2017}
LICENSE = {"url": "", "name": "test"}
TEN = (("yes", "yes"),) * 8 + (("yeah", "maybe"), ("no", "no"))


def save_image(path: Path, color: tuple[int, int, int] = (10, 20, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 4), color).save(path)


def png_bytes(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buffer, format="PNG")
    return buffer.getvalue()


def vqa_items() -> list[VqaItem]:
    return [
        VqaItem(42001, 42, "Is there a dog?", "yes/no", TEN),
        VqaItem(42002, 42, "How many cats?", "number", (("2", "yes"),) * 10),
        VqaItem(7001, 7, "What color is the bus?", "other", (("red", "yes"),) * 10),
    ]


# --- VQAv2 ------------------------------------------------------------------------------------


def test_vqav2_official_layout_with_jpg_images(tmp_path: Path) -> None:
    root = tmp_path / "VQAv2"
    write_vqa(root, "val2014", vqa_items(), info=INFO, license=LICENSE)
    write_vqa(root, "train2014", vqa_items()[:1], info=INFO, license=LICENSE)
    images = tmp_path / "images" / "val2014"
    save_image(images / coco_image_name("val2014", 42, "jpg"))  # image 7 is missing
    items = load_vqav2([root])
    assert [item.id for item in items] == ["42001", "42002", "7001"]
    first = items[0]
    assert first.question == "Is there a dog?"
    assert first.answers is not None and len(first.answers) == 10 and "yeah" in first.answers
    assert first.fields["split"] == "val2014"
    assert first.fields["answer_type"] == "yes/no" and first.fields["image_id"] == 42
    assert first.fields["question_type"] == "is there a"
    assert first.image.path == images / "COCO_val2014_000000000042.jpg"
    assert first.image.load().size == (6, 4)
    with pytest.raises(BadImage, match="missing"):
        items[2].image.load()  # not fatal at load time; the runner counts it
    assert load_vqav2([root], split="train2014")[0].fields["split"] == "train2014"
    with pytest.raises(InputError, match="no split 'test2015'"):
        load_vqav2([root], split="test2015")


def test_vqav2_images_under_official_images_folder(tmp_path: Path) -> None:
    root = tmp_path / "vqa"
    write_vqa(root, "val2014", vqa_items(), info=INFO, license=LICENSE)
    save_image(root / "Images" / "mscoco" / "val2014" / coco_image_name("val2014", 7, "png"))
    item = load_vqav2([root])[2]
    assert item.image.load().size == (6, 4)
    explicit = tmp_path / "elsewhere"
    save_image(explicit / coco_image_name("val2014", 7, "jpg"))
    item = load_vqav2([root], images=explicit)[2]
    assert item.image.path == explicit / "COCO_val2014_000000000007.jpg"


def test_vqav2_wrong_layout_names_the_file(tmp_path: Path) -> None:
    root = tmp_path / "vqa"
    q_path, a_path = write_vqa(root, "val2014", vqa_items(), info=INFO, license=LICENSE)
    doc = json.loads(a_path.read_text())
    doc["annotations"][1]["answers"] = doc["annotations"][1]["answers"][:3]
    a_path.write_text(json.dumps(doc))
    with pytest.raises(InputError) as caught:
        load_vqav2([root])
    message = str(caught.value)
    assert str(a_path) in message and "3 answers, expected 10" in message
    assert "wrong layout" in message

    q_doc = json.loads(q_path.read_text())
    del q_doc["task_type"]
    q_path.write_text(json.dumps(q_doc))
    with pytest.raises(InputError, match="task_type") as caught:
        load_vqav2([root])
    assert str(q_path) in str(caught.value)

    q_path.write_text("{not json")
    with pytest.raises(InputError, match="malformed JSON") as caught:
        load_vqav2([root])
    assert str(q_path) in str(caught.value)


def test_vqav2_questions_without_annotations(tmp_path: Path) -> None:
    root = tmp_path / "vqa"
    _, a_path = write_vqa(root, "test2015", vqa_items(), info=INFO, license=LICENSE)
    a_path.unlink()
    with pytest.raises(InputError, match="not public"):
        load_vqav2([root])
    with pytest.raises(InputError, match="no Questions"):
        load_vqav2([tmp_path])


def test_vqav2_lmms_lab_parquet(tmp_path: Path) -> None:
    first = [
        {"answer": a, "answer_confidence": c, "answer_id": k + 1} for k, (a, c) in enumerate(TEN)
    ]
    rows = {
        "question_type": ["is there a", "how many"],
        "multiple_choice_answer": ["yes", "2"],
        "answers": [first, [{"answer": "2", "answer_confidence": "yes",
                                         "answer_id": k} for k in range(1, 11)]],
        "image_id": [42, 43],
        "answer_type": ["yes/no", "number"],
        "question_id": [42001, 43001],
        "question": ["Is there a dog?", "How many cats?"],
        "image": [{"bytes": png_bytes((1, 1, 1)), "path": "a.jpg"},
                  {"bytes": png_bytes((2, 2, 2)), "path": "b.jpg"}],
    }  # fmt: skip
    folder = tmp_path / "VQAv2" / "data"
    folder.mkdir(parents=True)
    pq.write_table(pa.table(rows), folder / "validation-00000-of-00001.parquet")
    test_rows = dict(rows, answers=[None, None])
    pq.write_table(pa.table(test_rows), folder / "test-00000-of-00001.parquet")
    items = load_vqav2(sorted(folder.glob("*.parquet")))
    assert [i.id for i in items] == ["42001", "43001"]
    assert items[0].answers == [a for a, _ in TEN] and items[0].fields["split"] == "validation"
    assert items[1].fields["answer_type"] == "number"
    assert items[1].image.load().getpixel((0, 0)) == (2, 2, 2)
    with pytest.raises(InputError, match="no answers"):
        load_vqav2(sorted(folder.glob("*.parquet")), split="test")
    bad = tmp_path / "bad" / "validation-00000-of-00001.parquet"
    bad.parent.mkdir()
    pq.write_table(pa.table({"question_id": [1], "image": rows["image"][:1]}), bad)
    with pytest.raises(InputError, match="missing column 'question'") as caught:
        load_vqav2([bad])
    assert str(bad) in str(caught.value)


# --- COCO and Flickr30k -----------------------------------------------------------------------


def caption_images(folder: str, split_of: dict[int, str]) -> list[CaptionImage]:
    return [
        CaptionImage(
            image_id=i,
            folder=folder,
            file_name=coco_image_name(folder, i, "jpg"),
            width=6,
            height=4,
            split=split,
            captions=tuple(f"caption {k} of image {i}." for k in range(5)),
        )
        for i, split in split_of.items()
    ]


def coco_tree(tmp_path: Path) -> Path:
    val = caption_images("val2014", {1: "test", 2: "test", 3: "val", 4: "restval"})
    write_json(
        tmp_path / "coco" / "annotations" / "captions_val2014.json",
        coco_captions_document(val, info=INFO, licenses=[{"url": "", "id": 1, "name": "x"}]),
    )
    write_json(tmp_path / "karpathy" / "dataset_coco.json", karpathy_document(val, dataset="coco"))
    save_image(tmp_path / "images" / "val2014" / coco_image_name("val2014", 1, "jpg"))
    return tmp_path


def test_coco_karpathy_test_split_with_official_captions(tmp_path: Path) -> None:
    coco_tree(tmp_path)
    sources = [
        tmp_path / "karpathy" / "dataset_coco.json",
        tmp_path / "coco" / "annotations" / "captions_val2014.json",
    ]
    items = load_coco(sources)
    assert [i.id for i in items] == ["1", "2"]
    assert items[0].references == [f"caption {k} of image 1." for k in range(5)]
    assert items[0].fields["split"] == "test"
    assert items[0].fields["references_from"] == "captions_val2014.json"
    assert items[0].image.load().size == (6, 4)
    assert items[0].image.path == tmp_path / "images" / "val2014" / "COCO_val2014_000000000001.jpg"
    assert [i.id for i in load_coco(sources, split="val")] == ["3"]
    alone = load_coco(sources[:1])  # Karpathy alone: its raw sentences
    assert alone[0].fields["references_from"] == "dataset_coco.json"
    assert alone[0].references == items[0].references


def test_coco_captions_file_alone_is_the_whole_subtype(tmp_path: Path) -> None:
    coco_tree(tmp_path)
    items = load_coco([tmp_path / "coco" / "annotations" / "captions_val2014.json"])
    assert [i.id for i in items] == ["1", "2", "3", "4"] and items[0].fields["split"] == "val2014"
    assert items[0].image.load().size == (6, 4)


def test_coco_wrong_layout_names_the_file(tmp_path: Path) -> None:
    coco_tree(tmp_path)
    path = tmp_path / "karpathy" / "dataset_coco.json"
    doc = json.loads(path.read_text())
    del doc["images"][0]["cocoid"]
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="cocoid") as caught:
        load_coco([path])
    assert str(path) in str(caught.value) and "wrong layout" in str(caught.value)
    captions = tmp_path / "coco" / "annotations" / "captions_val2014.json"
    doc = json.loads(captions.read_text())
    doc["annotations"][0]["image_id"] = 999
    captions.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="999") as caught:
        load_coco([captions])
    assert str(captions) in str(caught.value)


def test_coco_lmms_lab_parquet(tmp_path: Path) -> None:
    rows = {
        "question_id": ["COCO_val2014_000000000042.jpg", "COCO_val2014_000000000043.jpg"],
        "image": [{"bytes": png_bytes((5, 5, 5)), "path": None}] * 2,
        "question": ["Provide a one-sentence caption for the provided image."] * 2,
        "answer": [["a dog.", "a brown dog"], ["two cats"]],
        "id": [42, 43],
        "file_name": ["COCO_val2014_000000000042.jpg", "COCO_val2014_000000000043.jpg"],
    }
    path = tmp_path / "val-00000-of-00001.parquet"
    pq.write_table(pa.table(rows), path)
    items = load_coco([path])
    assert [i.id for i in items] == ["42", "43"] and items[0].references == [
        "a dog.",
        "a brown dog",
    ]
    assert items[1].fields["split"] == "val" and items[1].image.load().size == (4, 4)


def flickr_doc(n_test: int = 3) -> dict:
    images = []
    sentid = 0
    for imgid in range(n_test + 1):
        split = "test" if imgid < n_test else "train"
        sentences = []
        for k in range(5):
            sentences.append({"tokens": ["a", "man"], "raw": f"A man {imgid}-{k} .",
                              "imgid": imgid, "sentid": sentid})  # fmt: skip
            sentid += 1
        images.append({"sentids": [s["sentid"] for s in sentences], "imgid": imgid,
                       "sentences": sentences, "split": split,
                       "filename": f"{1000 + imgid}.jpg"})  # fmt: skip
    return {"images": images, "dataset": "flickr30k"}


def test_flickr30k_karpathy_test_split(tmp_path: Path) -> None:
    path = tmp_path / "dataset_flickr30k.json"
    path.write_text(json.dumps(flickr_doc()))
    save_image(tmp_path / "flickr30k-images" / "1001.jpg")
    items = load_flickr30k([path])
    assert [i.id for i in items] == ["1000", "1001", "1002"]
    assert items[1].references == [f"A man 1-{k} ." for k in range(5)]
    assert items[1].fields["split"] == "test" and items[1].fields["filename"] == "1001.jpg"
    assert items[1].image.load().size == (6, 4)
    assert [i.id for i in load_flickr30k([path], split="train")] == ["1003"]
    doc = flickr_doc()
    doc["dataset"] = "coco"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="expected 'flickr30k'") as caught:
        load_flickr30k([path])
    assert str(path) in str(caught.value)


def test_flickr30k_lmms_lab_parquet(tmp_path: Path) -> None:
    rows = {
        "image": [{"bytes": png_bytes((9, 9, 9)), "path": None}],
        "caption": [["a", "b", "c", "d", "e"]],
        "sentids": [["0", "1", "2", "3", "4"]],
        "img_id": ["0"],
        "filename": ["1000092795.jpg"],
    }
    path = tmp_path / "test-00000-of-00009.parquet"
    pq.write_table(pa.table(rows), path)
    (item,) = load_flickr30k([path])
    assert item.id == "1000092795" and item.references == ["a", "b", "c", "d", "e"]
    assert item.fields["split"] == "test" and "not Karpathy" in item.fields["references_from"]


# --- TextVQA, DocVQA, OCR ---------------------------------------------------------------------


def test_textvqa_official_json(tmp_path: Path) -> None:
    data = [
        {"question_id": 34602, "question": "what is the brand of this camera?",
         "image_id": "003a8ae2ef43b901", "answers": ["dakota"] * 9 + ["nous les gosses"],
         "image_classes": ["Camera"], "set_name": "val"},
        {"question_id": 34603, "question": "what does the small white text spell?",
         "image_id": "003a8ae2ef43b902", "answers": ["copenhagen"] * 10, "set_name": "val"},
    ]  # fmt: skip
    path = tmp_path / "TextVQA_0.5.1_val.json"
    path.write_text(json.dumps({"dataset_type": "val", "dataset_name": "textvqa", "data": data}))
    save_image(tmp_path / "train_images" / "003a8ae2ef43b901.jpg")
    items = load_textvqa([path])
    assert [i.id for i in items] == ["34602", "34603"]
    assert items[0].answers is not None and len(items[0].answers) == 10
    assert items[0].fields == {"split": "val", "image_id": "003a8ae2ef43b901"}
    assert items[0].image.load().size == (6, 4)
    del data[1]["question"]
    path.write_text(json.dumps({"data": data}))
    with pytest.raises(InputError, match=r"data\[1\]: missing key 'question'") as caught:
        load_textvqa([path])
    assert str(path) in str(caught.value)


def test_docvqa_official_json(tmp_path: Path) -> None:
    data = [
        {"questionId": 49153, "question": "What is the ‘actual’ value per 1000?",
         "question_types": ["figure/diagram"], "image": "documents/pybv0228_81.png",
         "docId": 14465, "ucsf_document_id": "pybv0228", "ucsf_document_page_no": "81",
         "answers": ["0.28"], "data_split": "val"},
    ]  # fmt: skip
    folder = tmp_path / "val"
    folder.mkdir()
    path = folder / "val_v1.0.json"
    path.write_text(json.dumps({"dataset_name": "docvqa", "dataset_split": "val", "data": data}))
    save_image(folder / "documents" / "pybv0228_81.png")
    (item,) = load_docvqa([path])
    assert item.id == "49153" and item.answers == ["0.28"] and item.fields["doc_id"] == 14465
    assert item.image.load().size == (6, 4)
    del data[0]["answers"]
    path.write_text(json.dumps({"data": data}))
    with pytest.raises(InputError, match="not public"):
        load_docvqa([path])
    path.write_text(json.dumps({"questions": []}))
    with pytest.raises(InputError, match="missing key 'data'") as caught:
        load_docvqa([path])
    assert str(path) in str(caught.value)


def test_textvqa_and_docvqa_parquet(tmp_path: Path) -> None:
    image = [{"bytes": png_bytes((3, 3, 3)), "path": None}]
    text = tmp_path / "validation-00000-of-00003.parquet"
    pq.write_table(pa.table({"image_id": ["x"], "question_id": [7], "question": ["what?"],
                             "answers": [["a"] * 10], "image": image,
                             "ocr_tokens": [["a"]]}), text)  # fmt: skip
    (item,) = load_textvqa([text])
    assert item.id == "7" and item.answers == ["a"] * 10 and item.fields["split"] == "validation"
    doc = tmp_path / "doc" / "validation-00000-of-00006.parquet"
    doc.parent.mkdir()
    pq.write_table(pa.table({"questionId": ["9"], "question": ["who?"],
                             "question_types": [["form"]], "image": image, "docId": [1],
                             "answers": [["me", "I"]], "data_split": ["val"]}), doc)  # fmt: skip
    (item,) = load_docvqa([doc])
    assert item.id == "9" and item.answers == ["me", "I"]
    assert item.image.load().getpixel((0, 0)) == (3, 3, 3)


def test_ocr_manifest_split_filter(tmp_path: Path) -> None:
    records = [
        Record.create(id=f"l{i}", image=f"images/l{i}.png", text=f"line {i}", lang="en",
                      source="iam", split=split, meta={"writer": "w1"})
        for i, split in enumerate(["train", "test", "test", "val"])
    ]  # fmt: skip
    records.append(
        Record.create(id="v1", image="images/v.png", text="yes", lang="en", source="hf",
                      split="test", task="vqa")
    )  # fmt: skip
    write_manifest(tmp_path / "manifest.jsonl", records)
    save_image(tmp_path / "images" / "l1.png")
    items = load_ocr([tmp_path])
    assert [i.id for i in items] == ["l1", "l2"]
    assert items[0].reference == "line 1" and items[0].fields["lang"] == "en"
    assert items[0].fields["meta"] == {"writer": "w1"} and items[0].fields["split"] == "test"
    assert items[0].image.load().size == (6, 4)
    assert [i.id for i in load_ocr([tmp_path], split="val")] == ["l3"]
    with pytest.raises(InputError, match="no split 'dev'"):
        load_ocr([tmp_path], split="dev")
