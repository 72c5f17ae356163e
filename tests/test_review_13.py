"""Review of issue 13 (black box): what a user or a script can do to ``generate`` that the issue's
"nothing silent" rules out, found after the issue was implemented."""

from __future__ import annotations

import pandas as pd
import pytest

from generate.__main__ import main as generate_main
from tests.test_generate import references, run_args, sd15_rows, study_inputs, tiny  # noqa: F401


def one_line_error(capsys, argv, expected: str) -> None:
    assert generate_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1, err


def test_resuming_with_other_image_settings_is_refused(tmp_path, tiny, study_inputs, capsys):  # noqa: F811
    """A second run into the same folder with another --codec-qp (or pixel quantizer, prompt,
    size, steps …) would keep the finished images and make the rest another way: one set, two
    recipes, and a manifest that only shows it column by column."""
    plan, captions = study_inputs
    rows = sd15_rows(plan)
    rows = rows[rows["mode"].isin(["Image", "Pixel"])]
    rows.to_csv(tmp_path / "plan.csv", index=False)
    out = tmp_path / "out"
    args = run_args(tmp_path / "plan.csv", out, captions, tiny, "--workers", "1")
    assert generate_main(args) == 0
    finished = sorted(p.name for p in (out / "images").glob("*.png"))
    (out / "images" / finished[0]).unlink()  # a crash before this image was written
    capsys.readouterr()
    for extra, named in (
        (["--codec-qp", "40"], "--codec-qp"),
        (["--pixel-bits", "8"], "--pixel-bits"),
        (["--image-prompt", "script"], "--image-prompt"),
        (["--steps", "5"], "--steps"),
        (["--target-bpp", "0.2"], "--target-bpp"),
    ):
        one_line_error(capsys, [*args, *extra], named)
    assert not (out / "images" / finished[0]).exists()  # nothing made the other way
    assert generate_main(args) == 0  # the same settings finish it
    assert sorted(p.name for p in (out / "images").glob("*.png")) == finished
    assert generate_main([*args, "--batch-size", "2"]) == 0  # speed settings may change


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-0.1"])
def test_a_target_bpp_that_is_no_rate_is_refused(tmp_path, study_inputs, value, capsys):  # noqa: F811
    plan, captions = study_inputs
    argv = ["run", str(plan), "--out", str(tmp_path / "o"), "--captions", str(captions),
            "--target-bpp", value]  # fmt: skip
    one_line_error(capsys, argv, "--target-bpp")
    assert not (tmp_path / "o").exists()


def test_ladder_refuses_a_bpp_that_is_no_rate(tmp_path, capsys):
    refs = references(tmp_path / "refs", ["NSI_a.png"], size=(96, 64))
    argv = ["ladder", "--references", str(refs), "--out", str(tmp_path / "o"), "--codecs", "avc",
            "--bpp", "0.05,nan"]  # fmt: skip
    one_line_error(capsys, argv, "--bpp")


def test_plan_options_that_would_be_silently_unused_are_refused(tmp_path, capsys):
    refs = references(tmp_path / "refs", ["NSI_a.png", "SCI_b.png", "AIGI_c.png"])
    base = ["plan", "--references", str(refs), "--out", str(tmp_path / "p.csv")]
    # the benchmark takes every reference: a --count would quietly be ignored
    one_line_error(capsys, [*base, "--preset", "benchmark", "--count", "2"], "--count")
    one_line_error(capsys, [*base, "--preset", "benchmark", "--count", "-4"], "--count")
    # an empty list is no sweep: refused, not a plan without one
    one_line_error(capsys, [*base, "--count", "3", "--sweep-qp", ","], "--sweep-qp")
    one_line_error(capsys, [*base, "--count", "3", "--models", ","], "--models")
    assert not (tmp_path / "p.csv").exists()
    assert generate_main([*base, "--preset", "benchmark", "--models", "SD15"]) == 0
    assert len(pd.read_csv(tmp_path / "p.csv")) == 3 * 4


@pytest.mark.parametrize(
    ("command", "extra", "expected"),
    [
        ("x {input} {output} --cfg {guidance}", "", "takes {guidance} but sets no guidance"),
        ("x {input} {output}", "guidance = 4.0\n", "guidance 4.0 but its command"),
        ("x {input} {output} {promt}", "", "unknown placeholder {promt}"),
        ("x {input} {output", "", "cannot read its command"),
        ("x {output}", "", "needs {input} and {output}"),
    ],
)
def test_a_restoration_command_that_cannot_be_honoured_is_refused_up_front(
    tmp_path, capsys, command, extra, expected
):  # fmt: skip
    """An external command's placeholders are checked when the models TOML is read: a
    ``{guidance}`` without a ``guidance`` would pass an empty argument (and record none), a
    ``guidance`` the command never receives would be silently unused, and a misspelt
    placeholder stopped the run midway with a traceback."""
    config = tmp_path / "m.toml"
    config.write_text(f"[DiffBIR]\ncommand = {command!r}\n{extra}".replace("'", '"'))
    refs = references(tmp_path / "refs", ["NSI_a.png"])
    argv = ["plan", "--references", str(refs), "--out", str(tmp_path / "p.csv"), "--preset",
            "benchmark", "--models", "DiffBIR", "--models-config", str(config)]  # fmt: skip
    one_line_error(capsys, argv, expected)


def test_a_finished_image_that_no_longer_matches_its_plan_row_is_refused(
    tmp_path,
    tiny,  # noqa: F811
    study_inputs,  # noqa: F811
    capsys,
):
    """Resuming after the plan was edited (another strength or seed, or a reference of the same
    name from another folder) skipped the finished image by its id alone: the set then held an
    image the plan no longer describes."""
    plan, captions = study_inputs
    rows = sd15_rows(plan)
    rows = rows[rows["mode"] == "Text"]
    rows.to_csv(tmp_path / "plan.csv", index=False)
    out = tmp_path / "out"
    args = run_args(tmp_path / "plan.csv", out, captions, tiny, "--workers", "1")
    assert generate_main(args) == 0
    capsys.readouterr()
    edited = rows.copy()
    edited.loc[edited.index[0], "seed"] = 12345
    edited.to_csv(tmp_path / "plan.csv", index=False)
    one_line_error(capsys, args, f"{edited['id'].iloc[0]}: finished with seed")
    rows.to_csv(tmp_path / "plan.csv", index=False)
    assert generate_main(args) == 0  # the plan it was made from resumes


def test_plan_help_does_not_misstate_the_content_mix_and_count_defaults(capsys):
    """``--no-content-mix … (default: True)`` read as "uniform sampling by default", and
    ``--count`` must not claim a default of None (it is 100 under the study preset)."""
    with pytest.raises(SystemExit):
        generate_main(["plan", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    mix = text[text.index("--no-content-mix study") :].split("--sweep-qp")[0]
    count = text[text.index("--count COUNT study") :].split("--no-content-mix")[0]
    assert "(default: True)" not in mix and "(default: None)" not in count
    assert "default 100" in count


def test_a_folder_without_finished_images_takes_the_new_settings(tmp_path):
    """A first run that stopped before any image (a missing caption, say) does not pin its
    settings: the next run records its own."""
    from generate.run import RunError, RunSettings, check_settings

    out = tmp_path / "out"
    (out / "meta").mkdir(parents=True)
    check_settings(out, RunSettings(steps=40))
    check_settings(out, RunSettings(steps=20))  # nothing made yet
    (out / "meta" / "x.json").write_text("{}")
    check_settings(out, RunSettings(steps=20, batch_size=4, workers=3))
    with pytest.raises(RunError, match="--steps 20, this run asks for --steps 40"):
        check_settings(out, RunSettings(steps=40))


def test_a_new_restoration_model_named_by_its_command_alone(tmp_path, capsys):
    """The TOML's own error says a new model needs 'weights' (or 'command'); one with a command
    alone raised a TypeError traceback. It is an external restoration model (Full and Image)."""
    config = tmp_path / "m.toml"
    config.write_text('[MyRestorer]\ncommand = "x {input} {output}"\n')
    refs = references(tmp_path / "refs", ["NSI_a.png"])
    out = tmp_path / "p.csv"
    argv = ["plan", "--references", str(refs), "--out", str(out), "--preset", "benchmark",
            "--models", "MyRestorer", "--models-config", str(config)]  # fmt: skip
    assert generate_main(argv) == 0
    assert sorted(pd.read_csv(out)["mode"]) == ["Full", "Image"]
    config.write_text('[MyRestorer]\ncommand = "x {input} {output}"\nfamily = "sd"\n')
    one_line_error(capsys, argv, "[MyRestorer] has a command but no 'weights'")
