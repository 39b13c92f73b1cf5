"""Every command that README.md, docs/ and reports/ tell a reader to run names a module or script
that exists and flags that it takes, so the documentation cannot rot.

The commands are read from the Markdown (code blocks and inline code, continuation lines joined);
each program's `--help` is produced in this process (runpy, as `python -m` / `python FILE` would
run it) and every `--flag` of the command must appear in it. The Beam job also takes Beam's own
pipeline options (--runner, --project, ...), which its --help does not list, and the sweep the
training CLI's flags. Running the commands
themselves is the other tests' job (the README's two commands run in CI; the sample pipeline, the
sweep, the report and the export have end-to-end tests).
"""

import contextlib
import functools
import glob
import io
import os
import re
import runpy
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTS = sorted(
    [os.path.join(REPO, "README.md")]
    + glob.glob(os.path.join(REPO, "docs", "*.md"))
    + glob.glob(os.path.join(REPO, "reports", "**", "*.md"), recursive=True)
)
# Written by the programs themselves (sweep.md, ...), which quote the command that made them.
GENERATED = {"sweep.md"}
COMMAND = re.compile(r"python3? (-m [\w.]+|[\w/]+\.py)([^`\n]*)")
NOT_OURS = ("-m pytest", "-m pip", "-m venv")


def _commands():
    """[(document, line number, program, argument text)] of every documented command."""
    found = []
    for path in DOCUMENTS:
        if os.path.basename(path) in GENERATED:
            continue
        with open(path) as f:
            text = f.read()
        # A command continued over lines ends them with a backslash.
        joined = re.sub(r"\s*\\\n\s*", " ", text)
        for number, line in enumerate(joined.splitlines(), 1):
            for match in COMMAND.finditer(line):
                program, arguments = match.group(1), match.group(2)
                if program in NOT_OURS or program.startswith("-m pytest"):
                    continue
                # Not the command: a comment, a diagram's next column, a remark in parentheses.
                arguments = re.split(r" #| {2,}|\(", arguments)[0]
                found.append((os.path.relpath(path, REPO), number, program, arguments))
    return found


COMMANDS = _commands()


@functools.cache
def _help(program: str) -> str:
    """`program --help` as `python -m` or `python FILE` prints it, run in this process."""
    out = io.StringIO()
    argv = sys.argv
    sys.argv = [program, "--help"]
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
            if program.startswith("-m "):
                runpy.run_module(program[3:], run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(os.path.join(REPO, program), run_name="__main__")
    finally:
        sys.argv = argv
    assert stop.value.code in (0, None), f"{program} --help exited with {stop.value.code}"
    return out.getvalue()


@functools.cache
def _beam_options() -> set:
    from apache_beam.options.pipeline_options import PipelineOptions

    return {f"--{name}" for name in PipelineOptions([]).get_all_options()}


def test_the_documents_give_commands_of_every_entry_point():
    programs = {program for _, _, program, _ in COMMANDS}
    assert {
        "-m beam_pipelines.preprocess",
        "-m s3rec_tf.train",
        "-m export.saved_model",
        "-m s3rec_tf.sweep",
        "-m s3rec_tf.report",
        "-m s3rec_tf.study.full_ranking",
    } <= programs, programs


@pytest.mark.parametrize(
    "document, line, program, arguments",
    COMMANDS,
    ids=[f"{d}:{n}" for d, n, _, _ in COMMANDS],
)
def test_a_documented_command_takes_its_flags(document, line, program, arguments):
    if program.endswith(".py"):
        assert os.path.exists(os.path.join(REPO, program)), f"{document}:{line}: no {program}"
    text = _help(program)
    known = set(re.findall(r"--\w+", text))
    if program == "-m beam_pipelines.preprocess":
        known |= _beam_options()
    if program == "-m s3rec_tf.sweep":  # it gives the training CLI's flags to every run
        known |= set(re.findall(r"--\w+", _help("-m s3rec_tf.train")))
    flags = set(re.findall(r"(?<![\w-])--\w+", arguments))
    unknown = sorted(flags - known)
    assert not unknown, f"{document}:{line}: python {program} does not take {unknown}"
    preset = re.search(r"--config[ =](\w+)(?![\w./])", arguments)
    if preset and not preset.group(1).isupper():  # NAME, CONFIG: placeholders
        assert os.path.exists(os.path.join(REPO, "configs", preset.group(1) + ".yaml")), (
            f"{document}:{line}: no preset {preset.group(1)}"
        )


def test_the_readme_reads_in_five_minutes():
    """At most 150 lines, none wider than 100 columns (issue 32's front page)."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) <= 150
    wide = [(number, len(line)) for number, line in enumerate(lines, 1) if len(line) > 100]
    assert wide == []
