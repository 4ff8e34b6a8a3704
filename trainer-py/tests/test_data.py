import numpy as np
import torch

from tb_trainer.config import CrossValidation, Split
from tb_trainer.data.surface_water import SurfaceWaterDataModule, load_folder, split_indices, synthesize


def test_generator_is_deterministic_and_seeded():
    x1, y1 = synthesize(20, 32, seed=3)
    x2, y2 = synthesize(20, 32, seed=3)
    x3, _ = synthesize(20, 32, seed=4)
    assert x1.shape == (20, 6, 32, 32) and y1.shape == (20, 1, 32, 32)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    assert set(y1.unique().tolist()) <= {0.0, 1.0}


def test_generator_has_water_and_water_like_confounders():
    x, y = synthesize(200, 64, seed=0)
    water = y[:, 0] > 0.5
    frac = water.float().mean().item()
    assert 0.05 < frac < 0.5, frac
    visible = x[:, :3].mean(1)
    dark_visible = visible < torch.quantile(visible[water], 0.9)
    # Land as dark as water in the visible bands: shadows and dark soil...
    assert (dark_visible & ~water).float().mean() > 0.02
    # ...which the infrared bands still tell apart on average.
    nir = x[:, 3]
    assert nir[dark_visible & ~water].mean() > nir[water].mean()


def test_splits_are_disjoint_and_folds_partition_the_rest():
    split = Split(0.7, 0.15, 0.15)
    idx = split_indices(100, split, None, seed=0)
    allidx = torch.cat(list(idx.values()))
    assert len(allidx) == 100 and len(allidx.unique()) == 100
    assert len(idx["test"]) == 15 and len(idx["val"]) == 15
    vals = []
    for fold in range(5):
        f = split_indices(100, split, CrossValidation(folds=5, fold=fold), seed=0)
        assert torch.equal(f["test"], idx["test"])  # same test tiles for every fold
        assert not set(f["val"].tolist()) & set(f["train"].tolist())
        vals += f["val"].tolist()
    assert sorted(vals) == sorted(idx["val"].tolist() + idx["train"].tolist())


def test_folder_of_real_tiles(tmp_path):
    (tmp_path / "tiles" / "images").mkdir(parents=True)
    (tmp_path / "tiles" / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        np.save(tmp_path / "tiles" / "images" / f"t{i}.npy", rng.random((4, 16, 16), dtype=np.float32))
        np.save(tmp_path / "tiles" / "masks" / f"t{i}.npy", (rng.random((16, 16)) > 0.5).astype(np.uint8))
    x, y = load_folder(tmp_path)  # descends into the single wrapping folder
    assert x.shape == (10, 4, 16, 16) and y.shape == (10, 1, 16, 16)
    dm = SurfaceWaterDataModule(root=str(tmp_path / "tiles"), batch_size=4, split=Split(0.6, 0.2, 0.2))
    assert dm.in_channels == 4
    dm.setup("fit")
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (4, 4, 16, 16) and yb.shape == (4, 1, 16, 16)
