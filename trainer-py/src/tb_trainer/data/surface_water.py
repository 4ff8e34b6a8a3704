"""Surface-water segmentation: multispectral tiles and binary water masks.

Three sources, one datamodule:
- synthetic (default): a deterministic generator, from `seed`, of 6-band tiles
  (blue, green, red, NIR, SWIR1, SWIR2) with lakes and rivers, and the
  confounders of real imagery: cloud shadows and dark soil that are as dark as
  water in the visible bands, turbid water, thin clouds, mixed edge pixels and
  sensor noise;
- `root`: a folder of real tiles, `images/` and `masks/` with matching stems
  (`.npy` arrays, images `(C, H, W)`, or `.png`; mask pixels > 0 are water);
- `url` + `sha256`: an archive of such a folder, downloaded once into the
  shared downloads cache (see `download.py`), then read like `root`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..config import CrossValidation, Split
from .download import fetch_archive

BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")

# Surface reflectance per band, roughly after Landsat/Sentinel-2 spectra.
_VEGETATION = (0.04, 0.08, 0.05, 0.34, 0.18, 0.09)
_SOIL = (0.10, 0.14, 0.18, 0.25, 0.31, 0.25)
_DARK_SOIL = (0.04, 0.045, 0.045, 0.05, 0.045, 0.035)  # wet, burnt or organic soil
_CLEAR_WATER = (0.07, 0.06, 0.03, 0.015, 0.008, 0.005)
_TURBID_WATER = (0.09, 0.12, 0.11, 0.07, 0.03, 0.018)
_CLOUD = (0.40, 0.39, 0.38, 0.36, 0.26, 0.18)
_SHADOW = (0.28, 0.28, 0.28, 0.35, 0.38, 0.40)  # fraction of light left in a cloud shadow


def _spec(values, n: int = 1) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, len(values), 1, 1).expand(n, -1, -1, -1)


def _smooth(g: torch.Generator, n: int, size: int, scale: int) -> torch.Tensor:
    """Zero-mean, unit-std smooth random fields, shape (n, 1, size, size)."""
    low = max(2, math.ceil(size / scale) + 1)
    z = torch.randn(n, 1, low, low, generator=g)
    f = F.interpolate(z, size=(size, size), mode="bicubic", align_corners=True)
    f = f - f.mean(dim=(2, 3), keepdim=True)
    return f / (f.std(dim=(2, 3), keepdim=True) + 1e-6)


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return (lo + (hi - lo) * torch.rand(n, generator=g)).view(n, 1, 1, 1)


def _rivers(g: torch.Generator, n: int, size: int) -> torch.Tensor:
    """Meandering rivers of varying width (1-4 px), in about 70% of the tiles."""
    xs = torch.arange(size, dtype=torch.float32).view(1, 1, 1, size)
    ys = torch.arange(size, dtype=torch.float32).view(1, 1, size, 1)
    centre = _uniform(g, n, 0.2 * size, 0.8 * size)
    amp = _uniform(g, n, 0.0, 0.15 * size)
    wavelength = _uniform(g, n, 0.5 * size, 2.0 * size)
    phase = _uniform(g, n, 0.0, 2 * math.pi)
    wiggle = F.interpolate(torch.randn(n, 1, 1, 6, generator=g), size=(1, size), mode="bicubic", align_corners=True)
    yc = centre + amp * torch.sin(2 * math.pi * xs / wavelength + phase) + 0.03 * size * wiggle
    width = _uniform(g, n, 1.0, 4.0)
    river = ((ys - yc).abs() < width / 2).float()
    present = (torch.rand(n, generator=g) < 0.7).float().view(n, 1, 1, 1)
    transpose = torch.rand(n, generator=g) < 0.5
    river = torch.where(transpose.view(n, 1, 1, 1), river.transpose(2, 3), river)
    return river * present


def synthesize(samples: int, size: int = 64, seed: int = 0, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """`samples` tiles `(6, size, size)` of reflectance and their `(1, size, size)` water masks.

    Deterministic: the same arguments give the same tensors, on any machine.
    """
    images, masks = [], []
    for start in range(0, samples, chunk):
        n = min(chunk, samples - start)
        g = torch.Generator().manual_seed(seed * 1_000_003 + start)
        x, y = _synthesize_chunk(g, n, size)
        images.append(x)
        masks.append(y)
    return torch.cat(images), torch.cat(masks)


def _synthesize_chunk(g: torch.Generator, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Land: vegetation and bright soil, with patches of dark soil.
    veg = torch.sigmoid(3 * _smooth(g, n, size, 16))
    land = _spec(_VEGETATION, n) * veg + _spec(_SOIL, n) * (1 - veg)
    land = land * (1 + 0.12 * _smooth(g, n, size, 4))
    dark_cover = _uniform(g, n, 0.3, 2.0)  # threshold: higher = less dark soil
    dark = torch.sigmoid(4 * (_smooth(g, n, size, 10) - dark_cover))
    # Dark soil is as dark as water; only its grainy texture (and context) gives it away.
    speckle = (1 + 0.25 * _smooth(g, n, size, 2)).clamp(0.3, 2.0)
    land = land * (1 - dark) + _spec(_DARK_SOIL, n) * speckle * dark

    # Water: lakes (thresholded blobs) and rivers; some of it turbid.
    lake_level = _uniform(g, n, 0.7, 2.0)
    lakes = (_smooth(g, n, size, 14) > lake_level).float()
    water = torch.clamp(lakes + _rivers(g, n, size), 0, 1)
    turbid = torch.sigmoid(2 * _smooth(g, n, size, 12) + 3 * (_uniform(g, n, -1.0, 1.0)))
    water_refl = _spec(_CLEAR_WATER, n) * (1 - turbid) + _spec(_TURBID_WATER, n) * turbid
    # Mixed pixels at the shore: reflectance from a blurred mask, label from the sharp one.
    soft = F.avg_pool2d(water, 3, stride=1, padding=1, count_include_pad=False)
    refl = land * (1 - soft) + water_refl * soft

    # Cloud shadows darken everything below them, towards water in the visible bands.
    has_shadow = (torch.rand(n, generator=g) < 0.7).float().view(n, 1, 1, 1)
    shadow = torch.sigmoid(5 * (_smooth(g, n, size, 12) - _uniform(g, n, 0.0, 1.2))) * has_shadow
    refl = refl * (1 - shadow * (1 - _spec(_SHADOW, n)))

    # Thin clouds: a veil that raises and flattens every band.
    veil = torch.relu(_smooth(g, n, size, 20) - _uniform(g, n, -0.5, 1.5)) * _uniform(g, n, 0.0, 0.5)
    veil = veil.clamp(0, 0.8)
    refl = refl * (1 - veil) + _spec(_CLOUD, n) * veil

    # Sensor noise, per tile and band, and a per-band calibration offset.
    sigma = _uniform(g, n, 0.005, 0.03)
    refl = refl + sigma * torch.randn(refl.shape, generator=g)
    refl = refl + 0.005 * torch.randn(n, len(BANDS), 1, 1, generator=g)
    return refl.float(), water


def _load_array(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path)
    from PIL import Image  # pillow comes with tensorboard/torchvision-free installs

    return np.asarray(Image.open(path))


def load_folder(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Tiles from `root/images/*` and `root/masks/*` (matching stems)."""
    root = Path(root)
    img_dir, mask_dir = root / "images", root / "masks"
    if not img_dir.is_dir() or not mask_dir.is_dir():
        # An archive may wrap the folder in one top-level directory.
        subs = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        if len(subs) == 1:
            return load_folder(subs[0])
        raise FileNotFoundError(f"`{root}` must contain `images/` and `masks/`")
    masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix in (".npy", ".png")}
    xs, ys = [], []
    for img in sorted(p for p in img_dir.iterdir() if p.suffix in (".npy", ".png")):
        if img.stem not in masks:
            raise FileNotFoundError(f"no mask for tile `{img.name}` in `{mask_dir}`")
        x = _load_array(img).astype(np.float32)
        if img.suffix == ".png":
            x = (x[..., None] if x.ndim == 2 else x).transpose(2, 0, 1) / 255.0
        y = _load_array(masks[img.stem])
        y = (y[..., 0] if y.ndim == 3 and img.suffix == ".png" else y).squeeze()
        xs.append(torch.from_numpy(np.ascontiguousarray(x)))
        ys.append(torch.from_numpy((y > 0).astype(np.float32))[None])
    if not xs:
        raise FileNotFoundError(f"no tiles in `{img_dir}`")
    return torch.stack(xs), torch.stack(ys)


def split_indices(n: int, split: Split, cv: Optional[CrossValidation], seed: int) -> dict[str, torch.Tensor]:
    """Train/val/test indices. The test split depends only on `seed` and
    `split.test`, so all folds and all training seeds are scored on the same tiles."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919))
    n_test = int(round(split.test * n))
    test, rest = perm[:n_test], perm[n_test:]
    if cv is not None:
        folds = torch.tensor_split(rest, cv.folds)
        val = folds[cv.fold]
        train = torch.cat([f for i, f in enumerate(folds) if i != cv.fold])
    else:
        n_val = max(1, int(round(split.val * n)))
        val, train = rest[:n_val], rest[n_val:]
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"{n} samples are too few for this split")
    return {"train": train, "val": val, "test": test}


class _Tiles(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class SurfaceWaterDataModule(L.LightningDataModule):
    """Water segmentation tiles; see the module docstring for the sources.

    Args (from `data_args`, except those tb fills in):
        samples, size, seed: the synthetic generator's tile count, side in
            pixels and seed (the data seed, independent of the training seed).
        root: a folder of real tiles instead of the generator.
        url, sha256: an archive of such a folder, fetched into `downloads_dir`.
        bands: indices of the bands to keep, e.g. `[2, 1, 0]` for RGB only.
    """

    def __init__(
        self,
        samples: int = 800,
        size: int = 64,
        seed: int = 0,
        root: Optional[str] = None,
        url: Optional[str] = None,
        sha256: Optional[str] = None,
        bands: Optional[list] = None,
        batch_size: int = 16,
        num_workers: int = 0,
        split: Optional[Split] = None,
        cv: Optional[CrossValidation] = None,
        downloads_dir: str = "/downloads",
    ):
        super().__init__()
        if url and not sha256:
            raise ValueError("`data_args.url` needs `data_args.sha256`")
        if root and url:
            raise ValueError("give `data_args.root` or `data_args.url`, not both")
        self.samples, self.size, self.seed = int(samples), int(size), int(seed)
        self.root, self.url, self.sha256 = root, url, sha256
        self.bands = list(bands) if bands is not None else None
        self.batch_size, self.num_workers = batch_size, num_workers
        self.split = split or Split()
        self.cv = cv
        self.downloads_dir = Path(downloads_dir)
        self.num_classes = 1
        if self.bands is not None:
            self.in_channels = len(self.bands)
        elif root or url:
            self.in_channels = None  # known after setup(); set below when possible
            if root:
                self.in_channels = self._peek_channels(Path(root))
        else:
            self.in_channels = len(BANDS)
        self._data: dict[str, _Tiles] = {}

    @staticmethod
    def _peek_channels(root: Path) -> Optional[int]:
        try:
            x, _ = load_folder(root)
            return int(x.shape[1])
        except (FileNotFoundError, OSError, ValueError):
            return None

    def prepare_data(self) -> None:
        if self.url:
            fetch_archive(self.url, self.sha256, self.downloads_dir, name="surface_water")

    def _source(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.url:
            root = fetch_archive(self.url, self.sha256, self.downloads_dir, name="surface_water")
            return load_folder(root)
        if self.root:
            return load_folder(Path(self.root))
        return synthesize(self.samples, self.size, self.seed)

    def setup(self, stage: Optional[str] = None) -> None:
        if self._data:
            return
        x, y = self._source()
        if self.bands is not None:
            x = x[:, self.bands]
        self.in_channels = int(x.shape[1])
        idx = split_indices(len(x), self.split, self.cv, self.seed)
        train = x[idx["train"]]
        mean = train.mean(dim=(0, 2, 3), keepdim=True)
        std = train.std(dim=(0, 2, 3), keepdim=True) + 1e-6
        x = ((x - mean) / std).contiguous()
        self._data = {k: _Tiles(x[v], y[v]) for k, v in idx.items()}

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self._data[name],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def has_test(self) -> bool:
        return len(self._data.get("test", ())) > 0
