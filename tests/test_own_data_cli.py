"""The command line on the user's own data (train --data, evaluate --data, predict on CSV/.npz/.npy), its
one-line errors for bad files, and the rough edges a new user hit: --data-dir given a file, $FASTMLP_DATA
that does not hold the data, predict's errors, lazily loaded submodules, the compile notice, Adam's lr."""

import logging
import subprocess
import sys
import warnings

import numpy as np
import pytest

from fastmlp import MLP, Trainer
from fastmlp.cli import evaluate, predict, train

COMMON = ["--backend", "numpy", "--epochs", "2", "--hidden", "16", "--seed", "0"]


def write_csv(path, n=200, seed=0, header="x1,x2,colour", labels=("blue", "green", "red")):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 2)) * [1, 30] + [0, 60]
    y = np.digitize(X[:, 0] + (X[:, 1] - 60) / 30, [-0.5, 0.5])
    with open(path, "w") as f:
        f.write(header + "\n")
        for row, c in zip(X, y):
            f.write(f"{row[0]:.4f},{row[1]:.4f},{labels[c]}\n")
    return path


def test_train_evaluate_predict_round_trip_on_a_csv_with_string_labels(tmp_path, capsys):
    data = write_csv(tmp_path / "data.csv")
    assert train.main(["--data", str(data), "--standardize", "--save", str(tmp_path / "m.npz"), *COMMON]) == 0
    out = capsys.readouterr().out
    assert "test set: 40 rows (20%) of" in out and "held out at random (--test-size 0.2, --seed 0)" in out
    assert "net 2-16-3" in out and "160 train / 40 test" in out and "test accuracy" in out
    model = MLP.load(tmp_path / "m.npz")
    assert model.classes.tolist() == ["blue", "green", "red"] and model.mean is not None
    assert model.feature_names == ("x1", "x2") and model.target == "colour"

    assert evaluate.main(["--model", str(tmp_path / "m.npz"), "--data", str(data)]) == 0
    report = capsys.readouterr().out
    assert "on " + str(data) + ", 200 samples" in report and "0 blue" in report and "2 red" in report

    rows = tmp_path / "rows.csv"
    rows.write_text("colour,x2,x1\n?,60,-2\n?,60,0\n?,60,2\n")  # columns by name, the label column ignored
    assert predict.main(["--model", str(tmp_path / "m.npz"), str(rows)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in lines] == [[f"{rows}[{i}]", "class", c] for i, c in
                                                    enumerate(model.predict(np.array([[-2, 60], [0, 60], [2, 60]],
                                                                                     np.float32)).tolist())]
    np.save(tmp_path / "rows.npy", np.array([[-2.0, 60.0]]))
    assert predict.main(["--model", str(tmp_path / "m.npz"), str(tmp_path / "rows.npy")]) == 0
    assert capsys.readouterr().out.split()[:3] == [str(tmp_path / "rows.npy"), "class", lines[0].split()[2]]


def test_numeric_labels_print_back_as_the_files_numbers_and_an_npz_trains_too(tmp_path, capsys):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((120, 5))
    y = np.where(X[:, 0] > 0, 10, 20)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    assert train.main(["--data", str(tmp_path / "d.npz"), "--save", str(tmp_path / "m.npz"), *COMMON]) == 0
    capsys.readouterr()
    np.savez(tmp_path / "q.npz", X=X[:3])
    assert predict.main(["--model", str(tmp_path / "m.npz"), str(tmp_path / "q.npz")]) == 0
    assert {line.split()[2] for line in capsys.readouterr().out.splitlines()} <= {"10", "20"}


def test_test_data_is_used_and_must_have_the_training_columns(tmp_path, capsys):
    data = write_csv(tmp_path / "train.csv")
    test = write_csv(tmp_path / "test.csv", n=30, seed=5)
    assert train.main(["--data", str(data), "--test-data", str(test), *COMMON]) == 0
    out = capsys.readouterr().out
    assert f"test set: {test}" in out and "200 train / 30 test" in out
    other = write_csv(tmp_path / "other.csv", n=30, header="x1,x3,colour")
    assert train.main(["--data", str(data), "--test-data", str(other), *COMMON]) == 1
    err = capsys.readouterr().err
    assert err == (f"python -m fastmlp.train: error: --test-data {other}: its feature columns (x1, x3) differ from "
                   f"--data {data}'s (x1, x2)\n")


@pytest.mark.parametrize(
    "text, message",
    [
        ("a,b,y\n1,2,0\n3,oops,1\n", "column 'b', line 3 (row 2): 'oops', not a number"),
        ("a,b,y\n1,2,0\n3,4\n", "line 3 has 2 fields but the header has 3"),
        ("a,b,y\n1,2,0\n3,inf,1\n", "column 'b', row 2: inf"),
        ("a,b,y\n1,2,0\n3,4,0\n", "every row has the label 0"),
        ("", "the file is empty"),
    ],
)
def test_a_bad_file_is_one_line_and_status_1(tmp_path, capsys, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    assert train.main(["--data", str(path), *COMMON]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and message in err


def test_a_missing_target_column_lists_the_columns(tmp_path, capsys):
    data = write_csv(tmp_path / "d.csv")
    assert train.main(["--data", str(data), "--target", "label", *COMMON]) == 1
    assert capsys.readouterr().err.endswith(f"{data}: no column 'label' for --target; "
                                            "the columns are: x1, x2, colour\n")


def test_help_names_the_held_out_fraction_and_data_options_clash_with_mnists(tmp_path, capsys):
    help_text = train.build_parser().format_help()
    assert "--test-size FRACTION" in help_text and "--data PATH" in help_text and "--standardize" in help_text
    for argv, message in [(["--data", "d.csv", "--data-dir", "x"], "--data-dir chooses an MNIST-style dataset"),
                          (["--target", "y"], "--target goes with --data PATH"),
                          (["--data", "d.csv", "--test-data", "t.csv", "--test-size", "0.3"], "--test-size holds out")]:
        with pytest.raises(SystemExit) as info:
            train.main(argv)
        assert info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("prefix", ["--dat", "--data-d", "--epo"])
def test_options_are_never_abbreviated(prefix, capsys):
    with pytest.raises(SystemExit) as info:
        train.main([prefix, "x"])
    assert info.value.code == 2 and f"unrecognized arguments: {prefix}" in capsys.readouterr().err


@pytest.mark.parametrize("no_download", [False, True])
def test_data_dir_given_a_file_says_so_and_points_to_data(tmp_path, capsys, no_download):
    data = write_csv(tmp_path / "data.csv")
    assert train.main(["--data-dir", str(data), *COMMON] + ["--no-download"] * no_download) == 1
    err = capsys.readouterr().err
    assert f"--data-dir {data} is a file, not a folder of the mnist IDX files" in err and f"--data {data}" in err
    assert "Errno" not in err and "does not exist" not in err
    assert data.read_text().startswith("x1,x2")  # untouched


def test_an_fastmlp_data_that_does_not_hold_the_data_is_named_with_the_copy_used(tmp_path, capsys, monkeypatch,
                                                                                 tiny_mnist_dir):
    import fastmlp.datasets as datasets

    monkeypatch.setenv("FASTMLP_DATA", str(tmp_path / "nope"))
    monkeypatch.setitem(datasets.BUNDLED_DIRS, "mnist", [tiny_mnist_dir])
    assert train.main(["--no-download", "--quiet", *COMMON]) == 0
    err = capsys.readouterr().err
    assert f"$FASTMLP_DATA={tmp_path / 'nope'} does not hold the mnist files (folder does not exist)" in err
    assert f"using the system copy: {tiny_mnist_dir}" in err


def test_predict_errors_name_the_file_and_list_what_predict_reads(tmp_path, capsys):
    MLP([784, 10], seed=0).save(tmp_path / "m.npz")
    accepted = "predict reads a CSV (header row), .npz (array X) or .npy of feature rows, or images"
    assert predict.main(["--model", str(tmp_path / "m.npz"), str(tmp_path / "m.npz")]) == 1
    err = capsys.readouterr().err
    assert "is a fastmlp model, not data" in err and accepted in err and err.count("\n") == 1
    assert predict.main(["--model", str(tmp_path / "m.npz"), str(tmp_path / "digit.png")]) == 1
    err = capsys.readouterr().err
    assert f"INPUT {tmp_path / 'digit.png'}: no such file" in err and accepted in err and "Errno" not in err
    (tmp_path / "notes.txt").write_text("PK\x03\x04 hello")
    assert predict.main(["--model", str(tmp_path / "m.npz"), str(tmp_path / "notes.txt")]) == 1
    err = capsys.readouterr().err
    assert "not an IDX file" in err and accepted in err


def test_submodules_load_lazily_after_import_fastmlp():
    code = ("import sys, types, fastmlp; assert 'numba' not in sys.modules; "
            "assert all(isinstance(getattr(fastmlp, m), types.ModuleType) "
            "for m in ('kernels', 'testing', 'checked_kernels', 'tabular')); "
            "assert callable(fastmlp.export_onnx); print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        import fastmlp

        fastmlp.nothing  # noqa: B018


def test_the_compile_notice_comes_only_when_numba_really_compiles(caplog):
    from numba import njit

    from fastmlp.runtime.compile_notice import announce_compiling

    compiled = njit(lambda x: x * 2)
    with caplog.at_level(logging.WARNING, logger="fastmlp"):
        with announce_compiling("the test kernel"):
            compiled(1)  # a first call: compiles
            njit(lambda x: x - 1)(1)  # a second compilation in the same block: still one notice
        assert len(caplog.records) == 1 and caplog.records[0].getMessage().startswith("compiling the test kernel")
        caplog.clear()
        with announce_compiling("the test kernel"):
            compiled(2)  # already compiled for int: nothing to say
        assert caplog.records == []


def test_trainer_with_adam_and_no_lr_warns_that_it_keeps_sgds_lr():
    model = MLP([4, 3], seed=0)
    with pytest.warns(UserWarning, match=r"Trainer\(optimizer='adam'\) without lr trains with lr=0.1"):
        trainer = Trainer(model, "numpy", optimizer="adam")
    assert trainer.lr == 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Trainer(model, "numpy", optimizer="adam", lr=1e-3).lr == 1e-3
        assert Trainer(model, "numpy").lr == 0.1
