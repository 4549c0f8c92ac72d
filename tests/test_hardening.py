"""Input hardening (issue 10): no code execution from CIFAR-10 pickles, bounded archive decoding, one-line
CLI errors (exit status 1 for bad input, 2 for usage errors, 70 for a bug), and the consistency checks of item
11."""

import argparse
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import textwrap
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import taskgeom as tg
from taskgeom import _cliutil, cli
from taskgeom.data import load_images
from taskgeom.store import PredictionStore


# ---- item 1: CIFAR-10 python batches without code execution -------------------------------------------
def write_cifar(folder, n=20, protocol=2, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": n, b"num_vis": 3072}, f, protocol=protocol)
    truth = {}
    for name in ["test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]:
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, n)]
        truth[name] = (x, y)
        with open(folder / name, "wb") as f:
            pickle.dump(
                {b"batch_label": b"batch", b"labels": y, b"data": x, b"filenames": [b"f%d.png" % i for i in range(n)]},
                f,
                protocol=protocol,
            )
    return truth


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar_batches_are_read_by_the_restricted_unpickler(tmp_path, protocol):
    truth = write_cifar(tmp_path / "cifar-10-batches-py", protocol=protocol)
    ds = load_images(tmp_path / "cifar-10-batches-py", split="test", use_cache=False)
    x, y = truth["test_batch"]
    np.testing.assert_array_equal(ds.images, x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(ds.labels, y)
    assert ds.classes[0] == "airplane"
    assert len(load_images(tmp_path / "cifar-10-batches-py", use_cache=False)) == 100


class _Evil:
    def __init__(self, target, canary):
        self.target, self.canary = target, canary

    def __reduce__(self):
        if self.target == "system":
            return os.system, (f"touch {self.canary}",)
        if self.target == "eval":
            return eval, (f"open({str(self.canary)!r}, 'w').close()",)
        return subprocess.call, (["touch", str(self.canary)],)


@pytest.mark.parametrize("target", ["system", "eval", "subprocess"])
@pytest.mark.parametrize("where", ["data_batch_1", "batches.meta"])
def test_a_malicious_batch_runs_nothing_and_is_one_clear_line(tmp_path, target, where):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    canary = tmp_path / "canary"
    payload = {b"labels": [0], b"data": _Evil(target, canary), b"label_names": _Evil(target, canary)}
    with open(folder / where, "wb") as f:
        pickle.dump(payload, f, protocol=2)
    with pytest.raises(ValueError, match=f"{where}: not a CIFAR-10 batch .*refusing to load") as info:
        load_images(folder, use_cache=False)
    assert "\n" not in str(info.value)
    assert not canary.exists()


def test_truncated_or_wrong_batches_are_clear_errors(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    blob = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="data_batch_2: not a CIFAR-10 batch"):
        load_images(folder, use_cache=False)
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump({b"labels": [0, 1], b"data": np.zeros((2, 10), np.uint8)}, f)
    with pytest.raises(ValueError, match=r"data is not a uint8 array \(n, 3072\)"):
        load_images(folder, use_cache=False)
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump({b"labels": [0, 11], b"data": np.zeros((2, 3072), np.uint8)}, f)
    with pytest.raises(ValueError, match=r"labels outside \[0, 10\)"):
        load_images(folder, use_cache=False)


# ---- item 7: archives ----------------------------------------------------------------------------------
def png_of_zeros(w, h, truncate=False) -> bytes:
    """A valid RGB PNG of w x h black pixels, written by hand (tiny when compressed)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"" if truncate else zlib.compress(b"\0" * ((3 * w + 1) * h), 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", raw)
        + chunk(b"IEND", b"")
    )


def tar_of(path, members, mode="w:gz"):
    with tarfile.open(path, mode) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


BOMB = textwrap.dedent("""
    import resource, sys
    from taskgeom.data import load_images
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        load_images(sys.argv[1], use_cache=False, max_total_bytes=int(sys.argv[2]))
        print("LOADED")
    except ValueError as exc:
        print("ERROR", exc)
    print("PEAK_MB", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
""")


def test_bomb_archive_is_rejected_within_a_memory_bound(tmp_path):
    png = png_of_zeros(3000, 3000)  # 27 MB decoded from about 26 KB
    tar_of(tmp_path / "bomb.tar.gz", [(f"c{k % 2}/{k:03d}.png", png) for k in range(40)])  # 1.08 GB decoded
    assert (tmp_path / "bomb.tar.gz").stat().st_size < 200_000
    r = subprocess.run(
        [sys.executable, "-c", BOMB, str(tmp_path / "bomb.tar.gz"), str(100 << 20)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = r.stdout.splitlines()
    assert r.returncode == 0 and out[0].startswith("ERROR") and "max_total_bytes" in out[0], r.stderr[-2000:]
    assert float(out[1].split()[1]) < 300  # MB above the interpreter's peak before loading


def test_archive_limits_and_truncation_are_one_line_errors(tmp_path):
    huge = png_of_zeros(40_000, 40_000, truncate=True)  # header says 1.6 G pixels: Pillow's own bomb guard
    tar_of(tmp_path / "huge.tar.gz", [("a/0.png", huge), ("b/0.png", huge)])
    with pytest.raises(ValueError, match="a/0.png: image is over the pixel limit") as info:
        load_images(tmp_path / "huge.tar.gz", use_cache=False)
    assert "\n" not in str(info.value)
    big = png_of_zeros(9000, 9000, truncate=True)  # 81 M pixels: under Pillow's guard, over ours
    tar_of(tmp_path / "big.tar.gz", [("a/0.png", big)])
    with pytest.raises(ValueError, match="over the limit of 67108864 pixels"):
        load_images(tmp_path / "big.tar.gz", use_cache=False)
    with pytest.raises(ValueError, match="over the limit of 1000 pixels per image"):
        load_images(tmp_path / "big.tar.gz", use_cache=False, max_pixels=1000)
    tar_of(tmp_path / "member.tar.gz", [("a/0.png", b"\0" * 300_000)])
    with pytest.raises(ValueError, match="member of 300000 bytes is over the limit of 100000 bytes"):
        load_images(tmp_path / "member.tar.gz", use_cache=False, max_member_bytes=100_000)
    rng = np.random.default_rng(0)
    members = []
    for k in range(12):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
        members.append((f"c{k % 3}/{k}.png", buf.getvalue()))
    for mode, ext in (("w:gz", "tar.gz"), ("w", "tar")):
        tar_of(tmp_path / f"ok.{ext}", members, mode)
        assert len(load_images(tmp_path / f"ok.{ext}", use_cache=False)) == 12
        blob = (tmp_path / f"ok.{ext}").read_bytes()
        for frac in (0.3, 0.7):
            (tmp_path / f"cut.{ext}").write_bytes(blob[: int(len(blob) * frac)])
            with pytest.raises(ValueError, match="truncated|not a readable") as info:
                load_images(tmp_path / f"cut.{ext}", use_cache=False)
            assert "\n" not in str(info.value)
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "a").mkdir()
    (tmp_path / "corrupt" / "a" / "0.png").write_bytes(members[0][1][:200])
    with pytest.raises(ValueError, match="a/0.png: not a readable image"):
        load_images(tmp_path / "corrupt", use_cache=False)


# ---- item 10: the command line --------------------------------------------------------------------------
def _probs(m, n, c, seed=0):
    x = np.random.default_rng(seed).random((m, n, c)) + 0.01
    return x / x.sum(-1, keepdims=True)


@pytest.fixture
def files(tmp_path):
    np.save(tmp_path / "m.npy", _probs(4, 30, 5))
    np.save(tmp_path / "one.npy", _probs(1, 30, 5)[0])
    np.save(tmp_path / "y.npy", np.arange(30) % 5)
    np.save(tmp_path / "y_empty.npy", np.zeros(0, dtype=np.int64))
    np.save(tmp_path / "y_float.npy", np.arange(30) % 5 + 0.5)
    np.save(tmp_path / "y_big.npy", np.arange(30) % 7)
    np.save(tmp_path / "m_empty.npy", np.zeros((0, 30, 5)))
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "junk.npy").write_bytes(b"junk" * 10)
    (tmp_path / "adir.npy").mkdir()
    (tmp_path / "afile").write_text("x")
    D = tg.pairwise_distances(_probs(4, 30, 5))
    np.save(tmp_path / "D.npy", D)
    np.save(tmp_path / "D_neg.npy", D - 1.0 + np.eye(4))
    np.save(tmp_path / "D_diag.npy", D + np.eye(4))
    np.save(tmp_path / "D_nan.npy", np.where(np.eye(4) > 0, 0, np.nan))
    np.save(tmp_path / "D_rect.npy", D[:3])
    np.save(tmp_path / "D_empty.npy", np.zeros((0, 0)))
    (tmp_path / "s0").mkdir()
    (tmp_path / "s0" / "manifest.sqlite").write_bytes(b"")
    return tmp_path


CLI_ERRORS = [
    (["distances", "{d}/empty.npy"], "empty file"),
    (["distances", "{d}/adir.npy"], "is a directory"),
    (["distances", "{d}/absent.npy"], "no such file"),
    (["distances", "{d}/junk.npy"], "not a readable .npy"),
    (["distances", "{d}/one.npy"], r"2-d array of shape \(30, 5\), expected \(m, N, C\).*\(1, N, C\)"),
    (["distances", "{d}/m_empty.npy"], "empty models"),
    (["distances", "{d}/m.npy", "-o", "{d}/afile/D.npy"], "afile"),
    (["distances", "{d}/m.npy", "--others", "{d}/one.npy"], "expected \\(m, N, C\\)"),
    (["progress", "{d}/m.npy", "{d}/y_empty.npy"], "empty labels"),
    (["progress", "{d}/m.npy", "{d}/y_float.npy"], "expected integers"),
    (["progress", "{d}/m.npy", "{d}/y_big.npy"], r"label 5 is outside \[0, 5\)"),
    (["progress", "{d}/m.npy", "{d}/m.npy"], r"expected \(N,\) integer labels"),
    (["inpca", "{d}/D_neg.npy"], "must hold divergences"),
    (["inpca", "{d}/D_diag.npy"], "zero diagonal"),
    (["inpca", "{d}/D_nan.npy"], "non-finite"),
    (["inpca", "{d}/D_rect.npy"], "square"),
    (["inpca", "{d}/D_empty.npy"], "empty distance matrix"),
    (["inpca", "{d}/D.npy", "-k", "5"], r"k must be in \[1, 4\]"),
    (["store", "verify", "{d}/nowhere"], "not a taskgeom store"),
    (["store", "verify", "{d}/s0"], "empty .0-byte. manifest"),
    (["store", "verify", "{d}/afile"], "not a directory"),
]


@pytest.mark.parametrize("argv, match", CLI_ERRORS, ids=[f"{a[0]}-{i}" for i, (a, _) in enumerate(CLI_ERRORS)])
def test_cli_input_errors_are_one_line_with_exit_status_1(files, capsys, argv, match):
    import re

    assert cli.main([a.format(d=files) for a in argv]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and re.search(match, lines[0]), captured.err
    assert lines[0].startswith("taskgeom ") and "Traceback" not in captured.err
    assert not (files / "distances.npy").exists()


@pytest.mark.parametrize(
    "argv, match",
    [
        (["distances", "{d}/m.npy", "--chunk", "0"], "--chunk: must be a positive"),
        (["inpca", "{d}/D.npy", "-k", "0"], "-k: must be a positive"),
    ],
)
def test_cli_usage_errors_exit_2(files, capsys, argv, match):
    with pytest.raises(SystemExit) as info:
        cli.main([a.format(d=files) for a in argv])
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], lines


def test_cli_in_a_subprocess_usage_errors_interrupts_and_bugs(files, capsys, monkeypatch):
    for argv in (["distances", str(files / "empty.npy")], ["inpca", str(files / "D.npy"), "-k", "x"], ["nonsense"]):
        r = subprocess.run(
            [sys.executable, "-m", "taskgeom.cli", *argv],
            capture_output=True,
            text=True,
            cwd=files,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert r.returncode == (1 if argv[0] == "distances" else 2), r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_inpca", interrupted)
    assert cli.main(["inpca", str(files / "D.npy")]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["taskgeom inpca: interrupted; run the same command again to resume"]

    def bug(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "_cmd_inpca", bug)
    assert cli.main(["inpca", str(files / "D.npy")]) == 70
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error (ZeroDivisionError" in err[0] and "--debug" in err[0]


@pytest.mark.parametrize(
    "fn, good, bad",
    [
        (_cliutil.positive_int, [("1", 1), ("64", 64)], ["0", "-3", "1.5", "x", ""]),
        (_cliutil.nonnegative_int, [("0", 0), ("7", 7)], ["-1", "two"]),
        (_cliutil.positive_float, [("0.1", 0.1), ("3", 3.0)], ["0", "-1e-3", "nan", "inf", "x"]),
        (_cliutil.nonnegative_float, [("0", 0.0)], ["-0.5", "nan"]),
    ],
)
def test_positive_number_argument_types(fn, good, bad):
    for text, value in good:
        assert fn(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError):
            fn(text)
    p = _cliutil.OneLineParser(prog="t")
    p.add_argument("--epochs", type=fn)
    with pytest.raises(SystemExit) as info:
        p.parse_args(["--epochs", bad[0]])
    assert info.value.code == 2


# ---- item 11: consistency ---------------------------------------------------------------------------------
BACKENDS = ["cpu", "torch"] + (["cuda"] if tg.build_info().get("cuda") and torch.cuda.is_available() else [])


def test_float16_cast_to_float32_is_checked_with_float16_tolerance(tmp_path):
    p16 = _probs(3, 200, 10, seed=3).astype(np.float16)
    p32 = p16.astype(np.float32)
    assert np.abs(p32.astype(np.float64).sum(-1) - 1).max() > 1e-4  # would fail float32's tolerance
    for backend in BACKENDS:
        np.testing.assert_allclose(
            tg.pairwise_distances(p32, backend=backend), tg.pairwise_distances(p16), rtol=1e-6, atol=1e-9
        )
        assert tg.progress(p32, np.arange(200) % 10, backend=backend).shape == (3,)
    store = PredictionStore(tmp_path / "s", create=True)
    store.add_eval_set("e", np.arange(200) % 10)
    t = store.create_trajectory("e", name="t", dtype="float32")
    store.append(t, p32[0])  # accepted, stored as given
    np.testing.assert_array_equal(t.probs[0], p32[0])
    bad = p32.copy()
    bad[1, 4] = np.float16(0.09)  # still exactly float16, but the row sums to about 0.9
    for backend in BACKENDS:
        with pytest.raises(
            ValueError,
            match=r"model 1, sample 4: probabilities sum to .*tolerance 0.01; the float32 "
            r"values are all exactly representable in float16",
        ):
            tg.pairwise_distances(bad, backend=backend)
    genuine = p32 + np.float32(1e-6)  # not float16 data: float32's tolerance, and the message says so
    with pytest.raises(ValueError, match=r"tolerance 0.0001\)"):
        tg.pairwise_distances(genuine, backend="torch")
    for tol in (float("nan"), -1.0, float("inf")):
        with pytest.raises(ValueError, match="tol must be a finite number >= 0"):
            tg.pairwise_distances(p32, tol=tol)
        with pytest.raises(ValueError, match="tol must be a finite number >= 0"):
            tg.bhattacharyya(p32[0], p32[1], tol=tol)


def test_inpca_rejects_negative_distances_nonzero_diagonal_and_empty():
    D = tg.pairwise_distances(_probs(5, 30, 4))
    assert tg.inpca(D).coords.shape == (5, 5)
    with pytest.raises(ValueError, match=r"D\[0, 1\] = -0.5"):
        tg.inpca(np.array([[0.0, -0.5], [-0.5, 0.0]]))
    with pytest.raises(ValueError, match=r"zero diagonal.*D\[2, 2\] = 0.1"):
        tg.inpca(D + np.diag([0, 0, 0.1, 0, 0]))
    with pytest.raises(ValueError, match="empty"):
        tg.inpca(np.zeros((0, 0)))


@pytest.mark.parametrize(
    "call",
    [
        lambda: tg.pairwise_distances(np.zeros((0, 5, 3))),
        lambda: tg.pairwise_distances(np.zeros((2, 0, 3)), validate=False),
        lambda: tg.pairwise_distances(_probs(2, 5, 3), np.zeros((0, 5, 3)), validate=False),
        lambda: tg.progress(np.zeros((2, 0, 3)), np.zeros(0, dtype=np.int64), validate=False),
        lambda: tg.progress(np.zeros((0, 5, 3)), np.zeros(5, dtype=np.int64)),
        lambda: tg.bhattacharyya(np.zeros((0, 3)), np.zeros((0, 3)), validate=False),
        lambda: tg.geodesic(np.zeros((0, 3)), np.zeros((0, 3)), 0.5, validate=False),
    ],
)
def test_empty_inputs_are_clear_errors(call):
    with pytest.raises(ValueError, match="empty|at least 1") as info:
        call()
    assert "reshape" not in str(info.value) and "reduction" not in str(info.value)


def test_validate_false_on_nan_is_unchecked_but_never_crashes():
    p = _probs(3, 40, 4)
    p[1, 3, 2] = np.nan
    for backend in BACKENDS:
        D = tg.pairwise_distances(p, backend=backend, validate=False)
        assert D.shape == (3, 3) and D[0, 2] == pytest.approx(tg.pairwise_distances(p[[0, 2]])[0, 1])
        assert tg.progress(p, np.arange(40) % 4, backend=backend, validate=False).shape == (3,)
    with pytest.raises(ValueError, match="model 1, sample 3"):
        tg.pairwise_distances(p)
    assert "unspecified" in tg.geometry.__doc__ and "never crash" in tg.geometry.__doc__
    t = torch.as_tensor(p)
    assert tg.bhattacharyya(t[0], t[1], validate=False).dtype == torch.float64


def test_scripts_share_the_command_lines_error_policy(capsys, monkeypatch):
    """cli.run_script (every experiment script's entry): the exit statuses and one-line messages of
    cli.main, the script named, SystemExit passed through, a non-int return value ignored."""
    from taskgeom import cli

    monkeypatch.delenv("TASKGEOM_TRACEBACK", raising=False)

    def outcome(main, **kw):
        with pytest.raises(SystemExit) as e:
            cli.run_script(main, "x.py", **kw)
        return e.value.code, capsys.readouterr().err.strip().splitlines()

    def interrupt(words=None):
        def main():
            raise KeyboardInterrupt(*([words] if words else []))

        return main

    def raising(exc):
        def main():
            raise exc

        return main

    assert outcome(interrupt(), interrupted="do this") == (130, ["x.py: interrupted; do this"])
    assert outcome(interrupt("rerun with --work W")) == (130, ["x.py: interrupted; rerun with --work W"])
    assert outcome(raising(ValueError("f.json: bad\n  value"))) == (1, ["x.py: error: f.json: bad value"])
    status, err = outcome(raising(AssertionError("oops")))
    assert status == 70 and len(err) == 1
    assert (
        err[0]
        == "x.py: internal error (AssertionError: oops); please report it, TASKGEOM_TRACEBACK=1 shows the traceback"
    )
    assert outcome(raising(SystemExit(2))) == (2, [])  # argparse's usage errors
    assert outcome(lambda: {"result": 1}) == (0, []) and outcome(lambda: 3) == (3, [])
    monkeypatch.setenv("TASKGEOM_TRACEBACK", "1")
    with pytest.raises(ValueError):
        cli.run_script(raising(ValueError("shown")), "x.py")
