"""The commands as the main CLI runs them: user errors are one line and exit status 2."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from difforge.cli import cli


def test_profile_of_a_missing_artifact_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["profile", str(tmp_path / "nope"), "-q"])
    assert result.exit_code == 2
    assert "artifact not found" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bad_options_are_user_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    group = cli
    bad = runner.invoke(group, ["profile", str(tmp_path), "--sweep", "x", "-q"])
    assert bad.exit_code == 2 and "--sweep" in bad.output
    bad = runner.invoke(group, ["bench", "--resolutions", "0", "-q"])
    assert bad.exit_code == 2 and "positive" in bad.output


def test_bench_settings_are_checked_before_any_export() -> None:
    runner = CliRunner()
    group = cli
    for args, needle in (
        (["--runs", "0"], "--runs must be at least 1, got 0"),
        (["--threads", "-1"], "--threads must be 0 (all cores) or more, got -1"),
        (["--rows", "eager,tensorrt"], "--rows: unknown tensorrt (known: eager,"),
        (["--calib-samples", "1"], "--calib-samples must be at least 2"),
        (["--batch", "0"], "--batch must be at least 1, got 0"),
        (["--block", "a b"], "--block must be a plain name"),
        (["--preset", "tiny-sd", "--model", "."], "give --preset or --model, not both"),
        (["--model", "."], "not a diffusers pipeline folder (no model_index.json)"),
    ):
        bad = runner.invoke(group, ["bench", *args, "-q"])
        assert bad.exit_code == 2, bad.output
        assert needle in bad.output and len(bad.output.strip().splitlines()) == 1


def test_bench_out_is_checked_before_any_export(tmp_path: Path) -> None:
    doc = tmp_path / "perf.md"
    doc.write_text("# Perf\n<!-- bench:end -->\nolder <!-- bench:begin -->\n")
    runner = CliRunner()
    for out, needle in ((doc, "unbalanced"), (tmp_path, "is a folder")):
        bad = runner.invoke(cli, ["bench", "--out", str(out), "-q"])
        assert bad.exit_code == 2, bad.output
        assert needle in bad.output and len(bad.output.strip().splitlines()) == 1
