"""Training inputs that need no TensorFlow: cell lists of another device (BCCD's eye-read labels) and the
optical-density re-staining."""

import json
from pathlib import Path

import numpy as np
import pytest

from models import data_pbc, device_cells
from models.augment import JitterStrength, colour_jitter, restain
from models.detector_data import read_voc_wbc
from models.train_classifier import init_weights, main as train_main, saved_cells

BCCD = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "bccd"
MAIN_CLASSES = {"neutrophil", "eosinophil", "lymphocyte", "monocyte", "basophil"}


def test_bccd_labels_are_known_classes_and_certain_only_where_named():
    cells = device_cells.read_cells()
    assert len(cells) == 301
    assert {c.label for c in cells} <= MAIN_CLASSES | {"unknown"}
    assert all(c.label in MAIN_CLASSES for c in cells if c.certain)
    assert sum(c.usable for c in cells) == 222


def test_bccd_parts_are_split_by_image_and_cover_every_usable_cell():
    train, evaluate = device_cells.usable_cells("train"), device_cells.usable_cells("eval")
    assert {c.image for c in train}.isdisjoint({c.image for c in evaluate})
    assert len(train) + len(evaluate) == 222
    assert len(train) > 50 and len(evaluate) > 50
    # each part has more than neutrophils, or it would say nothing about the other classes
    assert len({c.label for c in evaluate}) >= 4


@pytest.mark.parametrize("row, complaint", [
    ("a.jpg,1,2,3,4,neutrophil,yes,train", None),
    ("a.jpg,1,2,3,4,granulocyte,yes,train", "label"),
    ("a.jpg,1,2,3,4,neutrophil,yes,test", "part"),
    ("a.jpg,1,2,0,4,neutrophil,yes,train", "box"),
    ("a.jpg,1,2,three,4,neutrophil,yes,train", "not a cell row"),
    ("a.jpg,1,2,3,4,neutrophil", "not a cell row"),
])
def test_a_bad_row_of_a_cell_list_names_its_line(tmp_path, row, complaint):
    path = tmp_path / "cells.csv"
    path.write_text("image,x,y,w,h,label,certain,part\n" + row + "\n")
    if complaint is None:
        assert device_cells.read_cells(path)[0].box == (1, 2, 3, 4)
        return
    with pytest.raises(ValueError, match=complaint) as err:
        device_cells.read_cells(path)
    assert ":2:" in str(err.value)


@pytest.mark.skipif(not BCCD.is_dir(), reason="../shared/datasets/bccd not present")
def test_bccd_labels_point_at_annotated_wbc_boxes_and_cut_like_the_scan():
    for cell in device_cells.read_cells():
        assert cell.box in read_voc_wbc(BCCD / "Annotations" / f"{Path(cell.image).stem}.xml"), cell
    x, y = device_cells.load_arrays(device_cells.usable_cells("eval")[:3], BCCD / "JPEGImages",
                                    device_cells.BCCD_UM_PER_PX, 96, data_pbc.CROP_FACTOR)
    assert x.shape == (3, 96, 96, 3) and x.dtype == np.uint8
    assert [data_pbc.CLASSES[k] for k in y] == [c.label for c in device_cells.usable_cells("eval")[:3]]
    assert x.std() > 10  # real image content, not a fill colour


def _stained_square() -> np.ndarray:
    x = np.full((64, 64, 3), (235, 225, 215), np.uint8)  # plain background
    x[20:44, 20:44] = (110, 60, 150)  # a purple "nucleus"
    return x


def test_restain_with_unit_factors_changes_nothing_visible():
    x = _stained_square()
    assert np.abs(restain(x, (1.0, 1.0, 1.0)).astype(int) - x).max() <= 1


def test_restain_darkens_the_stain_and_leaves_the_background():
    x = _stained_square()
    y = restain(x, (1.5, 1.5, 1.5))
    assert np.array_equal(y[0, 0], x[0, 0])
    assert (y[32, 32].astype(int) < x[32, 32]).all()
    paler = restain(x, (0.5, 0.5, 0.5))
    assert (paler[32, 32].astype(int) > x[32, 32]).all()


def test_stain_density_off_keeps_the_jitter_stream_unchanged():
    x = _stained_square()
    a = colour_jitter(x, np.random.default_rng(7))
    b = colour_jitter(x, np.random.default_rng(7), JitterStrength(stain_density_p=0.0))
    assert np.array_equal(a, b)
    c = colour_jitter(x, np.random.default_rng(7), JitterStrength(stain_density_p=1.0))
    assert not np.array_equal(a, c)


MODELS = Path(__file__).resolve().parents[2] / "models"


def test_shipped_member_weights_match_the_shipped_ensemble():
    members = json.loads((MODELS / "wbc_classifier_spec.json").read_text())["keras_run"]["members"]
    files = sorted(MODELS.glob("wbc_classifier_member*.npz"))
    assert [f.name for f in files] == [f"wbc_classifier_member{k}.npz" for k in range(len(members))]
    for f in files:
        arrays = init_weights(f)
        assert sum(a.size for a in arrays) == 209_928  # models/net.py width "m", 8 classes
        assert arrays[-1].shape == (len(data_pbc.CLASSES),)  # the last layer's bias: one per class
        assert all(np.isfinite(a).all() for a in arrays)


def test_init_weights_keep_the_order_of_the_arrays(tmp_path):
    arrays = [np.arange(k + 1, dtype=np.float32) for k in range(12)]  # more than 10: arr_10 must follow arr_9
    np.savez_compressed(tmp_path / "m.npz", *arrays)
    assert [a.tolist() for a in init_weights(tmp_path / "m.npz")] == [a.tolist() for a in arrays]


@pytest.mark.parametrize("extra", [[], ["--cells-images", "imgs"], ["--cells-images", "imgs", "--cells-um-per-px", "0"]])
def test_a_cell_list_without_its_images_or_scale_is_refused_before_training(tmp_path, extra):
    with pytest.raises(SystemExit, match="--cells needs"):
        train_main(["--out", str(tmp_path / "run"), "--cells", str(device_cells.BCCD_CELLS), *extra])
    assert not (tmp_path / "run").exists()


def test_every_shipped_member_resumes_with_bccds_cells_whichever_key_saved_them():
    members = json.loads((MODELS / "wbc_classifier_spec.json").read_text())["keras_run"]["members"]
    for member in members:
        cells, images, um_per_px, repeat = saved_cells(member)
        assert cells.resolve() == device_cells.BCCD_CELLS and images.name == "JPEGImages"
        assert (um_per_px, repeat) == (device_cells.BCCD_UM_PER_PX, 8)
        pbc_only = {k: v for k, v in member.items() if k != "cells"}
        assert saved_cells(pbc_only) == (None, None, None, 0)
        # The first fine-tuned runs saved the same cells as the data set folder and a repeat count.
        legacy = {**pbc_only, "bccd": str(images.parent), "bccd_repeat": repeat}
        assert saved_cells(legacy) == (device_cells.BCCD_CELLS, images, um_per_px, repeat)


@pytest.mark.parametrize("scale", ["0", "-0.1", "nan"])
def test_cross_device_cells_check_refuses_a_scale_that_is_not_positive(scale, capsys):
    from models.cross_device_checks import main as checks_main

    with pytest.raises(SystemExit) as stopped:
        checks_main(["cells", "--um-per-px", scale])
    assert stopped.value.code == 2
    assert "--um-per-px must be a positive number" in capsys.readouterr().err
