"""CelebA as two modalities: a 64x64 face image and a text built from its 40 binary attributes.

CelebA cannot be downloaded by the book. Get the *aligned and cropped* images and two annotation files from
https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html and arrange them as::

    <data folder>/raw/celeba/            (by default data/raw/celeba/ in the checkout)
        img_align_celeba/000001.jpg ...  (202,599 JPEGs of 178x218 pixels)
        list_attr_celeba.txt             (count, 40 attribute names, then "<file> <40 values of -1/1>")
        list_eval_partition.txt          ("<file> <0|1|2>": train / valid / test)

Images are centre-cropped to 148x148 and resized to 64x64 (as in the authors' code), then stored as uint8.
The text modality lists the attributes a face has, lower case and comma separated (``"arched eyebrows,
attractive, brown hair, ..."``), padded with spaces to 256 characters of the 71-symbol alphabet of
:mod:`.text` (the authors build the same kind of string). The attributes themselves are kept as the label,
packed into one int64 per face (:func:`unpack_attributes` gives the ``(N, 40)`` bools back).

Preprocessing all images takes a few minutes; the result is cached in ``raw/celeba/processed-64/`` with its
sha256 in a manifest, checked on every load (a corrupt cache is an error, never silently used).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..integrity import DataError, MissingDataError, atomic_write_bytes, sha256_file, verify_file, write_json
from ..settings import data_dir
from .dataset import MultimodalDataset
from .text import encode_indices

CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
SPLITS = {"train": 0, "valid": 1, "test": 2}
MODALITIES = ("image", "text")
NUM_ATTRIBUTES = 40
TEXT_LENGTH = 256
CROP = 148


def celeba_root(root: Path | str | None = None) -> Path:
    return Path(root) if root is not None else data_dir() / "raw" / "celeba"


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise MissingDataError(path, f"download it from {CELEBA_URL} (see mopoe_lib/data/celeba.py for the layout)",
                               what)
    return path


def read_attributes(path: Path | str) -> tuple[list[str], list[str], Tensor]:
    """Parse ``list_attr_celeba.txt``: attribute names, file names and a bool tensor ``(N, 40)``.

    Raises:
        DataError: a malformed file (wrong count, wrong number of values, values other than -1/1).
    """
    lines = Path(path).read_text().splitlines()
    if len(lines) < 2:
        raise DataError(f"{path}: expected a count line and a header line")
    try:
        count = int(lines[0].strip())
    except ValueError as error:
        raise DataError(f"{path}: the first line must be the number of images, got {lines[0]!r}") from error
    names = lines[1].split()
    if len(names) != NUM_ATTRIBUTES:
        raise DataError(f"{path}: expected {NUM_ATTRIBUTES} attribute names, got {len(names)}")
    rows = [line.split() for line in lines[2:] if line.strip()]
    if len(rows) != count:
        raise DataError(f"{path}: the header announces {count} images but {len(rows)} rows follow (truncated?)")
    files = [r[0] for r in rows]
    bad = next((i for i, r in enumerate(rows) if len(r) != NUM_ATTRIBUTES + 1 or set(r[1:]) - {"1", "-1"}), None)
    if bad is not None:
        raise DataError(f"{path}: row {bad + 3} ({files[bad]}) needs {NUM_ATTRIBUTES} values of -1 or 1")
    values = torch.tensor([[v == "1" for v in r[1:]] for r in rows], dtype=torch.bool).reshape(-1, NUM_ATTRIBUTES)
    return names, files, values


def read_partition(path: Path | str) -> dict[str, int]:
    """Parse ``list_eval_partition.txt`` into ``{file: 0 | 1 | 2}`` (train / valid / test)."""
    out = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DataError(f"{path}: line {number} must be '<file> <0|1|2>', got {line!r}")
        out[parts[0]] = int(parts[1])
    return out


def attribute_text(names: Sequence[str], present: Sequence[bool] | Tensor, length: int = TEXT_LENGTH) -> str:
    """The text of one face: its attributes in file order, lower case, comma separated, at most ``length``
    characters (whole attributes are dropped from the end if the list is longer)."""
    words = [n.lower().replace("_", " ") for n, p in zip(names, present, strict=True) if bool(p)]
    text = ", ".join(words)
    while len(text) > length:
        words.pop()
        text = ", ".join(words)
    return text


def pack_attributes(values: Tensor) -> Tensor:
    """``(N, 40)`` bools -> one int64 per row (bit k = attribute k)."""
    bits = torch.tensor([1 << k for k in range(values.shape[1])], dtype=torch.int64)
    return (values.long() * bits).sum(dim=1)


def unpack_attributes(labels: Tensor, count: int = NUM_ATTRIBUTES) -> Tensor:
    """Inverse of :func:`pack_attributes`: ``(N,)`` int64 -> ``(N, count)`` bools."""
    bits = torch.tensor([1 << k for k in range(count)], dtype=torch.int64, device=labels.device)
    return (labels.long().unsqueeze(1) & bits) != 0


def load_image(path: Path | str, size: int = 64, crop: int = CROP) -> np.ndarray:
    """One aligned CelebA JPEG -> ``(3, size, size)`` uint8: centre crop ``crop`` x ``crop``, then resize."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        width, height = image.size
        left, top = (width - crop) // 2, (height - crop) // 2
        image = image.crop((left, top, left + crop, top + crop)).resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()


def _preprocess(root: Path, split: str, size: int, progress: bool) -> dict[str, np.ndarray]:
    names, files, values = read_attributes(_require(root / "list_attr_celeba.txt", "CelebA attributes"))
    partition = read_partition(_require(root / "list_eval_partition.txt", "CelebA partition"))
    folder = _require(root / "img_align_celeba", "CelebA aligned images")
    missing = [f for f in files if f not in partition]
    if missing:
        raise DataError(f"{len(missing)} images of list_attr_celeba.txt have no partition entry, e.g. {missing[0]}")
    rows = [i for i, f in enumerate(files) if partition[f] == SPLITS[split]]
    images = np.empty((len(rows), 3, size, size), dtype=np.uint8)
    for k, i in enumerate(tqdm(rows, desc=f"CelebA {split} images", disable=not progress)):
        images[k] = load_image(_require(folder / files[i], "a CelebA image"), size)
    texts = [attribute_text(names, values[i]) for i in rows]
    return {
        "images": images,
        "text": encode_indices(texts, TEXT_LENGTH).to(torch.int32).numpy(),
        "attributes": values[rows].numpy(),
        "names": np.array(names),
    }


def load_celeba(split: str, root: Path | str | None = None, size: int = 64, limit: int | None = None,
                progress: bool = True) -> MultimodalDataset:
    """The ``split`` (``train``/``valid``/``test``) of CelebA as a :class:`MultimodalDataset` named
    ``("image", "text")``: images ``(3, size, size)`` uint8, text as character indices ``(256,)`` int32, labels
    the packed attributes. The first call preprocesses and caches the split (a few minutes for all images).

    Raises:
        MissingDataError: a file of the layout above is missing (the message names it and the download page).
        DataError / ChecksumError: malformed annotations or a corrupt cache.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    root = celeba_root(root)
    cache = root / f"processed-{size}" / f"{split}.npz"
    manifest = cache.with_suffix(".json")
    command = f"python -c \"from mopoe_lib.data.celeba import load_celeba; load_celeba('{split}', '{root}')\""
    if cache.exists() and manifest.exists():
        verify_file(cache, json.loads(manifest.read_text())["sha256"], command)
        with np.load(cache) as stored:
            arrays = {k: stored[k] for k in stored.files}
    else:
        arrays = _preprocess(root, split, size, progress)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache, buffer.getvalue())
        write_json(manifest, {"sha256": sha256_file(cache), "split": split, "size": size, "crop": CROP,
                              "count": int(arrays["images"].shape[0])})
    stop = limit if limit is not None else None
    images = torch.from_numpy(arrays["images"][:stop])
    text = torch.from_numpy(arrays["text"][:stop])
    labels = pack_attributes(torch.from_numpy(arrays["attributes"][:stop]))
    return MultimodalDataset([images, text], labels, MODALITIES)


def attribute_names(root: Path | str | None = None) -> list[str]:
    """The 40 attribute names, in file order."""
    return read_attributes(_require(celeba_root(root) / "list_attr_celeba.txt", "CelebA attributes"))[0]
