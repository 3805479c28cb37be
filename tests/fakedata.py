"""Tiny fake copies of the official data-set layouts, in their real file formats.

Used by the data-set, prepare_data and benchmark CLI tests. Images are small
noise images with a class-dependent mean colour; `kinds` adds grayscale, CMYK
JPEG and RGBA PNG files as the real data sets have.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

SIZE = 20


def write_image(path: str, cls: int, idx: int, kind: str = "rgb") -> None:
    """Writes one small image of class `cls` to `path` (format from `kind`)."""
    rng = np.random.default_rng(1000 * cls + idx)
    base = np.array([(37 * cls) % 256, (91 * cls) % 256, (53 * cls) % 256], np.float64)
    pixels = np.clip(base + rng.normal(0, 25, (SIZE + idx % 3, SIZE, 3)), 0, 255)
    img = Image.fromarray(pixels.astype(np.uint8))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if kind == "gray":
        img.convert("L").save(path, format="JPEG")
    elif kind == "cmyk":
        img.convert("CMYK").save(path, format="JPEG")
    elif kind == "rgba":
        img.convert("RGBA").save(path, format="PNG")
    else:
        img.save(path, format="JPEG", quality=90)


def _kind(i: int) -> str:
    return ("rgb", "gray", "cmyk", "rgba")[i % 4] if i < 4 else "rgb"


def make_cub(root: str, class_ids=(1, 2, 3, 101, 102, 103), per_class: int = 4) -> str:
    """Writes a fake `root/CUB_200_2011` and returns that folder.

    Returns:
      The CUB_200_2011 folder; images per class = `per_class`.
    """
    cub = os.path.join(root, "CUB_200_2011")
    lines, labels, split, boxes, classes = [], [], [], [], []
    n = 0
    for c in class_ids:
        cname = f"{c:03d}.Bird_{c}"
        classes.append(f"{c} {cname}")
        for j in range(per_class):
            n += 1
            rel = f"{cname}/Bird_{c}_{j:04d}_{n}.jpg"
            write_image(os.path.join(cub, "images", rel), c, j, _kind(n))
            lines.append(f"{n} {rel}")
            labels.append(f"{n} {c}")
            split.append(f"{n} {j % 2}")
            boxes.append(f"{n} 1.0 2.0 10.0 12.0")
    for name, rows in (("images.txt", lines), ("image_class_labels.txt", labels),
                       ("train_test_split.txt", split), ("bounding_boxes.txt", boxes),
                       ("classes.txt", classes)):
        with open(os.path.join(cub, name), "w") as f:
            f.write("\n".join(rows) + "\n")
    return cub


def make_cars(root: str, class_ids=(1, 2, 3, 99, 100, 101), per_class: int = 4) -> str:
    """Writes fake `root/car_ims/*.jpg` and `root/cars_annos.mat` (scipy MAT v5)."""
    from scipy import io as sio

    records = []
    n = 0
    for c in class_ids:
        for j in range(per_class):
            n += 1
            rel = f"car_ims/{n:06d}.jpg"
            write_image(os.path.join(root, rel), c, j, _kind(n))
            records.append((rel, c, j % 2))
    dtype = [("relative_im_path", "O"), ("bbox_x1", "O"), ("bbox_y1", "O"),
             ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("test", "O")]
    ann = np.zeros((1, len(records)), dtype=dtype)
    for i, (rel, c, test) in enumerate(records):
        ann[0, i] = (np.array([rel]), np.array([[1]], np.uint8), np.array([[2]], np.uint8),
                     np.array([[15]], np.uint8), np.array([[18]], np.uint8),
                     np.array([[c]], np.uint8), np.array([[test]], np.uint8))
    names = np.empty((1, max(196, max(class_ids))), dtype=object)
    for i in range(names.shape[1]):
        names[0, i] = np.array([f"Car Model {i + 1} 2012"])
    sio.savemat(os.path.join(root, "cars_annos.mat"), {"annotations": ann, "class_names": names})
    return root


def make_sop(root: str, train_classes=(1, 2, 3), test_classes=(4, 5, 6),
             per_class: int = 3) -> str:
    """Writes a fake `root/Stanford_Online_Products` and returns that folder."""
    sop = os.path.join(root, "Stanford_Online_Products")
    supers = ["bicycle", "chair", "lamp"]
    n = 0
    for list_name, ids in (("Ebay_train.txt", train_classes), ("Ebay_test.txt", test_classes)):
        rows = ["image_id class_id super_class_id path"]
        for c in ids:
            s = c % 3
            for j in range(per_class):
                n += 1
                rel = f"{supers[s]}_final/{100000 + c}_{j}.JPG"
                write_image(os.path.join(sop, rel), c, j, "rgb" if n % 5 else "gray")
                rows.append(f"{n} {c} {s + 1} {rel}")
        with open(os.path.join(sop, list_name), "w") as f:
            f.write("\n".join(rows) + "\n")
    return sop


def make_folder(root: str, train=("cat", "dog", "owl"), test=("eel", "fox", "cat"),
                per_class: int = 3) -> str:
    """Writes `root/train/<class>/*` and `root/test/<class>/*` (JPEG and PNG)."""
    for split, names in (("train", train), ("test", test)):
        for c, name in enumerate(names):
            for j in range(per_class):
                ext = ".png" if j == 1 else ".jpg"
                write_image(os.path.join(root, split, name, f"img{j}{ext}"), c, j,
                            "rgba" if ext == ".png" else "rgb")
    return root


def corrupt(path: str, how: str = "truncate") -> None:
    """Truncates a JPEG to half its bytes, or empties it (`how="empty"`)."""
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2] if how == "truncate" else b"")
