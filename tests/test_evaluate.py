"""``fastprotect evaluate`` end to end on the tiny model, in seconds."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastprotect.cli import main

from .conftest import DATA, REPO, needs_data, needs_weights, tiny_args

TRANSFORMS = {"clean", "jpeg75", "jpeg90", "resize0.5", "blur1", "noise0.05"}


def _evaluate(model, out, *extra):
    return main([
        "evaluate", str(DATA / "objects"), "--method", f"mop:{model}", "--method", "pgd:2",
        "--method", "photoguard:2", "--method", "sign", "--method", "uniform",
        "--out", str(out), "--size", "32", "--split", "all", "--limit", "2",
        "--strength", "jnd", "--examples", "1", *extra,
    ])  # fmt: skip


@needs_data
@needs_weights
def test_evaluate_writes_every_method_transform_and_metric(model, tmp_path, capsys):
    assert _evaluate(model, tmp_path / "ev") == 0
    assert "| model | clean |" in capsys.readouterr().out  # named after the file
    doc = json.loads((tmp_path / "ev" / "results.json").read_text())
    rows = doc["rows"]
    methods = {"none", "model", "pgd2", "photoguard2", "sign", "uniform"}
    assert {r["method"] for r in rows} == methods
    assert {r["transform"] for r in rows} == TRANSFORMS
    assert len(rows) == 2 * len(methods) * len(TRANSFORMS)
    assert {r["domain"] for r in rows} == {"objects"}
    assert doc["settings"]["decoder"] and doc["settings"]["dists"] is False
    assert doc["settings"]["strength_map"] == "JNDMap" and doc["settings"]["s_min"] == 0.5
    assert doc["settings"]["command"].startswith("fastprotect evaluate ")
    assert doc["settings"]["torch_threads"] == torch.get_num_threads()
    for r in rows:
        method, transform = r["method"], r["transform"]
        assert r["dists"] is None  # unavailable, never 0
        if (method, transform) == ("none", "clean"):
            assert math.isinf(r["psnr"]) and r["latent_pull"] == pytest.approx(1.0)
            assert r["disruption_db"] == pytest.approx(0.0, abs=1e-6)
        if (method, transform) == ("sign", "clean"):
            # +-8/255 everywhere (less where clamped): PSNR = 20 log10(255 / 8) = 30.07 dB
            assert 30.06 < r["psnr"] < 32
        if transform == "clean" and method != "none":
            assert r["psnr"] >= 30.06  # every method within the 8/255 budget
    summary = [e for e in doc["summary"] if e["domain"] == "all" and e["transform"] == "clean"]
    assert {e["method"] for e in summary} == methods and all(e["n"] == 2 for e in summary)
    with (tmp_path / "ev" / "results.csv").open() as f:
        header = next(csv.reader(f))
    assert {"psnr", "ssim", "lpips", "latent_pull", "disruption_db", "seconds"} <= set(header)
    # the results page is regenerated from this file
    page = tmp_path / "results.md"
    report = [
        sys.executable,
        str(REPO / "tools" / "report.py"),
        str(tmp_path / "ev" / "results.json"),
    ]
    note = "Ran beside a training job."
    subprocess.run([*report, "--out", str(page), "--note", note], check=True, capture_output=True)
    text = page.read_text()
    assert (
        doc["settings"]["command"] in text and "## The first model's targets against `pgd2`" in text
    )
    assert f"\n{note}\n" in text and f"(torch threads: {torch.get_num_threads()})" in text
    assert f"--note '{note}'" in text  # the page names the report command that wrote it
    sign = next(
        e
        for e in doc["summary"]
        if e["method"] == "sign" and e["transform"] == "clean" and e["domain"] == "all"
    )
    assert f"| sign | {sign['psnr']:.2f} ± {sign['psnr_std']:.2f} |" in text
    figure = tmp_path / "results_disruption_psnr.png"
    assert figure.stat().st_size > 10_000 and "results_disruption_psnr.png" in text
    # without --out the page goes beside its input, never over the project's docs/results.md
    tracked = (REPO / "docs" / "results.md").stat().st_mtime_ns
    subprocess.run(report, check=True, capture_output=True)
    assert (tmp_path / "ev" / "results.md").is_file()
    assert (tmp_path / "ev" / "results_disruption_psnr.png").is_file()
    assert (REPO / "docs" / "results.md").stat().st_mtime_ns == tracked
    # --examples 1: one image of the one domain, every method and its reconstruction
    (example,) = (tmp_path / "ev" / "examples" / "objects").iterdir()
    names = {p.stem for p in example.glob("*.png")}
    assert names == {"original", "original_recon"} | methods | {f"{m}_recon" for m in methods}
    assert (tmp_path / "results_grid_objects.jpg").is_file() and "results_grid_objects" in text


@needs_data
@needs_weights
def test_evaluate_refuses_to_overwrite_and_bad_methods(model, tmp_path, capsys):
    out = tmp_path / "ev"
    out.mkdir()
    (out / "results.json").write_text("keep")
    assert _evaluate(model, out) == 2
    assert "exists" in capsys.readouterr().err
    assert (out / "results.json").read_text() == "keep"
    assert main(["evaluate", str(DATA), "--method", "sign", "--out", str(tmp_path / "x")]) == 2
    assert "at least one MoP model" in capsys.readouterr().err
    args = ["evaluate", str(DATA), "--method", f"mop:{model}", "--method", "fgsm"]
    assert main([*args, "--out", str(tmp_path / "y")]) == 2
    assert "unknown method 'fgsm'" in capsys.readouterr().err
    args = ["evaluate", str(DATA), "--method", f"mop:{model}", "--method", "pgd:ten"]
    assert main([*args, "--out", str(tmp_path / "z")]) == 2
    assert "positive integer" in capsys.readouterr().err
    args = ["evaluate", str(DATA), "--method", f"mop:{model}", "--method", "resized:2"]
    assert main([*args, "--out", str(tmp_path / "r")]) == 2
    assert "'resized' takes no argument" in capsys.readouterr().err


@needs_data
@needs_weights
def test_evaluate_on_an_encoder_the_model_was_not_trained_on(model, tmp_path, capsys):
    """Transfer: the tiny model was trained on the tiny random VAE; measure it on TAEF2's
    latent space, and the other way round (no decoder for the random VAE: disruption is
    unavailable, never 0)."""
    for encoder, decoder in (("taef2", True), ("tiny-random", False)):
        out = tmp_path / encoder
        args = ["--transforms", "clean", "--eval-encoder", encoder]
        assert _evaluate(model, out, *args) == 0
        doc = json.loads((out / "results.json").read_text())
        assert doc["settings"]["eval_encoder"] == encoder
        assert doc["settings"]["decoder"] is decoder
        for r in doc["rows"]:
            if r["method"] == "model":
                assert r["latent_pull"] > 0 and math.isfinite(r["latent_pull"])
                assert (r["disruption_db"] is None) is (not decoder)


def _load_report():
    import importlib.util

    spec = importlib.util.spec_from_file_location("report", REPO / "tools" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_pairs_ablation_steps_per_image():
    """The chain's step changes are per-image differences: mean, standard error, count up."""
    report = _load_report()
    rows = [
        {"image": i, "method": m, "transform": "clean", "disruption_db": d}
        for i, (a, b) in enumerate([(1.0, 2.0), (2.0, 2.5), (3.0, 2.0)])
        for m, d in (("1_uap", a), ("2_mop_random", b))
    ]
    # differences +1.0, +0.5, -1.0: mean 1/6, sample sd sqrt(13/12), s.e. sqrt(13/36)
    assert report.paired(rows, "1_uap", "2_mop_random") == "+0.167 ± 0.601 dB (up on 2 of 3)"
    assert report.paired(rows, "1_uap", "2_mop_random", "jpeg75") == "n/a"
    summary = [
        {"method": m, "transform": "clean", "domain": "all", "disruption_db": d}
        for m, d in (("1_uap", 2.0), ("2_mop_random", 6.5 / 3))
    ]
    settings = {"images": 3, "split": "val", "size": 8, "transforms": ["clean"]}
    page = report.render_ablation({"settings": settings, "summary": summary, "rows": rows}, "x")
    assert "MoP without assignment (random group): +0.167 ± 0.601 dB (up on 2 of 3)" in page


@pytest.fixture(scope="module")
def view_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("view_model")
    args = tiny_args(tmp, "--trainer.max_steps=2", "--model.lr=0.05", "--model.view=48")
    assert main(["fit", *args]) == 0
    return tmp / "model.safetensors"


@needs_data
@needs_weights
def test_view_mode_publishes_at_native_resolution_and_scores_each_view(view_model, tmp_path):
    out = tmp_path / "ev"
    assert main([
        "evaluate", str(DATA / "objects"), "--method", f"mop:{view_model}",
        "--method", "pgd:2", "--method", "pgdu:2", "--method", "sign", "--method", "resized",
        "--out", str(out),
        "--split", "all", "--per-domain", "2", "--max-side", "96", "--view", "48", "--view", "64",
        "--strength", "jnd", "--transforms", "clean", "jpeg75", "--examples", "1",
    ]) == 0  # fmt: skip
    doc = json.loads((out / "results.json").read_text())
    rows = doc["rows"]
    # the examples are the published images: native for MoP, the first view for PGD
    example = next((out / "examples" / "objects").iterdir())
    original = Image.open(example / "original.png").size
    assert Image.open(example / "model.png").size == original
    assert min(Image.open(example / "pgd2.png").size) == 48
    assert (example / "model_recon_view48.png").is_file()
    assert doc["settings"]["views"] == [48, 64] and doc["settings"]["size"] is None
    assert doc["settings"]["per_domain"] == 2
    assert doc["settings"]["device"] == "cpu" and doc["settings"]["resumed_images"] == 0
    assert not (out / "partial.jsonl").exists()
    assert len(rows) == 2 * 6 * 2 * 2  # images x methods x transforms x views
    assert {r["view"] for r in rows} == {48, 64}
    published = {r["method"]: r["published"] for r in rows}
    assert published == {
        "none": "native", "model": "native", "pgd2": "view", "pgdu2": "view", "sign": "native",
        "resized": "view",
    }  # fmt: skip
    # the unprotected image published at the view: PGD's reference
    assert min(Image.open(example / "resized.png").size) == 48
    for r in rows:
        if r["transform"] != "clean":
            continue
        if r["method"] == "sign":
            # +-8/255 on the published image: 30.07 dB, but blurred it is fine grain only
            assert 30.06 < r["psnr"] < 32 and r["lf_psnr"] > r["psnr"] + 10
        if r["method"] in ("pgd2", "pgdu2"):
            assert r["psnr"] >= 30.06  # within the budget at the view it was made at
        if r["method"] in ("none", "resized"):
            assert r["latent_pull"] == pytest.approx(1.0)
            assert r["disruption_db"] == pytest.approx(0.0, abs=1e-6)
    # native methods' invisibility does not depend on the view; PGD's is made per view
    by = {(r["image"], r["method"], r["view"]): r for r in rows if r["transform"] == "clean"}
    image = rows[0]["image"]
    assert by[(image, "sign", 48)]["psnr"] == by[(image, "sign", 64)]["psnr"]
    assert by[(image, "pgdu2", 48)]["psnr"] != by[(image, "pgdu2", 64)]["psnr"]
    views = {e["view"] for e in doc["summary"]}
    assert views == {48, 64}


def test_sizes_below_their_least_are_clear_errors(tmp_path, capsys):
    for option, value, least in [
        ("--view", "4", 16), ("--size", "0", 16), ("--limit", "-1", 1), ("--per-domain", "0", 1)
    ]:  # fmt: skip
        with pytest.raises(SystemExit):
            main(["evaluate", str(tmp_path), "--method", "mop", "--out", str(tmp_path / "o"),
                  option, value])  # fmt: skip
        assert f"must be at least {least}, got {value}" in capsys.readouterr().err
    from fastprotect.eval.run import EvaluationError, evaluate

    with pytest.raises(EvaluationError, match="at least 16"):  # the API says it too
        evaluate([tmp_path], [], None, views=[8])


def test_journalled_names_resume_from_here_and_from_elsewhere(tmp_path, monkeypatch):
    from fastprotect.eval.journal import JournalError, journalled_names

    files = [str(tmp_path / "a.png"), str(tmp_path / "sub" / "a.png"), str(tmp_path / "b.png")]
    monkeypatch.chdir(tmp_path)
    # journalled from here as `evaluate .`: a.png is ./a.png, not sub/a.png
    assert journalled_names(files, {"a.png": []}) == {files[0]: "a.png"}
    assert journalled_names(files, {files[1]: [], "b.png": []}) == {
        files[1]: files[1], files[2]: "b.png"
    }  # fmt: skip
    # journalled from another folder: found by the end of the path, if only one ends so
    monkeypatch.chdir("/")
    other = f"../{tmp_path.name}/sub/a.png"
    assert journalled_names(files, {other: []}) == {files[1]: other}
    with pytest.raises(JournalError, match="could be any of"):
        journalled_names(files, {"a.png": []})  # from /: ./a.png or sub/a.png


@needs_data
@needs_weights
def test_purifications_run_in_both_modes_and_content_moves_are_scored_fairly(model, tmp_path):
    purify = ["--transforms", "clean", "purification"]
    assert (
        main(
            [
                "evaluate",
                str(DATA / "objects"),
                "--method",
                f"mop:{model}",
                "--method",
                "sign",
                "--out",
                str(tmp_path / "crop"),
                "--size",
                "32",
                "--split",
                "all",
                "--limit",
                "1",
                "--strength",
                "jnd",
                *purify,
            ]
        )  # fmt: skip
        == 0
    )
    doc = json.loads((tmp_path / "crop" / "results.json").read_text())
    names = ["clean", "gnoise0.05", "gnoise0.1", "gnoise0.05_up4", "gnoise0.1_up4", "jpeg50",
             "crop_resize", "adversecleaner", "social", "impress"]  # fmt: skip
    assert doc["settings"]["transforms"] == names
    assert doc["settings"]["impress"]["steps"] == 20
    assert doc["settings"]["impress"]["distance"] in ("lpips", "1 - ssim")
    rows = {(r["method"], r["transform"]): r for r in doc["rows"]}
    # the unprotected image is scored against the same crop-and-resize of itself: nothing lost
    assert rows[("none", "crop_resize")]["disruption_db"] == pytest.approx(0.0, abs=1e-6)
    assert math.isinf(rows[("none", "crop_resize")]["psnr"])
    for name in names[1:]:
        if name != "crop_resize":  # a purification changes the unprotected image too
            assert rows[("none", name)]["psnr"] < 60, name
    # view mode: a large image goes through the social chain (shrunk to 1080) and back
    big = tmp_path / "big" / "objects"
    big.mkdir(parents=True)
    rgb = np.random.default_rng(0).integers(0, 256, (1200, 1300, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(big / "large.png")
    assert (
        main(
            [
                "evaluate",
                str(big),
                "--method",
                f"mop:{model}",
                "--out",
                str(tmp_path / "view"),
                "--view",
                "64",
                "--split",
                "all",
                "--strength",
                "jnd",
                "--transforms",
                "clean",
                "social",
                "crop_resize",
            ]
        )  # fmt: skip
        == 0
    )
    rows = json.loads((tmp_path / "view" / "results.json").read_text())["rows"]
    got = {(r["method"], r["transform"]): r for r in rows}
    assert got[("none", "crop_resize")]["disruption_db"] == pytest.approx(0.0, abs=1e-6)
    assert math.isfinite(got[("model", "social")]["psnr"])


@needs_weights
def test_unknown_transform_names_the_choices(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path), "--method", "mop", "--out", str(tmp_path / "o"),
                 "--transforms", "jpeg42"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "unknown transforms ['jpeg42']" in err and "adversecleaner" in err


@needs_weights
def test_evaluate_checks_the_strength_range(tmp_path, capsys):
    args = ["evaluate", str(tmp_path), "--method", "mop", "--out", str(tmp_path / "o")]
    assert main([*args, "--s-max", "1.5"]) == 2
    assert "--s-max must be above 0 and at most 1, got 1.5" in capsys.readouterr().err
    assert main([*args, "--s-min", "2"]) == 2
    assert "--s-min must be between 0 and --s-max (1.0), got 2.0" in capsys.readouterr().err


def _short_run(model, out, *extra):
    return main([
        "evaluate", str(DATA / "objects"), "--method", f"mop:{model}", "--method", "sign",
        "--out", str(out), "--size", "32", "--split", "all", "--limit", "3",
        "--transforms", "clean", "jpeg75", *extra,
    ])  # fmt: skip


@needs_data
@needs_weights
def test_an_interrupted_evaluation_resumes_where_it_stopped(model, tmp_path, capsys, monkeypatch):
    import fastprotect.eval.run as run

    assert _short_run(model, tmp_path / "whole") == 0
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert not (tmp_path / "whole" / "partial.jsonl").exists()  # removed once saved

    measured = []
    crop_rows = run._crop_rows

    def stop_at_the_third(x, image, *args):
        if len(measured) == 2:
            raise KeyboardInterrupt  # as if the machine were stopped
        measured.append(image)
        return crop_rows(x, image, *args)

    monkeypatch.setattr(run, "_crop_rows", stop_at_the_third)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        _short_run(model, out)
    journal = out / "partial.jsonl"
    assert len(journal.read_text().splitlines()) == 1 + 2  # the key, then two images
    assert not (out / "results.json").exists()

    # what it measured so far can be read as results while it is stopped
    so_far = tmp_path / "so_far"
    tool = [sys.executable, str(REPO / "tools" / "journal_results.py"), str(journal)]
    done = subprocess.run([*tool, "--out", str(so_far)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "2 of 3 images measured so far" in done.stdout
    partial = json.loads((so_far / "results.json").read_text())
    assert partial["settings"]["partial"]["measured"] == 2
    assert partial["settings"]["partial"]["of"] == 3
    assert partial["settings"]["images"] == 2
    assert "2 of the 3 images of an unfinished evaluate run" in partial["settings"]["command"]
    assert [r["image"] for r in partial["rows"]] == [r["image"] for r in whole["rows"][: len(
        partial["rows"])]]  # fmt: skip
    first_two = {r["image"] for r in partial["rows"]}
    assert len(first_two) == 2 and first_two == set(measured)
    clean_sign = [
        r["disruption_db"]
        for r in partial["rows"]
        if (r["method"], r["transform"]) == ("sign", "clean")
    ]
    assert clean_sign == [
        r["disruption_db"]
        for r in whole["rows"]
        if r["image"] in first_two and (r["method"], r["transform"]) == ("sign", "clean")
    ]
    assert journal.exists()  # only read
    again = subprocess.run([*tool, "--out", str(so_far)], capture_output=True, text=True)
    assert again.returncode == 2 and "exists; choose another --out" in again.stderr
    monkeypatch.setattr(run, "_crop_rows", crop_rows)
    capsys.readouterr()

    # without --resume the interrupted run's rows are kept, not overwritten
    assert _short_run(model, out) == 2
    assert "--resume" in capsys.readouterr().err
    # other settings cannot continue it
    assert _short_run(model, out, "--resume", "--strength", "off") == 2
    err = capsys.readouterr().err
    assert "differ in: " in err and "strength" in err
    with journal.open("a") as f:
        f.write('{"image": "cut sh')  # a kill in the middle of a write
    seen = []

    def count(x, image, *args):
        seen.append(image)
        return crop_rows(x, image, *args)

    monkeypatch.setattr(run, "_crop_rows", count)
    assert _short_run(model, out, "--resume") == 0
    assert "2 of 3 images already measured" in capsys.readouterr().err
    assert len(seen) == 1 and seen[0] not in measured  # only the third image measured
    resumed = json.loads((out / "results.json").read_text())
    assert not journal.exists()

    def values(doc):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in doc["rows"]]

    assert values(resumed) == values(whole)  # the same rows as the uninterrupted run


def test_a_device_this_machine_lacks_is_a_clear_error(tmp_path, capsys):
    args = ["evaluate", str(tmp_path), "--method", "mop", "--out", str(tmp_path / "o")]
    for name in ("tpu", "meta"):
        assert main([*args, "--device", name]) == 2
        assert f"--device '{name}'" in (err := capsys.readouterr().err) and "use cpu or cuda" in err
    if not torch.cuda.is_available():
        assert main([*args, "--device", "cuda"]) == 2
        assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # checked before any image or model is read


@needs_data
@needs_weights
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_evaluate_on_a_gpu_gives_the_cpu_numbers(tmp_path):
    """Runs only where a GPU is lent: the same rows on CUDA as on the CPU, to float error.
    The shipped model, so that it needs nothing a GPU machine without a registry lacks."""
    docs = {}
    for device in ("cpu", "cuda"):
        assert main([
            "evaluate", str(DATA / "objects"), "--method", "mop",
            "--method", "pgdu:2", "--method", "sign", "--out", str(tmp_path / device),
            "--split", "all", "--per-domain", "2", "--max-side", "96", "--view", "48",
            "--strength", "jnd", "--transforms", "clean", "jpeg75", "gnoise0.05", "impress",
            "--device", device,
        ]) == 0  # fmt: skip
        docs[device] = json.loads((tmp_path / device / "results.json").read_text())
    assert docs["cuda"]["settings"]["device"].startswith("cuda")
    for a, b in zip(docs["cpu"]["rows"], docs["cuda"]["rows"], strict=True):
        assert [a[k] for k in ("image", "method", "transform")] == [
            b[k] for k in ("image", "method", "transform")
        ]
        # JPEG and PGD's sign steps can flip on a rounding difference: loose, but not free
        assert b["disruption_db"] == pytest.approx(a["disruption_db"], abs=0.3)
        if a["transform"] == "clean" and a["method"] not in ("none", "pgdu2"):
            assert b["psnr"] == pytest.approx(a["psnr"], abs=0.05)


def test_the_journal_drops_a_cut_line_and_refuses_what_it_cannot_continue(tmp_path):
    from fastprotect.eval.journal import JournalError, RunJournal

    path = tmp_path / "partial.jsonl"
    key = {"views": (512,), "methods": ["shipped"]}  # a tuple reads back as a list
    journal = RunJournal.open(path, key, resume=False)
    journal.record("a.png", [{"psnr": 30.5, "lf_psnr": math.inf}])
    with path.open("a") as f:
        f.write('{"image": "b.png", "ro')  # killed in the middle of a write
    with pytest.raises(JournalError, match="add --resume"):
        RunJournal.open(path, key, resume=False)
    with pytest.raises(JournalError, match="differ in: methods"):
        RunJournal.open(path, {**key, "methods": ["v1"]}, resume=True)
    journal = RunJournal.open(path, key, resume=True)
    assert journal.done == {"a.png": [{"psnr": 30.5, "lf_psnr": math.inf}]}
    journal.record("b.png", [{"psnr": 31.0}])
    lines = [json.loads(line) for line in path.read_text().splitlines()]  # every line whole
    assert [e.get("image") for e in lines] == [None, "a.png", "b.png"]
    assert RunJournal.open(path, key, resume=True).done["b.png"] == [{"psnr": 31.0}]
    path.write_text(path.read_text() + '["not an image"]\n')
    with pytest.raises(JournalError, match="start over"):
        RunJournal.open(path, key, resume=True)


def test_partial_results_find_images_journalled_under_relative_names(tmp_path, monkeypatch):
    """evaluate journals each image under the path it was given (often relative, as
    ``../shared/data/...``) while the key holds absolute paths; the reader of a partial
    run pairs them in the run's order, from any working directory."""
    import importlib.util

    from fastprotect.eval.journal import JournalError, RunJournal

    spec = importlib.util.spec_from_file_location(
        "journal_results", REPO / "tools" / "journal_results.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    data = tmp_path / "shared" / "data"
    files = [str(data / "faces" / "b.png"), str(data / "cartoon" / "a.png")]
    key = {"files": files, "transforms": ["clean"], "views": [512], "images": 2}
    run_dir = tmp_path / "work"
    run_dir.mkdir()
    monkeypatch.chdir(run_dir)
    journal = RunJournal.open(tmp_path / "partial.jsonl", key, resume=False)
    journal.record("../shared/data/cartoon/a.png", [{"image": "a", "disruption_db": 1.0}])
    for cwd in (run_dir, tmp_path):  # where the run ran, and elsewhere
        monkeypatch.chdir(cwd)
        rows, settings = tool.partial_results(tmp_path / "partial.jsonl")
        assert rows == [{"image": "a", "disruption_db": 1.0}]
        assert settings["partial"]["measured"] == 1 and settings["partial"]["of"] == 2
        assert settings["partial"]["images"] == ["../shared/data/cartoon/a.png"]
    journal.record("../shared/data/faces/b.png", [{"image": "b", "disruption_db": 2.0}])
    rows, _ = tool.partial_results(tmp_path / "partial.jsonl")
    assert [r["image"] for r in rows] == ["b", "a"]  # the run's order, not the journal's
    journal.record("elsewhere/c.png", [{"image": "c", "disruption_db": 3.0}])
    with pytest.raises(tool.EvaluationError, match="1 of its journalled images are not among"):
        tool.partial_results(tmp_path / "partial.jsonl")

    # one journalled name that two of the run's images end with is refused, not guessed
    files = [str(tmp_path / "p" / "q" / "a.png"), str(tmp_path / "r" / "q" / "a.png")]
    twice = RunJournal.open(tmp_path / "twice.jsonl", {**key, "files": files}, resume=False)
    twice.record("q/a.png", [{"image": "a"}])
    monkeypatch.chdir(run_dir)  # q/a.png resolves to neither
    with pytest.raises(tool.JournalError, match="could be any of"):
        tool.partial_results(tmp_path / "twice.jsonl")
    from fastprotect.eval.journal import _tail

    assert _tail("x/../../data/./a.png") == "/data/a.png"

    # a file that is not a journal: no advice to delete it
    (tmp_path / "results.json").write_text('{"settings": {}}\n{"rows": []}\n')
    with pytest.raises(JournalError, match="not an evaluation journal; name an OUT/partial"):
        tool.partial_results(tmp_path / "results.json")
    # the run's own folder is refused as --out: its results.json would stop the run
    monkeypatch.setattr(
        sys, "argv", ["journal_results", str(tmp_path / "partial.jsonl"), "--out", str(tmp_path)]
    )
    assert tool.main() == 2
    assert not (tmp_path / "results.csv").exists()


def _load_tool(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


@needs_data
def test_shards_split_the_selection_into_disjoint_parts_of_every_domain():
    from fastprotect.eval.run import EvaluationError, select_files, take_shard

    roots = [DATA / "objects", DATA / "cartoon"]
    whole = select_files(roots, "val")
    shards = [take_shard(whole, (i, 3)) for i in (1, 2, 3)]
    assert sorted(f for s in shards for f in s) == sorted(whole)  # all, each once
    assert shards[0] == whole[0::3] and shards[2] == whole[2::3]
    for s in shards:  # each shard samples both domains
        assert any("objects" in str(f) for f in s) and any("cartoon" in str(f) for f in s)
    with pytest.raises(EvaluationError, match="shard 4/3: I must be 1 to N"):
        take_shard(whole, (4, 3))
    with pytest.raises(EvaluationError, match="is empty"):
        take_shard(select_files(roots, "val", limit=2), (3, 3))


@needs_data
@needs_weights
def test_shards_of_a_run_merge_into_the_whole_runs_results(model, tmp_path, capsys, monkeypatch):
    import gzip

    assert _short_run(model, tmp_path / "whole") == 0
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    for i in (1, 2, 3):
        assert _short_run(model, tmp_path / f"s{i}", "--shard", f"{i}/3") == 0
    s1 = json.loads((tmp_path / "s1" / "results.json").read_text())
    assert s1["settings"]["shard"] == [1, 3] and s1["settings"]["images"] == 1
    assert s1["settings"]["selection"]["images"] == 3
    assert set(s1["settings"]["models"]) == {"model"}  # the MoP method, named after its file
    assert "torch" in s1["settings"]["versions"]
    gz = tmp_path / "s3.json.gz"
    gz.write_bytes(gzip.compress((tmp_path / "s3" / "results.json").read_bytes()))
    tool = _load_tool("merge_results")

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["merge_results", *map(str, args)])
        return tool.main()

    def values(doc, images=None):
        return [
            {k: v for k, v in r.items() if k != "seconds"}
            for r in doc["rows"]
            if images is None or r["image"] in images
        ]

    shard = {i: tmp_path / f"s{i}" / "results.json" for i in (1, 2, 3)}
    # the shards, in any order and one of them gzipped, give the whole run's rows
    assert run(gz, shard[1], shard[2], "--out", tmp_path / "m") == 0
    assert "3 of 3 images from shards [1, 2, 3] of 3 (all)" in capsys.readouterr().out
    merged = json.loads((tmp_path / "m" / "results.json").read_text())
    assert values(merged) == values(whole)
    for a, b in zip(merged["summary"], whole["summary"], strict=True):
        assert (a["method"], a["transform"], a["n"]) == (b["method"], b["transform"], b["n"])
        assert a["disruption_db"] == pytest.approx(b["disruption_db"])
    assert merged["settings"]["shards"]["missing"] == [] and "partial" not in merged["settings"]
    assert merged["settings"]["images"] == 3
    assert merged["settings"]["command"].endswith(f"--out {tmp_path / 'm'}")

    # some of the shards are a sample of the run, in its order, and say so
    assert run(shard[3], shard[1], "--out", tmp_path / "some") == 0
    assert "2 of 3 images from shards [1, 3] of 3; missing [2]" in capsys.readouterr().out
    some = json.loads((tmp_path / "some" / "results.json").read_text())
    order = list(dict.fromkeys(r["image"] for r in whole["rows"]))
    assert some["settings"]["partial"]["images"] == [order[0], order[2]]
    assert values(some) == values(whole, {order[0], order[2]})
    assert some["settings"]["partial"]["of"] == 3
    table = subprocess.run(
        [sys.executable, str(REPO / "tools" / "purification_table.py"), str(tmp_path / "some" /
         "results.json"), "--out", str(tmp_path / "some.png")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "Partial: 2 of the 3 images: 2 of 3 shards" in table.stdout  # --split all

    # what is not finished shards of one run is refused, and nothing is written
    refused = {
        "shard 1/3 is given twice": [shard[1], shard[1]],
        "not a shard": [tmp_path / "whole" / "results.json"],
        "already a merge of shards [1, 2, 3]": [tmp_path / "m" / "results.json"],
        "holds only part of a run": [tmp_path / "some" / "results.json"],
    }
    assert _short_run(model, tmp_path / "half", "--shard", "2/2") == 0
    refused["one of 3 shards"] = [shard[1], tmp_path / "half" / "results.json"]
    assert _short_run(model, tmp_path / "fewer", "--shard", "2/3", "--limit", "2") == 0
    refused["settings differ in limit, selection"] = [shard[1], tmp_path / "fewer/results.json"]
    other = json.loads(shard[2].read_text())
    other["settings"]["models"] = {"model": "0" * 64}  # a model retrained to the same path
    (tmp_path / "other.json").write_text(json.dumps(other))
    refused["settings differ in models"] = [shard[1], tmp_path / "other.json"]
    other["settings"]["models"] = s1["settings"]["models"]
    other["settings"]["images"] = 2
    (tmp_path / "cut.json").write_text(json.dumps(other))
    refused["holds 2 images; shard 2/3 of 3 holds 1"] = [tmp_path / "cut.json"]
    (tmp_path / "broken.json.gz").write_bytes(gz.read_bytes()[:40])
    refused["not a readable results.json"] = [tmp_path / "broken.json.gz"]
    for said, inputs in refused.items():
        assert run(*inputs, "--out", tmp_path / "x") == 2, said
        assert said in capsys.readouterr().err
    assert not (tmp_path / "x").exists()

    # a shard run where the data lies elsewhere (another machine) joins the others: the
    # selection's digest, not the folder's path, says that they are one run
    moved = json.loads(shard[2].read_text())
    here = moved["settings"]["data"][0]
    moved["settings"]["data"] = ["/elsewhere/data/objects"]
    for r in moved["rows"]:
        r["image"] = r["image"].replace(here, "/elsewhere/data/objects")
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    assert run(shard[1], tmp_path / "moved.json", shard[3], "--out", tmp_path / "mv") == 0
    mv = json.loads((tmp_path / "mv" / "results.json").read_text())
    assert "partial" not in mv["settings"] and mv["settings"]["images"] == 3
    assert mv["settings"]["shards"]["data"][1] == ["/elsewhere/data/objects"]
    # more shards than images: the shard that would hold none is not missing
    for i in (1, 2, 3):
        doc = json.loads(shard[i].read_text())
        doc["settings"]["shard"] = [i, 4]
        (tmp_path / f"q{i}.json").write_text(json.dumps(doc))
    capsys.readouterr()
    assert run(*(tmp_path / f"q{i}.json" for i in (1, 2, 3)), "--out", tmp_path / "q") == 0
    q = json.loads((tmp_path / "q" / "results.json").read_text())
    assert q["settings"]["shards"]["missing"] == [] and "partial" not in q["settings"]


def test_a_malformed_shard_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "x", "--method", "sign", "--out", str(tmp_path), "--shard", "3/2"])
    assert "shard 3/2: I must be 1 to N" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "x", "--method", "sign", "--out", str(tmp_path), "--shard", "1/0"])
    assert "shard 1/0: N must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "x", "--method", "sign", "--out", str(tmp_path), "--shard", "half"])
    assert "a shard is I/N with whole numbers" in capsys.readouterr().err


@needs_weights
def test_evaluate_skips_unreadable_files_ignores_its_own_folder_and_resumes_from_anywhere(
    model, tmp_path, capsys, monkeypatch
):
    """A file that cannot be read is skipped, said and listed, and the run goes on; the
    run's --out inside the data folder is not read as images (its examples would change
    the image list and refuse the resume); a resume from another working folder finds the
    images measured already by their absolute paths."""
    import fastprotect.eval.run as run

    data = tmp_path / "data" / "objects"
    data.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(_rgb(48, 40, seed=i)).save(data / f"img{i}.png")
    (data / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    out = data / "res"

    def ev(root, *extra):
        return main([
            "evaluate", str(root), "--method", f"mop:{model}", "--method", "sign",
            "--out", str(out), "--size", "32", "--split", "all", "--transforms", "clean",
            "--examples", "1", *extra,
        ])  # fmt: skip

    crop_rows = run._crop_rows
    measured = []

    def stop_at_the_second(x, image, *args):
        if measured:
            raise KeyboardInterrupt
        measured.append(image)
        return crop_rows(x, image, *args)

    monkeypatch.setattr(run, "_crop_rows", stop_at_the_second)
    monkeypatch.chdir(tmp_path / "data")
    with pytest.raises(KeyboardInterrupt):
        ev("objects")  # a relative path
    assert any((out / "examples").rglob("*.png"))  # written inside the data folder
    monkeypatch.setattr(run, "_crop_rows", crop_rows)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert ev(data, "--resume") == 0  # the absolute path, from elsewhere
    err = capsys.readouterr().err
    assert "1 of 4 images already measured" in err
    assert f"warning: {data / 'zz.png'}: not a readable image" in err
    doc = json.loads((out / "results.json").read_text())
    assert doc["settings"]["images"] == 3
    assert [f["image"] for f in doc["settings"]["skipped_files"]] == [str(data / "zz.png")]
    assert {r["image"] for r in doc["rows"]} == {str(data / f"img{i}.png") for i in range(3)}


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_report_refuses_view_mode_runs_and_runs_without_clean():
    report = _load_report()
    view = {"settings": {"views": [512, 1024], "transforms": ["clean"]}}
    assert "a view-mode run (--view 512 1024)" in report.unreadable(view)
    assert "tools/purification_table.py" in report.unreadable(view)
    no_clean = {"settings": {"views": [], "transforms": ["jpeg75"]}}
    assert "no 'clean' transform" in report.unreadable(no_clean)
    assert report.unreadable({"settings": {"views": [], "transforms": ["clean"]}}) is None


def test_report_renders_unmeasured_disruption_and_odd_folder_names():
    """A run without a decoder has no disruption; domains are folder names, which may hold
    markdown's and HTML's special characters."""
    report = _load_report()
    settings = {
        "methods": ["mop", "pgd2"],
        "transforms": ["clean"],
        "images": 1,
        "split": "all",
        "val_fraction": 0.2,
        "size": 64,
        "eval_encoder": "taef2",
        "decoder": False,
        "lpips": False,
        "reference_eta": 8 / 255,
        "strength_map": "off",
    }
    summary = [
        {
            "method": m,
            "transform": "clean",
            "domain": d,
            "n": 1,
            "psnr": 33.0,
            "ssim": 0.9,
            "lpips": None,
            "latent_pull": pull,
            "disruption_db": None,
            "seconds": 0.1,
        }
        for m, pull in (("mop", 0.5), ("pgd2", 0.4))
        for d in ("all", "<b>x&y|z")
    ]
    page = report.render({"settings": settings, "summary": summary}, "x.json", "cmd")
    assert "- not judged: disruption at least 95% of PGD's (not measured)" in page
    assert "- not met: latent pull no worse than PGD (0.500 vs 0.400)" in page
    assert "&lt;b&gt;x&amp;y\\|z (n=1)" in page and "<b>" not in page
    assert report._image("grid of my art (v2)", "grid my art (v2).jpg") == (
        "![grid of my art (v2)](grid%20my%20art%20%28v2%29.jpg)"
    )


def test_report_grid_takes_a_dollar_in_a_file_name_literally(tmp_path):
    report = _load_report()
    image = tmp_path / "examples" / "art" / "poster_$5_to_$10"
    image.mkdir(parents=True)
    for name in ("original", "original_recon", "mop", "mop_recon"):
        Image.fromarray(_rgb(16, 16)).save(image / f"{name}.png")
    (grid,) = report.plot_grids(tmp_path / "examples", ["mop"], tmp_path / "results")
    assert grid.name == "results_grid_art.jpg" and grid.stat().st_size > 1000
    method = "v2$\\alpha_$"  # a method's name, as --method NAME=mop:FILE gives it
    row = {"method": method, "transform": "clean", "domain": "all", "psnr": 33.0}
    row |= {"psnr_std": 0.1, "disruption_db": 4.0, "disruption_db_std": 0.2}
    doc = {"settings": {"methods": [method]}, "summary": [row]}
    report.plot_disruption_psnr(doc, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_a_leftover_results_file_stops_evaluate_before_it_measures(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.csv").write_text("left from an earlier run\n")
    code = main(["evaluate", str(tmp_path), "--method", "sign", "--out", str(tmp_path / "out")])
    assert code == 2
    assert f"{tmp_path / 'out' / 'results.csv'} exists; choose another --out" in (
        capsys.readouterr().err
    )


@needs_data
@needs_weights
def test_an_attack_cache_gives_the_same_rows_without_attacking_again(
    view_model, tmp_path, capsys, monkeypatch
):
    import fastprotect.eval.run as run

    monkeypatch.chdir(tmp_path)
    cache = Path("cache")  # relative: the settings record it absolute

    def ev(out, pgd="pgd:2", extra=()):
        code = main([
            "evaluate", str(DATA / "objects"), "--method", f"mop:{view_model}",
            "--method", pgd, "--method", "pgdu:2", "--method", "sign", "--method", "resized",
            "--out", str(tmp_path / out), "--split", "all", "--per-domain", "1",
            "--max-side", "96", "--view", "48", "--strength", "jnd", "--transforms", "clean",
            "jpeg75", "--attack-cache", str(cache), *extra,
        ])  # fmt: skip
        assert code == 0
        return json.loads((tmp_path / out / "results.json").read_text())

    def counts(doc):
        c = doc["settings"]["attack_cache"]
        assert c["folder"] == str(tmp_path / "cache")
        return c["reused"], c["computed"]

    def measured(doc):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in doc["rows"]]

    def attack_seconds(doc):
        return [(r["method"], r["seconds"]) for r in doc["rows"] if "pgd" in r["method"]]

    first = ev("a")
    assert counts(first) == (0, 2)
    err = capsys.readouterr().err
    assert "unreadable" not in err and "cannot write" not in err  # a miss is silent
    entries = sorted(cache.glob("*/*.pt"))
    assert len(entries) == 2  # 1 image x 2 attacks

    def no_attack(*a, **k):
        raise AssertionError("attacked although the cache holds the result")

    with monkeypatch.context() as m:
        m.setattr(run, "pgd", no_attack)
        m.setattr(run, "pgd_untargeted", no_attack)
        again = ev("b")
    assert counts(again) == (2, 0)
    # every row equal to the last digit; the attacks' seconds are their own, as computed
    assert measured(again) == measured(first)
    assert attack_seconds(again) == attack_seconds(first)

    # a damaged entry is attacked again, with a warning, and replaced
    entries[0].write_bytes(b"not a tensor")
    capsys.readouterr()
    mended = ev("c")
    assert "unreadable" in capsys.readouterr().err
    assert counts(mended) == (1, 1)
    assert measured(mended) == measured(first)
    assert min(torch.load(entries[0], weights_only=True)["x_hat"].shape[-2:]) == 48  # the view

    # another step count for one attack, another budget for both: attacked again
    assert counts(ev("steps", pgd="pgd:3")) == (1, 1)
    assert counts(ev("eta", extra=["--eta", "0.02"])) == (0, 2)

    # a file where the cache should be: refused before any image is measured
    (tmp_path / "file").write_text("x")
    assert main([
        "evaluate", str(DATA / "objects"), "--method", f"mop:{view_model}", "--method", "pgdu:2",
        "--out", str(tmp_path / "e"), "--split", "all", "--per-domain", "1", "--view", "48",
        "--attack-cache", str(tmp_path / "file"),
    ]) == 2  # fmt: skip
    assert "attack cache" in capsys.readouterr().err

    # an installation without the attacks' source: refused with the reason
    import fastprotect.eval.cache as cache_mod

    monkeypatch.setattr(cache_mod, "_CODE", None)
    assert main([
        "evaluate", str(DATA / "objects"), "--method", f"mop:{view_model}", "--method", "pgdu:2",
        "--out", str(tmp_path / "f"), "--split", "all", "--per-domain", "1", "--view", "48",
        "--attack-cache", str(cache),
    ]) == 2  # fmt: skip
    assert "has none" in capsys.readouterr().err and not (tmp_path / "f" / "results.json").exists()


def test_an_attack_cache_entry_is_named_by_what_the_attack_is_given_and_its_code(tmp_path):
    from fastprotect.eval.cache import AttackCache

    cache = AttackCache(tmp_path)
    spec = {"kind": "pgd", "steps": 50, "eta": 8 / 255, "step_size": 1 / 255}
    x, y = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)

    def name(spec=spec, encoder="e1", uses_target=True, x=x, y=y, code=""):
        return cache.wrap(lambda a, b: a, spec, encoder, uses_target, code=code).path(x, y)

    base = name()
    assert name() == base  # deterministic
    assert name(spec={**spec, "steps": 51}) != base
    assert name(spec={**spec, "eta": 4 / 255}) != base
    assert name(spec={**spec, "step_size": 2 / 255}) != base
    assert name(encoder="e2") != base
    assert name(code="def run(x, y): ...") != base  # the code binding the attack to its encoder
    x2 = x.clone()
    x2[0, 0, 0, 0] += 1e-7  # one pixel, far below 8 bits
    assert name(x=x2) != base
    assert name(x=x.double()) != base
    assert name(y=torch.rand(1, 3, 8, 8)) != base  # a targeted attack: the target counts
    untargeted = name(uses_target=False)
    assert name(uses_target=False, y=torch.rand(1, 3, 8, 8)) == untargeted


def test_an_attack_cache_entry_is_named_by_the_code_the_libraries_and_the_encoders_weights(
    tmp_path, monkeypatch
):
    import fastprotect.eval.cache as cache_mod
    from fastprotect.encoders import TinyAutoencoderEncoder
    from fastprotect.eval.run import _encoder_id

    spec = {"kind": "pgdu", "steps": 2, "eta": 8 / 255, "step_size": 1 / 255}
    x = torch.rand(1, 3, 8, 8)

    def name(encoder="e"):
        cache = cache_mod.AttackCache(tmp_path)
        return cache.wrap(lambda a, b: a, spec, encoder, False).path(x, x)

    base = name()
    assert cache_mod._CODE is not None and len(cache_mod._CODE) == 64  # read at import
    with monkeypatch.context() as m:
        m.setattr(cache_mod, "_CODE", "0" * 64)  # other attack or encoder source
        assert name() != base
    with monkeypatch.context() as m:
        versions = {**cache_mod._library_versions(), "torch": "0.0.0"}
        m.setattr(cache_mod, "_library_versions", lambda: versions)
        assert name() != base
    assert name() == base

    # the encoder: its weights, not only its class, tell two apart
    torch.manual_seed(0)
    enc = TinyAutoencoderEncoder(pretrained=False)
    first = _encoder_id(enc)
    assert _encoder_id(enc) == first and "TinyAutoencoderEncoder" in first
    with torch.no_grad():
        next(enc.parameters()).view(-1)[0] += 1e-3
    assert _encoder_id(enc) != first
    assert name(_encoder_id(enc)) != name(first)


def test_evaluate_refuses_an_attack_kept_in_the_cache_without_its_encoder(tmp_path):
    from fastprotect.eval.run import EvaluationError, Method, evaluate

    spec = {"kind": "pgdu", "steps": 2, "eta": 8 / 255, "step_size": 1 / 255}
    loose = Method("pgdu2", lambda x, y: x, attack=spec)  # no attacked encoder given
    (tmp_path / "images").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "a.png")
    with pytest.raises(EvaluationError, match="encoder it runs on"):
        evaluate(
            [tmp_path / "images"], methods=[loose], reference=None, split="all",
            cache=tmp_path / "cache",
        )  # fmt: skip


@pytest.mark.parametrize(
    "error", [OSError(28, "No space left on device"), RuntimeError("failed writing file")]
)
def test_an_attack_cache_that_cannot_be_written_or_read_costs_the_reuse_not_the_run(
    tmp_path, capsys, monkeypatch, error
):
    import fastprotect.eval.cache as cache_mod

    cache = cache_mod.AttackCache(tmp_path)
    spec = {"kind": "pgdu", "steps": 2, "eta": 8 / 255, "step_size": 1 / 255}
    calls = []

    def attack(x, y):
        calls.append(1)
        return x + 0.01

    x, y = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    wrapped = cache.wrap(attack, spec, "enc", uses_target=False)

    def full_disk(*a, **k):
        raise error

    with monkeypatch.context() as m:
        m.setattr(cache_mod, "atomic_output", full_disk)
        for _ in range(2):
            assert torch.equal(wrapped(x, y), x + 0.01)  # the result all the same
    err = capsys.readouterr().err
    assert err.count("cannot write to the attack cache") == 1  # warned once
    assert str(error) in err
    assert len(calls) == 2 and cache.computed == 2 and not list(tmp_path.glob("*/*.pt"))

    # an entry that loads but holds non-finite values or negative seconds: attacked again
    path = wrapped.path(x, y)
    for bad in (
        {"x_hat": torch.full_like(x, float("nan")), "seconds": 1.0},
        {"x_hat": x, "seconds": -1.0},
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(bad, path)
        assert torch.equal(wrapped(x, y), x + 0.01)
        assert "unreadable" in capsys.readouterr().err
    assert len(calls) == 4 and cache.hits == 0
    assert torch.equal(wrapped(x, y), x + 0.01) and cache.hits == 1 and len(calls) == 4

    # a non-finite result is handed on but not kept (a later run would refuse it)
    nan = cache.wrap(lambda a, b: a * float("nan"), {**spec, "steps": 3}, "enc", False)
    assert torch.isnan(nan(x, y)).all() and not nan.path(x, y).exists()

    # an installation without the attacks' source cannot name entries: refused at once
    monkeypatch.setattr(cache_mod, "_CODE", None)
    with pytest.raises(OSError, match="source code"):
        cache_mod.AttackCache(tmp_path)
