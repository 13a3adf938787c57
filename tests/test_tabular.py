"""fastmlp.datasets.tabular: CSV and .npz data files read into float32 features and the labels as the file spells them,
every bad file refused with one line naming the file and the problem; the model file's labels and
standardisation survive save and load; old model files still load."""

import numpy as np
import pytest

from fastmlp import MLP, ModelFileError
from fastmlp.datasets.tabular import (
    TableError,
    class_labels,
    encode_labels,
    hold_out,
    load_features,
    load_table,
    mean_and_std,
    standardize_in_place,
)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_csv_gives_float32_features_and_the_last_column_as_labels(tmp_path):
    path = write(tmp_path, "d.csv", "a,b,kind\n1,2.5,cat\n-3,4e2,dog\n5,6,cat\n")
    table = load_table(path)
    assert table.X.dtype == np.float32 and table.X.flags.c_contiguous
    np.testing.assert_array_equal(table.X, [[1, 2.5], [-3, 400], [5, 6]])
    assert table.labels.tolist() == ["cat", "dog", "cat"]
    assert table.feature_names == ("a", "b") and table.target == "kind"


def test_target_names_any_column_and_numeric_labels_stay_numbers(tmp_path):
    path = write(tmp_path, "d.csv", "y,a,b\n3,1,2\n7,3,4\n3,5,6\n")
    table = load_table(path, "y")
    np.testing.assert_array_equal(table.X, [[1, 2], [3, 4], [5, 6]])
    assert table.labels.dtype == np.int64 and table.labels.tolist() == [3, 7, 3]
    assert load_table(write(tmp_path, "f.csv", "a,y\n1,0.5\n2,1.5\n"), "y").labels.tolist() == [0.5, 1.5]


def test_quoted_fields_bom_and_blank_lines_are_read(tmp_path):
    path = tmp_path / "q.csv"
    path.write_bytes('\ufeffa,b,label\n1,2,"big, red"\n\n3,4,small\n'.encode("utf-8"))
    table = load_table(path)
    assert table.feature_names == ("a", "b") and table.labels.tolist() == ["big, red", "small"]


def test_an_npz_of_X_and_y(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.arange(6.0).reshape(3, 2), y=np.array(["a", "b", "a"]))
    table = load_table(path)
    assert table.X.dtype == np.float32 and table.X.shape == (3, 2) and table.labels.tolist() == ["a", "b", "a"]
    assert table.feature_names == ("X0", "X1") and table.target is None


@pytest.mark.parametrize(
    "name, text, target, message",
    [
        ("text.csv", "a,b,y\n1,2,0\n3,x,1\n", None, r"text.csv: column 'b', line 3 \(row 2\): 'x', not a number"),
        ("missing.csv", "a,b,y\n1,,0\n", None, r"column 'b', line 2 \(row 1\): an empty field"),
        ("target.csv", "a,b,y\n1,2,0\n", "label",
         r"target.csv: no column 'label' for --target; the columns are: a, b, y"),
        ("ragged.csv", "a,b,y\n1,2,0\n3,4\n5,6,1\n", None, r"ragged.csv: line 3 has 2 fields but the header has 3"),
        ("long.csv", "a,b,y\n1,2,0\n3,4,1,9\n", None, r"line 3 has 4 fields but the header has 3"),
        ("nan.csv", "a,b,y\n1,2,0\n3,nan,1\n", None, r"nan.csv: column 'b', row 2: nan \(NaN and inf"),
        ("inf.csv", "a,b,y\n1,2,0\ninf,4,1\n", None, r"column 'a', row 2: inf"),
        ("huge.csv", "a,b,y\n1,2,0\n1e300,4,1\n", None, r"column 'a', row 2: inf"),
        ("one.csv", "a,b,y\n1,2,cat\n3,4,cat\n", None,
         r"one.csv: every row has the label 'cat': a classifier needs at least 2"),
        ("empty.csv", "", None, r"empty.csv: the file is empty"),
        ("blank.csv", "\n\n", None, r"blank.csv: the file is empty"),
        ("header.csv", "a,b,y\n", None, r"header.csv: a header row \(a, b, y\) but no data rows"),
        ("dup.csv", "a,a,y\n1,2,0\n", None, r"the header names column 'a' more than once"),
    ],
)
def test_bad_csv_files_are_one_line_naming_the_file_and_the_problem(tmp_path, name, text, target, message):
    path = write(tmp_path, name, text)
    with pytest.raises(TableError, match=message) as info:
        table = load_table(path, target)
        class_labels(table.labels, path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_bad_npz_files_are_named(tmp_path):
    np.savez(tmp_path / "noy.npz", X=np.zeros((2, 2)))
    with pytest.raises(TableError, match=r"noy.npz: no array 'y' \(it holds X\)"):
        load_table(tmp_path / "noy.npz")
    np.savez(tmp_path / "nan.npz", X=np.array([[1.0, np.nan]]), y=np.array([0]))
    with pytest.raises(TableError, match=r"nan.npz: X row 1, column 2: nan"):
        load_table(tmp_path / "nan.npz")
    np.savez(tmp_path / "short.npz", X=np.zeros((3, 2)), y=np.zeros(2))
    with pytest.raises(TableError, match="one label per row of X"):
        load_table(tmp_path / "short.npz")
    np.save(tmp_path / "x.npy", np.zeros((2, 2)))
    with pytest.raises(TableError, match=r"x.npy: an .npy file holds one array, so no labels"):
        load_table(tmp_path / "x.npy")
    with pytest.raises(FileNotFoundError, match="nothere.csv: no such file"):
        load_table(tmp_path / "nothere.csv")


def test_labels_encode_to_the_sorted_classes_and_an_unknown_label_is_named():
    classes = class_labels(np.array(["b", "a", "c", "a"]), "f.csv")
    assert classes.tolist() == ["a", "b", "c"]
    assert encode_labels(np.array(["c", "a"]), classes).tolist() == [2, 0]
    with pytest.raises(TableError, match=r"t.csv: label 'd' \(row 2\) is not one of the model's classes: a, b, c"):
        encode_labels(np.array(["a", "d"]), classes, "t.csv")


def test_hold_out_keeps_every_row_once_and_copies_only_the_held_out_part():
    X = np.arange(200, dtype=np.float32).reshape(100, 2)
    y = np.arange(100)
    original = X.copy()
    X_train, y_train, X_test, y_test = hold_out(X, y, 0.2, seed=3)
    assert len(X_test) == 20 and len(X_train) == 80 and np.shares_memory(X_train, X)
    assert sorted(np.concatenate([y_train, y_test]).tolist()) == list(range(100))
    np.testing.assert_array_equal(X_train, original[y_train])
    np.testing.assert_array_equal(X_test, original[y_test])


def test_standardizing_in_place_matches_the_models_standardize():
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((500, 3)) * [1, 100, 0] + [5, -2, 7]).astype(np.float32)
    mean, std = mean_and_std(X)
    np.testing.assert_allclose(mean, X.astype(np.float64).mean(axis=0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(std, X.astype(np.float64).std(axis=0), rtol=1e-5, atol=1e-6)
    model = MLP([3, 2], seed=0)
    model.set_standardization(mean, std)  # the constant column's std 0 counts as 1
    expected = model.standardize(X.copy())
    standardize_in_place(X, mean, std)
    np.testing.assert_array_equal(X, expected)


def test_features_for_prediction_from_csv_npz_and_npy(tmp_path):
    csv = write(tmp_path, "p.csv", "b,y,a\n2,cat,1\n4,dog,3\n")
    np.testing.assert_array_equal(load_features(csv, 2, ("a", "b")), [[1, 2], [3, 4]])  # picked by name
    np.testing.assert_array_equal(load_features(write(tmp_path, "n.csv", "u,v\n1,2\n"), 2), [[1, 2]])
    np.save(tmp_path / "r.npy", np.array([1.0, 2.0]))
    assert load_features(tmp_path / "r.npy", 2).shape == (1, 2)
    np.savez(tmp_path / "x.npz", X=np.ones((4, 2)))
    assert load_features(tmp_path / "x.npz", 2).shape == (4, 2)
    with pytest.raises(TableError, match=r"p.csv: the model takes the columns a, c; the file has 3: b, y, a"):
        load_features(csv, 2, ("a", "c"))


def test_the_model_file_keeps_labels_standardisation_and_names(tmp_path):
    model = MLP([3, 5, 2], seed=0)
    model.classes = np.array(["no", "yes"])
    model.set_standardization([1, 2, 3], [2, 0, 4])
    model.feature_names, model.target = ("a", "b", "c"), "answer"
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as npz:  # the documented keys, plain arrays
        assert set(npz.files) == {"format_version", "layer_sizes", "W0", "b0", "W1", "b1", "classes", "mean", "std",
                                  "feature_names", "target"}
        assert int(npz["format_version"]) == 2
    loaded = MLP.load(tmp_path / "m.npz")
    assert loaded.classes.tolist() == ["no", "yes"] and loaded.std.tolist() == [2, 1, 4]
    assert loaded.feature_names == ("a", "b", "c") and loaded.target == "answer"
    X = np.random.default_rng(1).standard_normal((7, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert set(loaded.predict(X).tolist()) <= {"no", "yes"}
    copy = loaded.copy()
    assert copy.classes is not loaded.classes and copy.classes.tolist() == ["no", "yes"]


def test_predict_proba_standardises_first():
    model = MLP([2, 3], seed=0)
    X = np.array([[10.0, -4.0]], dtype=np.float32)
    plain = model.predict_proba((X - [8, -2]) / [2, 4])
    model.set_standardization([8, -2], [2, 4])
    np.testing.assert_allclose(model.predict_proba(X), plain, rtol=1e-6)


def test_a_version_1_file_without_the_new_keys_still_loads_and_a_newer_version_is_refused(tmp_path):
    model = MLP([3, 2], seed=0)
    np.savez(tmp_path / "v1.npz", layer_sizes=np.array([3, 2]), W0=model.weights[0], b0=model.biases[0])
    loaded = MLP.load(tmp_path / "v1.npz")
    assert loaded.classes is None and loaded.mean is None
    np.testing.assert_array_equal(loaded.weights[0], model.weights[0])
    np.savez(tmp_path / "v9.npz", format_version=np.int64(9), layer_sizes=np.array([3, 2]), W0=model.weights[0],
             b0=model.biases[0])
    with pytest.raises(ModelFileError, match="this fastmlp reads formats 1 and 2"):
        MLP.load(tmp_path / "v9.npz")


def test_model_files_with_inconsistent_labels_or_standardisation_are_refused(tmp_path):
    model = MLP([3, 2], seed=0)
    base = {"format_version": np.int64(2), "layer_sizes": np.array([3, 2]), "W0": model.weights[0],
            "b0": model.biases[0]}
    for extra, message in [({"classes": np.array(["b", "a"])}, "sorted and distinct"),
                           ({"classes": np.array([1, 2, 3])}, "classes must be 2"),
                           ({"mean": np.zeros(3, np.float32)}, "mean and std go together"),
                           ({"mean": np.zeros(3, np.float32), "std": np.zeros(3, np.float32)},
                            "std must be finite and > 0")]:
        np.savez(tmp_path / "bad.npz", **base, **extra)
        with pytest.raises(ModelFileError, match=message):
            MLP.load(tmp_path / "bad.npz")
