"""mlp-predict on image files, and mlp-eval on perturbed images."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from mlptrain.cli.evaluate import main as eval_main
from mlptrain.cli.predict import main as predict_main

from .conftest import synthetic_images


def test_predicts_files_and_folders_and_reports_unreadable_ones(tmp_path, checkpoint, capsys):
    labels = np.array([3, 7])
    images = synthetic_images(labels, np.random.default_rng(0))
    Image.fromarray(images[0]).save(tmp_path / "three.png")
    folder = tmp_path / "more"
    folder.mkdir()
    # Dark strokes on white, ten times the size, as a scan or a drawing app makes them.
    big = Image.fromarray(255 - images[1]).resize((280, 280), Image.Resampling.NEAREST)
    big.save(folder / "seven.jpg", quality=95)
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    capsys.readouterr()
    status = predict_main(
        [
            "--checkpoint",
            str(checkpoint),
            str(tmp_path / "three.png"),
            str(folder),
            "--jsonl",
        ]
    )
    captured = capsys.readouterr()
    assert status == 1  # one file failed
    assert "cannot read" in captured.err and "broken.png" in captured.err
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [file_name(line["path"]) for line in lines] == ["three.png", "seven.jpg"]
    for line, label in zip(lines, labels, strict=True):
        assert len(line["top"]) == 3
        probabilities = [entry["probability"] for entry in line["top"]]
        assert probabilities == sorted(probabilities, reverse=True)
        assert line["top"][0]["index"] == label
        assert line["top"][0]["class"] == str(label)


def file_name(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def test_plain_output_and_top_k(tmp_path, checkpoint, capsys):
    image = synthetic_images(np.array([5]), np.random.default_rng(1))[0]
    Image.fromarray(image).save(tmp_path / "five.png")
    capsys.readouterr()
    assert (
        predict_main(["--checkpoint", str(checkpoint), str(tmp_path / "five.png"), "--top-k", "1"])
        == 0
    )
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"{tmp_path / 'five.png'}: 5 (") and out.count("(") == 1


def test_bad_checkpoint_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "x.pt").write_bytes(b"nope")
    assert predict_main(["--checkpoint", str(tmp_path / "x.pt"), "a.png"]) == 2


def test_eval_on_rotated_and_shifted_images(checkpoint, capsys):
    capsys.readouterr()
    assert eval_main(["--checkpoint", str(checkpoint), "--json"]) == 0
    clean = json.loads(capsys.readouterr().out)
    assert "perturbed" not in clean
    arguments = ["--checkpoint", str(checkpoint), "--json", "--rotate", "45", "--shift", "6"]
    assert eval_main(arguments) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["accuracy"] == clean["accuracy"]
    perturbed = first["perturbed"]
    assert (perturbed["rotate"], perturbed["shift"], perturbed["n"]) == (45, 6, clean["n"])
    assert perturbed["accuracy"] < clean["accuracy"]  # bars moved by 6 px are other classes
    assert eval_main(arguments) == 0
    assert json.loads(capsys.readouterr().out)["perturbed"] == perturbed  # seeded
    assert eval_main(["--checkpoint", str(checkpoint), "--rotate", "400"]) == 2


def test_old_flag_spellings_work_for_a_release_and_name_the_new_ones(tmp_path, checkpoint, capsys):
    """--seed and --out of mlp-eval are now --perturb-seed and --out-dir; mlp-predict's
    JSON lines are --jsonl. The old spellings give the same results, with a warning."""
    perturbed = ["--checkpoint", str(checkpoint), "--json", "--rotate", "45", "--shift", "6"]
    capsys.readouterr()
    assert eval_main([*perturbed, "--perturb-seed", "5", "--out-dir", str(tmp_path / "new")]) == 0
    new = capsys.readouterr()
    assert "deprecated" not in new.err
    assert eval_main([*perturbed, "--seed", "5", "--out", str(tmp_path / "old")]) == 0
    old = capsys.readouterr()
    assert "--seed is deprecated" in old.err and "use --perturb-seed" in old.err
    assert "--out is deprecated" in old.err and "use --out-dir" in old.err
    assert json.loads(old.out)["perturbed"] == json.loads(new.out)["perturbed"]
    assert eval_main(perturbed) == 0
    default_seed = json.loads(capsys.readouterr().out)["perturbed"]
    assert default_seed != json.loads(new.out)["perturbed"]  # the seed was taken
    names = sorted(path.name for path in (tmp_path / "new").iterdir())
    assert names and names == sorted(path.name for path in (tmp_path / "old").iterdir())

    image = tmp_path / "three.png"
    Image.fromarray(synthetic_images(np.array([3]), np.random.default_rng(0))[0]).save(image)
    assert predict_main(["--checkpoint", str(checkpoint), str(image), "--jsonl"]) == 0
    lines = capsys.readouterr()
    assert predict_main(["--checkpoint", str(checkpoint), str(image), "--json"]) == 0
    deprecated = capsys.readouterr()
    assert deprecated.out == lines.out and json.loads(lines.out)["top"]
    assert "--json is deprecated" in deprecated.err and "use --jsonl" in deprecated.err
