"""Natural background images for PolyMNIST, taken from files that ship inside installed packages.

The official PolyMNIST backgrounds are not redistributed with the authors' code, so we use five lossless PNG
photographs that ship with scikit-image (a declared dependency). PNG decoding is exact, so the pixels, and
therefore the generated data set, are the same on every machine. Each image's sha256 is recorded in the
data set's manifest.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..integrity import DataError, sha256_file


@dataclass(frozen=True)
class Background:
    """A background image: where it came from and its pixels ``(H, W, 3)`` uint8."""

    name: str
    package: str
    relative_path: str
    pixels: np.ndarray

    def provenance(self) -> dict[str, object]:
        path = package_file(self.package, self.relative_path)
        return {
            "name": self.name,
            "package": self.package,
            "package_version": importlib.metadata.version(_DIST_NAMES.get(self.package, self.package)),
            "file": self.relative_path,
            "sha256": sha256_file(path),
            "shape": list(self.pixels.shape),
        }


_DIST_NAMES = {"skimage": "scikit-image", "sklearn": "scikit-learn"}

#: One background per modality, in modality order: (name, package, path inside the package).
DEFAULT_BACKGROUNDS: tuple[tuple[str, str, str], ...] = (
    ("astronaut", "skimage", "data/astronaut.png"),
    ("chelsea", "skimage", "data/chelsea.png"),
    ("coffee", "skimage", "data/coffee.png"),
    ("ihc", "skimage", "data/ihc.png"),
    ("motorcycle", "skimage", "data/motorcycle_left.png"),
)


def package_file(package: str, relative_path: str) -> Path:
    """Path of a data file inside an installed package, located without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"package {package!r} is not installed; it provides background images. "
                        f"Install the project's dependencies (make venv).")
    path = Path(next(iter(spec.submodule_search_locations))) / relative_path
    if not path.is_file():
        raise DataError(f"{path} is missing from the installed {package!r} package")
    return path


def load_background(name: str, package: str, relative_path: str) -> Background:
    """Read one background as RGB uint8."""
    with Image.open(package_file(package, relative_path)) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return Background(name, package, relative_path, pixels)


def default_backgrounds() -> list[Background]:
    """The five default backgrounds, one per PolyMNIST modality."""
    return [load_background(*entry) for entry in DEFAULT_BACKGROUNDS]
