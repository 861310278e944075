"""tools/flat_crops.py, tools/plot_curves.py, tools/paired.py and tools/image_sizes.py: the
figures and numbers the docs show."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import REPO

spec = importlib.util.spec_from_file_location("flat_crops", REPO / "tools" / "flat_crops.py")
flat_crops = importlib.util.module_from_spec(spec)
spec.loader.exec_module(flat_crops)

_spec = importlib.util.spec_from_file_location(
    "purification_table", REPO / "tools" / "purification_table.py"
)
PURIFICATION_TABLE = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(PURIFICATION_TABLE)


def _save(arr: np.ndarray, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8)).save(path)


def _original() -> np.ndarray:
    rng = np.random.default_rng(0)
    original = rng.random((120, 200, 3)).astype(np.float32)
    original[40:104, 120:184] = 0.6  # the flat patch (64 px)
    return original


def _examples(tmp_path):
    original = _original()
    folder = tmp_path / "ex" / "faces" / "portrait"
    _save(original, folder / "original.png")
    _save(original + 8 / 255, folder / "shipped.png")
    small = np.asarray(Image.fromarray((original * 255).astype(np.uint8)).resize((100, 60)))
    _save(small / 255, folder / "pgd.png")  # published at a smaller view
    return tmp_path / "ex", original


def test_the_flattest_window_is_found():
    assert flat_crops.flattest_window(_original(), 64) == (40, 120)


def test_sheet_has_a_column_per_method_and_crops_at_each_images_own_scale(tmp_path, capsys):
    examples, _ = _examples(tmp_path)
    out = tmp_path / "sheet.png"
    assert flat_crops.main([str(examples), "--methods", "shipped", "pgd", "--crop", "64",
                            "--amplify", "4", "--out", str(out)]) == 0  # fmt: skip
    sheet = np.asarray(Image.open(out))
    assert sheet.shape[1] == 3 * (64 + 4)  # original + 2 methods
    assert sheet.shape[0] == 2 * (64 + flat_crops.LABEL_HEIGHT + 6)  # crops + differences
    tile = sheet[flat_crops.LABEL_HEIGHT : flat_crops.LABEL_HEIGHT + 64, 68 : 68 + 64]
    assert np.all(tile == 153 + 8)  # shipped: the flat patch (0.6) plus 8 levels, unresampled
    assert "64x64 at (120, 40) of 200x120" in capsys.readouterr().out
    # never overwrites
    assert flat_crops.main([str(examples), "--methods", "shipped", "--out", str(out)]) == 2


def test_a_method_published_larger_than_the_original_gets_a_wider_column(tmp_path):
    examples, original = _examples(tmp_path)
    big = np.asarray(Image.fromarray((original * 255).astype(np.uint8)).resize((300, 180)))
    _save(big / 255, examples / "faces" / "portrait" / "big.png")  # a larger view (1.5x)
    out = tmp_path / "sheet.png"
    assert flat_crops.main([str(examples), "--methods", "shipped", "big", "--crop", "64",
                            "--amplify", "4", "--out", str(out)]) == 0  # fmt: skip
    sheet = np.asarray(Image.open(out))
    assert sheet.shape[1] == 3 * (96 + 4)  # every column as wide as the 96-px crop of big
    assert sheet.shape[0] == 2 * (96 + flat_crops.LABEL_HEIGHT + 6)  # in every row
    top = flat_crops.LABEL_HEIGHT
    tile = sheet[top : top + 96, 2 * 100 : 2 * 100 + 96]
    # the whole 1.5x crop of the flat patch (its edge pixels blend with the resize)
    assert np.abs(tile[2:-2, 2:-2].astype(int) - 153).max() <= 1


def test_a_missing_method_image_is_a_clear_error(tmp_path, capsys):
    examples, _ = _examples(tmp_path)
    code = flat_crops.main([str(examples), "--methods", "nope", "--out", str(tmp_path / "x.png")])
    assert code == 2 and "nope.png" in capsys.readouterr().err


@pytest.mark.parametrize("side", [121, 500])
def test_a_crop_larger_than_the_image_is_a_clear_error(tmp_path, capsys, side):
    examples, _ = _examples(tmp_path)
    args = [
        str(examples),
        "--methods",
        "shipped",
        "--crop",
        str(side),
        "--out",
        str(tmp_path / "x.png"),
    ]
    assert flat_crops.main(args) == 2 and "smaller than" in capsys.readouterr().err


def test_plot_curves_reads_a_csv_log_and_prints_first_and_last(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("plot_curves", REPO / "tools" / "plot_curves.py")
    plot_curves = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot_curves)
    log = tmp_path / "metrics.csv"
    rows = ["epoch,step,train/loss,val/latent_pull,val/psnr"]
    rows += [f"0,{s},{1 - s / 100},," for s in range(0, 100, 10)]
    rows += ["0,99,,0.7,35.0", "1,199,,0.6,34.5"]
    log.write_text("\n".join(rows) + "\n")
    out = tmp_path / "curves.png"
    assert plot_curves.main([str(log), "--out", str(out), "--smooth", "1"]) == 0
    text = capsys.readouterr().out
    assert "train/loss: 1.0000 at step 0 -> 0.1000 at step 90" in text
    assert "val/latent_pull: 0.7000 (step 99), 0.6000 (step 199)" in text
    assert Image.open(out).size[0] > 0
    assert plot_curves.main([str(log), "--out", str(out)]) == 2  # never overwrites
    capsys.readouterr()
    other = tmp_path / "other.png"
    assert plot_curves.main([str(log), "--out", str(other), "--val", "val/psnr_db"]) == 2
    assert "has no val/psnr_db (val metrics: val/latent_pull, val/psnr)" in capsys.readouterr().err
    assert plot_curves.main([str(log), "--out", str(other), "--smooth", "0"]) == 2
    assert plot_curves.main([str(tmp_path / "no.csv"), "--out", str(other)]) == 2
    assert "no such file" in capsys.readouterr().err and not other.exists()
    # a run without validation (a K sweep's): the training panel alone
    log.write_text("\n".join(r.rsplit(",", 2)[0] for r in rows[:11]) + "\n")
    assert plot_curves.main([str(log), "--out", str(other)]) == 0 and other.is_file()


def test_k_sweep_derives_a_config_from_any_logger_setting():
    spec = importlib.util.spec_from_file_location("k_sweep", REPO / "tools" / "k_sweep.py")
    k_sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(k_sweep)
    import yaml

    for name in ("tiny.yaml", "quick.yaml", "taef2.yaml", "taef2_v2.yaml"):
        base = yaml.safe_load((REPO / "configs" / name).read_text())
        cfg = k_sweep.derived_config(base, 4, 10, Path("/tmp/k4"), None)
        assert cfg["model"]["groups"] == 4 and cfg["trainer"]["default_root_dir"] == "/tmp/k4"


def test_paired_comparison_pairs_by_image(tmp_path):
    import json
    import subprocess
    import sys

    rows, summary = [], []
    values = {"none": (0.0, 0.0), "a": (1.0, 3.0), "b": (1.5, 2.9)}  # per image: img0, img1
    for m, (v0, v1) in values.items():
        for i, v in enumerate((v0, v1)):
            rows.append(
                {
                    "method": m,
                    "transform": "clean",
                    "view": 512,
                    "image": f"img{i}",
                    "disruption_db": v,
                }
            )
        summary.append(
            {
                "method": m,
                "transform": "clean",
                "domain": "all",
                "view": 512,
                "psnr": 30.0,
                "lf_psnr": 40.0,
            }
        )
    doc = {
        "settings": {"methods": ["a", "b"], "transforms": ["clean"]},
        "rows": rows,
        "summary": summary,
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    tool = [sys.executable, str(REPO / "tools" / "paired.py"), str(path)]
    out = subprocess.run([*tool, "a", "b"], capture_output=True, text=True, check=True).stdout
    # b - a per image: +0.5 and -0.1; mean +0.2, population sd 0.3, higher on 1 of 2
    assert "clean view 512: unprotected 0.00 | a 2.00 | b 2.20 | b - a +0.20 dB " in out
    assert "(sd 0.30; higher on 1 of 2 images)" in out
    bad = subprocess.run([*tool, "a", "c"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no method 'c'" in bad.stderr
    # method B from a second run of the same images: its rows replace the first file's
    other = {
        "settings": {"methods": ["b"], "transforms": ["clean"]},
        "rows": [
            dict(r, disruption_db=r["disruption_db"] + 1.0) for r in rows if r["method"] == "b"
        ],
        "summary": [dict(e, psnr=31.0) for e in summary if e["method"] == "b"],
    }
    other_path = tmp_path / "other.json"
    other_path.write_text(json.dumps(other))
    cmd = [*tool, "a", "b", "--b-from", str(other_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert "| b 3.20 | b - a +1.20 dB (sd 0.30; higher on 2 of 2 images)" in out
    assert "b view 512: PSNR 31.00 dB" in out
    # the same method name in both runs (as "shipped" is): B keeps its own label
    same = {
        "settings": {"methods": ["a"], "transforms": ["clean"]},
        "rows": [
            dict(r, disruption_db=r["disruption_db"] + 1.0) for r in rows if r["method"] == "a"
        ],
        "summary": [e for e in summary if e["method"] == "a"],
    }
    same_path = tmp_path / "same.json"
    same_path.write_text(json.dumps(same))
    cmd_same = [*tool, "a", "a", "--b-from", str(same_path)]
    out = subprocess.run(cmd_same, capture_output=True, text=True, check=True).stdout
    assert f"| a ({same_path}) 3.00 | a ({same_path}) - a +1.00 dB (sd 0.00; higher on 2" in out
    # B measured at another view only: nothing pairs, and that is an error, not silence
    for r in same["rows"]:
        r["view"] = 1024
    same_path.write_text(json.dumps(same))
    bad = subprocess.run(cmd_same, capture_output=True, text=True)
    assert bad.returncode == 2 and "nothing to pair" in bad.stderr
    # ... unless asked to pair across views: the same model at view 1024 against 512
    out = subprocess.run(
        [*cmd_same, "--b-view-as", "512"], capture_output=True, text=True, check=True
    ).stdout
    assert "- a +1.00 dB (sd 0.00; higher on 2 of 2 images)" in out
    bad = subprocess.run([*tool, "a", "b", "--b-view-as", "512"], capture_output=True, text=True)
    assert bad.returncode == 2 and "needs --b-from" in bad.stderr
    other["rows"] = other["rows"][:1]  # one image missing: an error, not a smaller mean
    other_path.write_text(json.dumps(other))
    bad = subprocess.run(cmd, capture_output=True, text=True)
    assert bad.returncode == 2 and "no 'b' row for img1" in bad.stderr
    # a run of B scored otherwise (another crop size, another autoencoder) pairs nothing
    other["settings"]["size"] = 96
    other_path.write_text(json.dumps(other))
    bad = subprocess.run(cmd, capture_output=True, text=True)
    assert bad.returncode == 2 and "settings differ in size" in bad.stderr
    # the unprotected image's PSNR is infinite, resized's not measured: said, no crash
    for e in summary:
        if e["method"] == "none":
            e["psnr"], e["lf_psnr"] = None, None
    doc["settings"]["methods"] = ["none", "a", "b"]
    path.write_text(json.dumps(doc))
    out = subprocess.run([*tool, "none", "a"], capture_output=True, text=True, check=True).stdout
    assert "none view 512: PSNR not measured, low-frequency PSNR not measured" in out


def test_image_sizes_reports_the_publish_factor_per_domain(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("image_sizes", REPO / "tools" / "image_sizes.py")
    image_sizes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(image_sizes)
    for name, (w, h) in {"a.png": (1024, 2048), "b.png": (300, 256), "c.png": (512, 768)}.items():
        (tmp_path / "faces").mkdir(exist_ok=True)
        Image.new("RGB", (w, h)).save(tmp_path / "faces" / name)
    assert image_sizes.main([str(tmp_path / "faces"), "--split", "all", "--view", "256"]) == 0
    # shorter sides 1024, 256, 512 at a 256 view: factors 4, 1, 2
    assert "| faces | 3 | 2.00 | 1.00 | 4.00 |" in capsys.readouterr().out
    assert image_sizes.main([str(tmp_path / "faces"), "--split", "all", "--min-side", "512"]) == 0
    listed = capsys.readouterr().out.split()
    assert sorted(listed) == [str(tmp_path / "faces" / n) for n in ("a.png", "c.png")]
    argv = [str(tmp_path / "faces"), "--split", "all", "--min-side", "512", "--first", "1"]
    assert image_sizes.main(argv) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "faces" / "a.png")]


def _purification_doc(methods: dict[str, tuple[str, dict[str, float]]], images=("a", "b")):
    """A results.json of a view-mode run: method -> (published, transform -> dB)."""
    transforms = list(next(iter(methods.values()))[1])
    return {
        "settings": {"methods": list(methods), "transforms": transforms, "command": "x",
                     "images": len(images), "eval_encoder": "taef2"},
        "summary": [
            {"method": m, "transform": t, "domain": "all", "disruption_db": d, "latent_pull": 1.0}
            for m, (_, by) in methods.items() for t, d in by.items()
        ],
        "rows": [
            {"image": i, "method": m, "transform": t, "published": pub, "disruption_db": d}
            for i in images for m, (pub, by) in methods.items() for t, d in by.items()
        ],
    }  # fmt: skip


def test_purification_table_measures_view_methods_against_the_resized_reference():
    doc = _purification_doc({
        "none": ("native", {"clean": 0.0, "gnoise": 3.0}),
        "shipped": ("native", {"clean": 3.5, "gnoise": 5.0}),
        "pgdu50": ("view", {"clean": 4.5, "gnoise": 6.5}),
    })  # fmt: skip
    # without the reference, every margin is over the unprotected row
    assert "| gnoise | +2.00 | +3.50 |" in PURIFICATION_TABLE.tables(doc)
    other = _purification_doc({
        "none": ("native", {"clean": 0.0, "gnoise": 3.0}),
        "resized": ("view", {"clean": 0.0, "gnoise": 4.0}),
    })  # fmt: skip
    PURIFICATION_TABLE.merge(doc, other)
    table = PURIFICATION_TABLE.tables(doc)
    row = "| gnoise | 3.00 | 5.00 (143 %) / 1.000 | 6.50 (144 %) / 1.000 | 4.00 (n/a) / 1.000 |"
    assert row in table
    assert "over `resized`" in table
    # PGD (published at the view) over resized, the shipped model over none
    assert "| gnoise | +2.00 | +2.50 | +1.00 |" in table


def test_purification_table_merge_refuses_other_images_or_missing_transforms():
    doc = _purification_doc({"none": ("native", {"clean": 0.0, "jpeg": 1.0})})
    other = _purification_doc({"none": ("native", {"clean": 0.0, "jpeg": 1.0})}, images=("a",))
    with pytest.raises(SystemExit, match="images differ"):
        PURIFICATION_TABLE.merge(doc, other)
    other = _purification_doc({"none": ("native", {"clean": 0.0})})
    with pytest.raises(SystemExit, match="transforms missing: \\['jpeg'\\]"):
        PURIFICATION_TABLE.merge(doc, other)


def _per_image_doc():
    """Three images, two domains; per image the dB of none, shipped (native), pgdu50 and
    resized (both at the view) after clean and jpeg."""
    dbs = {  # image -> method -> (clean, jpeg)
        "a": {"none": (0, 1), "shipped": (4, 4), "pgdu50": (6, 5), "resized": (0, 2)},
        "b": {"none": (0, 1), "shipped": (3, 2), "pgdu50": (5, 2.5), "resized": (0, 2)},
        "c": {"none": (0, 0), "shipped": (2, 0.5), "pgdu50": (3, 3), "resized": (0, 0)},
    }
    domain = {"a": "faces", "b": "faces", "c": "cartoon"}
    published = {"none": "native", "shipped": "native", "pgdu50": "view", "resized": "view"}
    rows = [
        {"image": i, "domain": domain[i], "method": m, "transform": t, "published": published[m],
         "disruption_db": float(v[k])}
        for i, by in dbs.items() for m, v in by.items() for k, t in enumerate(("clean", "jpeg"))
    ]  # fmt: skip
    summary = []
    for dom in ("all", "faces", "cartoon"):
        for m in published:
            for t in ("clean", "jpeg"):
                sel = [r for r in rows if r["method"] == m and r["transform"] == t
                       and dom in ("all", r["domain"])]  # fmt: skip
                summary.append({
                    "method": m, "transform": t, "domain": dom, "n": len(sel),
                    "disruption_db": sum(r["disruption_db"] for r in sel) / len(sel),
                    "latent_pull": 1.0, "psnr": 30.0 + len(m), "ssim": 0.5, "lf_psnr": 40.0,
                })  # fmt: skip
    return {
        "settings": {"methods": list(published), "transforms": ["clean", "jpeg"],
                     "command": "x", "images": 3, "eval_encoder": "taef2"},
        "summary": summary, "rows": rows,
    }  # fmt: skip


def _paired_tool():
    spec = importlib.util.spec_from_file_location("paired", REPO / "tools" / "paired.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_per_image_doc(tmp_path, doc):
    import json

    for r in doc["rows"]:
        r["view"] = 512
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_paired_margins_measure_each_method_over_its_reference(tmp_path, capsys):
    paired = _paired_tool()
    path = _write_per_image_doc(tmp_path, _per_image_doc())
    assert paired.main([path, "pgdu50", "shipped", "--margins"]) == 0
    out = capsys.readouterr().out
    assert "Margins (dB), paired per image: pgdu50 over resized, shipped over none" in out
    # after jpeg: pgdu50 over resized 3, 0.5, 3; shipped over none 3, 1, 0.5; shipped minus
    # pgdu50 0, +0.5, -2.5: mean -0.67, population sd 1.31, higher on one image (b)
    assert (
        "jpeg view 512: pgdu50 +2.17 | shipped +1.50 | shipped - pgdu50 -0.67 dB (sd 1.31; "
        "higher on 1 of 3 images) | shipped's margin above 0 on 3, largest +3.00"
    ) in out
    # clean: 6, 5, 3 against 4, 3, 2
    assert "clean view 512: pgdu50 +4.67 | shipped +3.00 | shipped - pgdu50 -1.67 dB" in out
    # a run of two views pairs each view on its own: view 1024 holds the same rows + 1 dB
    import json

    doc = json.loads(Path(path).read_text())
    doc["rows"] += [
        dict(r, view=1024, disruption_db=r["disruption_db"] + (r["method"] == "shipped"))
        for r in doc["rows"]
    ]
    two = tmp_path / "two_views.json"
    two.write_text(json.dumps(doc))
    assert paired.main([str(two), "pgdu50", "shipped", "--margins"]) == 0
    out2 = capsys.readouterr().out
    assert "jpeg view 512: pgdu50 +2.17 | shipped +1.50 | shipped - pgdu50 -0.67 dB" in out2
    assert "jpeg view 1024: pgdu50 +2.17 | shipped +2.50 | shipped - pgdu50 +0.33 dB" in out2
    # without --margins the same pairs compare the disruption itself
    assert paired.main([path, "pgdu50", "shipped"]) == 0
    assert "jpeg view 512: unprotected 0.67 | pgdu50 3.50 | shipped 2.17 |" in (
        capsys.readouterr().out
    )


def test_paired_margins_without_resized_and_the_refusals(tmp_path, capsys):
    paired = _paired_tool()
    doc = _per_image_doc()
    doc["settings"]["methods"].remove("resized")
    doc["rows"] = [r for r in doc["rows"] if r["method"] != "resized"]
    # pgdu50 now over none: jpeg margins 4, 1.5, 3; shipped's 3, 1 and, made exactly 0
    # here, 0 for image c, which does not count as above zero
    for r in doc["rows"]:
        if (r["image"], r["method"], r["transform"]) == ("c", "shipped", "jpeg"):
            r["disruption_db"] = 0.0
    path = _write_per_image_doc(tmp_path, doc)
    assert paired.main([path, "pgdu50", "shipped", "--margins"]) == 0
    out = capsys.readouterr().out
    assert "pgdu50 over none, shipped over none" in out
    assert "higher on 0 of 3 images) | shipped's margin above 0 on 2, largest +3.00" in out
    assert "jpeg view 512: pgdu50 +2.83 | shipped +1.33 | shipped - pgdu50 -1.50 dB" in out
    for argv, message in (
        ([path, "pgdu50", "pgd100", "--margins"], "no method 'pgd100'"),
        ([path, "none", "shipped", "--margins"], "'none' is the reference"),
        ([path, "pgdu50", "shipped", "--margins", "--b-from", path], "does not take --b-from"),
    ):
        assert paired.main(argv) == 2
        assert message in capsys.readouterr().err
    doc["rows"][0]["disruption_db"] = float("nan")  # image a, none, clean
    path = _write_per_image_doc(tmp_path, doc)
    for margins in ([], ["--margins"]):  # a NaN is an error, not a NaN mean
        assert paired.main([path, "pgdu50", "shipped", *margins]) == 2
        assert "clean view 512: no finite disruption of 'none' for a" in capsys.readouterr().err


def test_purification_table_refuses_a_run_of_several_views():
    doc = _per_image_doc()
    doc["rows"][0]["view"] = 1024  # the others have none: two views
    with pytest.raises(SystemExit, match="reads a run of one view"):
        PURIFICATION_TABLE.by_domain(doc, ["clean"])
    with pytest.raises(SystemExit, match="the table reads a run of one view"):
        PURIFICATION_TABLE._check(doc)
    one, other = _per_image_doc(), _per_image_doc()
    for r in other["rows"]:
        r["view"] = 1024
    with pytest.raises(SystemExit, match="--merge needs a run of the same view"):
        PURIFICATION_TABLE.merge(one, other)


def test_purification_table_needs_a_clean_transform_and_a_decoder():
    doc = _per_image_doc()
    PURIFICATION_TABLE._check(doc)  # the test run itself is readable
    doc["settings"]["transforms"] = [t for t in doc["settings"]["transforms"] if t != "clean"]
    with pytest.raises(SystemExit, match="no 'clean' transform"):
        PURIFICATION_TABLE._check(doc)
    doc = _per_image_doc()
    doc["settings"]["decoder"] = False
    with pytest.raises(SystemExit, match="measured no decode disruption"):
        PURIFICATION_TABLE._check(doc)


def test_purification_table_by_domain_and_visibility():
    doc = _per_image_doc()
    table = PURIFICATION_TABLE.by_domain(doc, ["clean", "jpeg"])
    # faces: shipped clean (4+3)/2, jpeg (4+2)/2; pgdu50 (6+5)/2, (5+2.5)/2
    assert "| faces (2) | 0.00 / 1.00 | 3.50 / 3.00 | 5.50 / 3.75 | 0.00 / 2.00 |" in table
    assert "| cartoon (1) | 0.00 / 0.00 | 2.00 / 0.50 | 3.00 / 3.00 | 0.00 / 0.00 |" in table
    with pytest.raises(SystemExit, match="lacks: \\['jpeg75'\\]"):
        PURIFICATION_TABLE.by_domain(doc, ["jpeg75"])
    # the visibility table: one row per method but none, from the clean summary; a method
    # without PSNR (an unchanged image) is left out, and so is the table for a run without it
    for e in doc["summary"]:
        if e["method"] == "resized":
            e["psnr"] = None
    table = PURIFICATION_TABLE.tables(doc)
    assert "| shipped | 37.00 | 0.500 | 40.00 |" in table
    assert "| pgdu50 | 36.00 | 0.500 | 40.00 |" in table
    assert "| none |" not in table and "| resized | 37" not in table
    for e in doc["summary"]:
        e.pop("psnr")
    assert "Visibility" not in PURIFICATION_TABLE.tables(doc)
