"""Write a built-in dataset as the files `data.dataset: images | csv` reads: PNG files in
class folders (fastai's mnist_png layout), or CSV files of pixel rows (Kaggle's layout).

    python scripts/export_images.py --dataset mnist --format png --out data/mnist_png
        # data/mnist_png/training/0/00001.png ... data/mnist_png/testing/9/...
    python scripts/export_images.py --dataset mnist --format csv --out data/mnist_csv
        # train.csv and test.csv: label,pixel0,...,pixel783 (the label is the class index)
    python scripts/export_images.py --dataset mnist --format kaggle --out data/kaggle
        # train.csv as above; test.csv without labels, as the competition gives it
    python scripts/export_images.py --dataset fashion_mnist --format png \
        --train 1000 --test 200 --out /tmp/small        # the first 1,000 and 200 images

Class folders are named after the classes ('/' becomes '-': 'T-shirt-top'). The output
folder is written under a temporary name and renamed when complete, so an interrupted
export leaves nothing that looks finished. The data comes from --data-source,
$MLPTRAIN_DATA_SOURCE or ../shared/datasets.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from mlptrain.config.schema import BUILTIN_DATASETS, DataConfig
from mlptrain.data.registry import (
    DATASETS,
    FILES,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    find_source,
    prepare_files,
    read_pair,
)
from mlptrain.errors import UsageError

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=BUILTIN_DATASETS, default="mnist")
    parser.add_argument("--format", choices=("png", "csv", "kaggle"), required=True)
    parser.add_argument("--out", required=True, help="the folder to create")
    parser.add_argument("--train", type=int, help="only the first N training images")
    parser.add_argument("--test", type=int, help="only the first N test images")
    parser.add_argument("--data-source", default=None)
    parser.add_argument("--data-root", default=str(REPO / "data"))
    return parser.parse_args(argv)


def folder_name(class_name: str) -> str:
    return class_name.replace("/", "-").replace("\\", "-")


def write_png(folder: Path, split: str, images: np.ndarray, labels: np.ndarray, names) -> None:
    from PIL import Image

    for name in names:
        (folder / split / folder_name(name)).mkdir(parents=True)
    for number, (image, label) in enumerate(zip(images, labels, strict=True), 1):
        Image.fromarray(image).save(
            folder / split / folder_name(names[label]) / f"{number:05d}.png"
        )


def write_csv(path: Path, images: np.ndarray, labels: np.ndarray | None) -> None:
    pixels = images.reshape(len(images), -1).astype(np.int64)
    columns = [f"pixel{i}" for i in range(pixels.shape[1])]
    if labels is not None:
        pixels = np.column_stack([labels, pixels])
        columns.insert(0, "label")
    np.savetxt(path, pixels, fmt="%d", delimiter=",", header=",".join(columns), comments="")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if out.exists():
        print(f"export_images: {out} exists; name a new folder", file=sys.stderr)
        return 2
    info = DATASETS[args.dataset]
    data = DataConfig(
        dataset=args.dataset, root=args.data_root, source=find_source(args.data_source, REPO)
    )
    try:
        files = prepare_files(info, data, FILES)
        train = read_pair(info, files, TRAIN_IMAGES, TRAIN_LABELS, data.verify)
        test = read_pair(info, files, TEST_IMAGES, TEST_LABELS, data.verify)
    except UsageError as exc:
        print(f"export_images: {exc}", file=sys.stderr)
        return 2
    splits = {
        "train": [array[: args.train] for array in train],
        "test": [array[: args.test] for array in test],
    }
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    names = list(info.class_names)
    if args.format == "png":
        write_png(partial, "training", *splits["train"], names)
        write_png(partial, "testing", *splits["test"], names)
    else:
        write_csv(partial / "train.csv", *splits["train"])
        test_images, test_labels = splits["test"]
        write_csv(
            partial / "test.csv", test_images, None if args.format == "kaggle" else test_labels
        )
    partial.rename(out)
    counts = f"{len(splits['train'][1]):,} training and {len(splits['test'][1]):,} test images"
    print(f"wrote {info.title} ({counts}) as {args.format} into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
