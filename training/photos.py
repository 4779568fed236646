"""Real photos for the CIFAR-10 classifiers, cut from PASCAL VOC: how the Classification tab does on the kind of
photo a user uploads, far from CIFAR-10's 32x32 thumbnails.

    python -m training.photos --out data_cache/voc-photos            # VOC2007 trainval from ../shared/datasets
    python -m training.classify evaluate --weights weights/resnet18-cifar10 --data data_cache/voc-photos/photos --tta 2

Seven VOC classes are CIFAR-10 classes (aeroplane, car, bird, boat, cat, dog, horse). Two ImageFolder trees with
CIFAR-10 class names are written, which ``training.classify evaluate --data`` reads like any folder of photos:

- ``photos/``: whole images (copied as they are) with exactly one annotated object, not ``difficult``, of those
  classes, whose box covers at least ``--min-area`` of the image: ordinary photos of one subject;
- ``objects/``: every object of those classes that is neither ``difficult`` nor truncated and whose box is at
  least ``--min-side`` pixels a side, cut out with a ``--margin`` of its size on each side (PNG).

None of the classifiers saw VOC; the detector trains on VOC2007 ``train``, which does not matter here.
``--data`` is the folder holding ``VOCdevkit/`` or a ``VOCdevkit/VOC20xx`` folder (see ``training.detect``).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from training.common import fail, one_line_errors, print_json
from training.detect import voc_dataset, voc_objects

VOC_TO_CIFAR = {"aeroplane": "airplane", "car": "automobile", "bird": "bird", "boat": "ship", "cat": "cat",
                "dog": "dog", "horse": "horse"}


TREES = ("photos", "objects")
MARKER = ".written-by-training.photos"  # in each tree this script wrote: only those are replaced on a rerun


def check_out(out: str | Path) -> None:
    """A one-line error when ``out/photos`` or ``out/objects`` holds files this script did not write."""
    for tree in TREES:
        folder = Path(out) / tree
        if folder.is_dir() and any(folder.iterdir()) and not (folder / MARKER).exists():
            fail(f"{folder} exists and was not written by training.photos: move it away or choose another --out")
        if folder.exists() and not folder.is_dir():
            fail(f"{folder} is a file: choose another --out")


def write_photos(dataset, out: str | Path, min_area: float = 0.2, min_side: int = 32,
                 margin: float = 0.1) -> dict[str, dict[str, int]]:
    """Write ``out/photos/<class>/`` and ``out/objects/<class>/`` from a VOCDetection dataset; the counts.
    Both trees are built in a temporary folder inside ``out`` and then replace the earlier run's, so a failed
    run leaves the earlier ones as they were (and nothing stale is mixed in)."""
    check_out(out)
    Path(out).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".building-") as tmp:
        counts = _write_trees(dataset, Path(tmp), min_area, min_side, margin)
        for tree in TREES:
            (Path(tmp) / tree).mkdir(exist_ok=True)
            (Path(tmp) / tree / MARKER).touch()
            shutil.rmtree(Path(out) / tree, ignore_errors=True)
            os.replace(Path(tmp) / tree, Path(out) / tree)
    return counts


def _write_trees(dataset, out: Path, min_area: float, min_side: int, margin: float) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {"photos": {}, "objects": {}}

    def save(tree: str, cls: str) -> Path:
        (out / tree / cls).mkdir(parents=True, exist_ok=True)
        counts[tree][cls] = counts[tree].get(cls, 0) + 1
        return out / tree / cls

    for image_path, xml_path in tqdm(list(zip(dataset.images, dataset.annotations)), desc="VOC", unit="image"):
        stem = Path(image_path).stem
        objects = voc_objects(dataset.parse_voc_xml(ET.parse(xml_path).getroot()))
        if not any(o["name"] in VOC_TO_CIFAR for o in objects):
            continue  # nothing of the seven classes: no need to decode the image
        with Image.open(image_path) as image:
            image = image.convert("RGB")
            width, height = image.size
            if len(objects) == 1 and objects[0]["name"] in VOC_TO_CIFAR and not objects[0]["difficult"]:
                x0, y0, x1, y1 = objects[0]["box"]
                if (x1 - x0) * (y1 - y0) >= min_area * width * height:
                    shutil.copyfile(image_path, save("photos", VOC_TO_CIFAR[objects[0]["name"]]) / f"{stem}.jpg")
            for k, o in enumerate(objects):
                x0, y0, x1, y1 = o["box"]
                w, h = x1 - x0, y1 - y0
                if o["name"] not in VOC_TO_CIFAR or o["difficult"] or o["truncated"] or min(w, h) < min_side:
                    continue
                box = (max(0, x0 - margin * w), max(0, y0 - margin * h),
                       min(width, x1 + margin * w), min(height, y1 + margin * h))
                image.crop(tuple(round(v) for v in box)).save(
                    save("objects", VOC_TO_CIFAR[o["name"]]) / f"{stem}_{k}.png")
    return {tree: dict(sorted(c.items())) for tree, c in counts.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder to write photos/ and objects/ into")
    p.add_argument("--data", default=None, help="folder holding VOCdevkit/ (default ../shared/datasets)")
    p.add_argument("--year", default="2007")
    p.add_argument("--split", default="trainval")
    p.add_argument("--min-area", type=float, default=0.2, help="photos/: the subject's box / the image")
    p.add_argument("--min-side", type=int, default=32, help="objects/: the shorter box side, pixels")
    p.add_argument("--margin", type=float, default=0.1, help="objects/: context kept around the box")
    args = p.parse_args(argv)
    if not 0 <= args.min_area <= 1 or args.min_side < 1 or args.margin < 0:
        fail("need 0 <= --min-area <= 1, --min-side >= 1 and --margin >= 0")
    sys.excepthook = one_line_errors  # e.g. a corrupt annotation: one line, not a traceback
    try:
        dataset = voc_dataset(args.data, args.split, args.year)
    except FileNotFoundError as e:
        fail(str(e))
    counts = write_photos(dataset, args.out, args.min_area, args.min_side, args.margin)
    print_json({"out": str(args.out), "split": f"VOC{args.year} {args.split}",
                **{tree: {"total": sum(c.values()), **c} for tree, c in counts.items()}})


if __name__ == "__main__":
    main()
