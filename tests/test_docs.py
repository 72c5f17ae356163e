"""The README and docs/ cannot drift from the code: every command in their code blocks is parsed by
the command's own argparse parser (options exist, required ones are given, choices are valid),
every option they name exists, the defaults they state are the code's, their TOML and config
blocks load, and the demo's commands run as printed. The parsers are read, not copied, so an
option another change adds is known at once; one renamed or removed fails here."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import io
import re
import runpy
import shlex
import shutil
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CLIS = (
    "generate",
    "annotate",
    "mos.compute",
    "mos.simulate",
    "mos.online_study",
    "train_iqa",
    "train_iqa.validate",
    "train_iqa.leaderboard",
    "compare",
)
"""Every command line of the stages (``python -m NAME``)."""
PACKAGES = ("generate", "annotate", "mos", "train_iqa", "compare", "studydb")
FOREIGN_OPTIONS = {
    "--input": "an external restoration model's own command line (generate/restoration.py)",
    "--output": "the same",
    "--task": "the same",
    "--nproc-per-node": "torchrun's",
}
"""Options that the docs or messages name and that belong to another program."""
SEPARATORS = {"|", "||", "&&", ";", "&"}


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    words: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {shlex.join(self.words)}"


def doc_commands(paths=DOCS) -> list[Command]:
    """Each simple command of the shell blocks, continuation lines joined, comments dropped."""
    commands = []
    for path in paths:
        text = path.read_text()
        for block in re.finditer(r"^```(?:sh|bash|console)\n(.*?)^```", text, re.S | re.M):
            first = text[: block.start(1)].count("\n") + 1
            source = block.group(1).replace("\\\n", " \n")
            for offset, line in enumerate(source.split("\n")):
                lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
                lexer.whitespace_split, lexer.commenters = True, "#"
                words: list[str] = []
                for token in [*lexer, ";"]:
                    if token in SEPARATORS:
                        if words:
                            commands.append(Command(path.name, first + offset, tuple(words)))
                        words = []
                    else:
                        words.append(token)
    return commands


def python_target(words: tuple[str, ...]) -> tuple[str, str, list[str]] | None:
    """('module', NAME, args) for ``python -m NAME …`` (also under torchrun), ('script', PATH,
    args) for ``python PATH.py …``; None for any other program."""
    words = tuple(w for w in words if not re.fullmatch(r"[A-Z_]+=\S*", w))  # VAR=value prefixes
    if not words or Path(words[0]).name not in ("python", "python3", "torchrun"):
        return None
    if "-m" in words:
        at = words.index("-m")
        return "module", words[at + 1], list(words[at + 2 :])
    if words[0] != "torchrun" and len(words) > 1 and words[1].endswith(".py"):
        return "script", words[1], list(words[2:])
    return None


class _Captured(BaseException):
    """Raised by the patched parser with itself, before any work (BaseException: no handler of
    the command's own can swallow it)."""


def cli_parser(kind: str, target: str, monkeypatch, argv=()) -> argparse.ArgumentParser:
    """The parser a command builds: its main runs until it parses, which is stopped there
    (``argv``: the words a main reads before it picks a parser, as ``compare table-a1``)."""

    def capture(self, args=None, namespace=None):
        raise _Captured(self)

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
        patch.setattr(sys, "argv", [target, *argv])
        try:
            if kind == "module":
                runpy.run_module(target, run_name="__main__", alter_sys=False)
            else:
                runpy.run_path(str(ROOT / target), run_name="__main__")
        except _Captured as captured:
            return captured.args[0]
    raise AssertionError(f"{target} ran without parsing a command line")


def parse(parser: argparse.ArgumentParser, args: list[str], capsys) -> str | None:
    """None when the parser accepts ``args`` (``--help`` included), else its error message."""
    method = parser.parse_args if _subcommands(parser) else parser.parse_intermixed_args
    try:
        method(args)
    except SystemExit as stop:
        if stop.code:
            return capsys.readouterr().err.strip().splitlines()[-1]
    capsys.readouterr()
    return None


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def all_parsers(parser: argparse.ArgumentParser, name: str):
    yield name, parser
    for command, sub in _subcommands(parser).items():
        yield from all_parsers(sub, f"{name} {command}")


def dispatched(name: str) -> tuple[str, ...]:
    """The commands a CLI's main picks by its first word before argparse (``COMMANDS`` of its
    ``__main__``, as ``python -m compare table-a1``): each has a parser of its own."""
    spec = importlib.util.find_spec(name)
    module = f"{name}.__main__" if spec.submodule_search_locations else name
    return tuple(getattr(importlib.import_module(module), "COMMANDS", ()))


@pytest.fixture(scope="module")
def parsers():
    with pytest.MonkeyPatch.context() as monkeypatch:
        found = {name: cli_parser("module", name, monkeypatch) for name in CLIS}
        for name in CLIS:
            for command in dispatched(name):
                found[f"{name} {command}"] = cli_parser("module", name, monkeypatch, [command])
        return found


def scripts_with_a_parser() -> list[str]:
    """The bench/ and docs/ scripts with a command line (their options are named in the docs)."""
    return [
        str(path.relative_to(ROOT))
        for folder in ("bench", "docs")
        for path in sorted((ROOT / folder).glob("*.py"))
        if "argparse" in path.read_text()
    ]


@pytest.fixture(scope="module")
def known_options(parsers) -> set[str]:
    every = dict(parsers)
    with pytest.MonkeyPatch.context() as monkeypatch:
        for script in scripts_with_a_parser():
            every[script] = cli_parser("script", script, monkeypatch)
    return {
        option
        for name, parser in every.items()
        for _, each in all_parsers(parser, name)
        for action in each._actions
        for option in action.option_strings
    }


# --- Commands as printed ---------------------------------------------------------------------


def test_the_docs_show_the_commands_of_every_stage():
    shown = {python_target(c.words)[1] for c in doc_commands() if python_target(c.words)}
    assert set(CLIS) - {"mos.online_study"} <= shown
    assert any(c.words[:2] == ("make", "demo") for c in doc_commands())


def test_every_python_command_in_the_docs_parses(monkeypatch, capsys):
    cache: dict[tuple[str, str], argparse.ArgumentParser] = {}
    problems = []
    for command in doc_commands():
        target = python_target(command.words)
        if target is None:
            continue
        kind, name, args = target
        if kind == "script" and not (ROOT / name).is_file():
            problems.append(f"{command}: no such script")
            continue
        first = args[:1] if kind == "module" and args[:1] and args[0] in dispatched(name) else []
        if (kind, name, *first) not in cache:
            cache[kind, name, *first] = cli_parser(kind, name, monkeypatch, first)
        error = parse(cache[kind, name, *first], args[len(first) :], capsys)
        if error:
            problems.append(f"{command}\n    {error}")
    assert not problems, "commands in the docs that their parser refuses:\n" + "\n".join(problems)
    assert len(cache) >= len(CLIS) - 1


def test_every_make_target_in_the_docs_exists():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))
    for command in doc_commands():
        words = [w for w in command.words if not re.fullmatch(r"[A-Z_]+=\S*", w)]
        if words and words[0] == "make":
            assert set(words[1:]) <= targets, f"{command}: no such make target"


def test_a_parser_refusal_is_caught(monkeypatch, capsys):
    """The check can fail: a misspelt option, a missing required one, a choice that is not one."""
    parser = cli_parser("module", "mos.compute", monkeypatch)
    assert parse(parser, ["x.db"], capsys) is None
    assert "--tresh" in parse(parser, ["x.db", "--tresh", "0.5"], capsys)
    assert "invalid choice" in parse(parser, ["x.db", "--scale", "nope"], capsys)
    generate = cli_parser("module", "generate", monkeypatch)
    assert "--out" in parse(generate, ["plan", "--references", "r/"], capsys)
    commands = doc_commands([ROOT / "docs" / "generate.md"])
    assert any(python_target(c.words) == ("module", "generate", ["manifest", "out/study/"])
               for c in commands)  # fmt: skip


def test_every_option_named_in_the_docs_exists(known_options):
    named = {
        option
        for path in DOCS
        for span in re.findall(r"`([^`\n]+)`", path.read_text())
        for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", span)
    }
    assert named - known_options - set(FOREIGN_OPTIONS) == set()


def test_every_option_named_in_a_message_exists(known_options):
    """A message (or help text) that tells the user to pass an option names one that exists."""
    unknown = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
            for token in tokens:
                if token.type != tokenize.STRING and token.type != getattr(
                    tokenize, "FSTRING_MIDDLE", -1
                ):
                    continue
                for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", token.string):
                    if option not in known_options and option not in FOREIGN_OPTIONS:
                        unknown.append(f"{path.relative_to(ROOT)}:{token.start[0]}: {option}")
    assert not unknown, "\n".join(unknown)


# --- Stated defaults -------------------------------------------------------------------------

STATED_DEFAULTS = [
    # (page, phrase it holds, command, subcommand, option, the code's default)
    ("README.md", "| `out/mos/` | `mos.compute` (default `--out`)", "mos.compute", None, "--out",
     Path("out/mos")),
    ("README.md", "| `out/compare/` | `compare` (default `--out`)", "compare", None, "--out",
     Path("out/compare")),
    ("docs/mos.md", "default `out/mos/`", "mos.compute", None, "--out", Path("out/mos")),
    ("docs/mos.md", "`--threshold 0.6`", "mos.compute", None, "--threshold", 0.6),
    ("docs/mos.md", "`--scale sigma3`", "mos.compute", None, "--scale", "sigma3"),
    ("docs/mos.md", "default `--bt500-variant sureal`", "mos.compute", None, "--bt500-variant",
     "sureal"),
    ("docs/compare.md", "default `out/compare/`", "compare", None, "--out", Path("out/compare")),
    ("docs/compare.md", "`--fid-dims 2048`", "compare", None, "--fid-dims", 2048),
    ("docs/compare.md", "`--bd-method pchip`", "compare", None, "--bd-method", "pchip"),
    ("docs/compare.md", "`--clip-model ViT-B-32 --clip-pretrained openai`", "compare", None,
     "--clip-model", "ViT-B-32"),
    ("docs/compare.md", "`--clip-model ViT-B-32 --clip-pretrained openai`", "compare", None,
     "--clip-pretrained", "openai"),
    ("docs/train_iqa.md", "lr 2e-5, 50\n  epochs, batch 8, 80/20 split", "train_iqa", None,
     "--epochs", 50),
    ("docs/train_iqa.md", "lr 2e-5, 50\n  epochs, batch 8, 80/20 split", "train_iqa", None,
     "--batch-size", 8),
    ("docs/train_iqa.md", "lr 2e-5, 50\n  epochs, batch 8, 80/20 split", "train_iqa", None,
     "--lr", 2e-5),
    ("docs/train_iqa.md", "lr 2e-5, 50\n  epochs, batch 8, 80/20 split", "train_iqa", None,
     "--test-fraction", 0.2),
    ("docs/train_iqa.md", "`--size` 384²", "train_iqa", None, "--size", 384),
    ("docs/train_iqa.md", "(`--val-fraction` 0.1", "train_iqa", None, "--val-fraction", 0.1),
    ("docs/generate.md", "`--target-bpp 0.024`", "generate", "run", "--target-bpp", 0.024),
    ("docs/generate.md", "long side 1024 (multiple of 8), 40 steps", "generate", "run", "--size",
     1024),
    ("docs/generate.md", "long side 1024 (multiple of 8), 40 steps", "generate", "run", "--steps",
     40),
    ("docs/generate.md", "`--codec av1` = libsvtav1", "generate", "run", "--codec", "av1"),
    ("docs/generate.md", "one colour per 64 × 64 block\n  (`--pixel-block`", "generate", "run",
     "--pixel-block", 64),
    ("docs/generate.md", "`--pixel-bits`, default 3 bits a channel", "generate", "run",
     "--pixel-bits", 3),
    ("docs/generate.md", "`--caption-words 5/10/20/50`", "generate", "run", "--caption-words", 20),
    ("docs/deployment.md", "open `http://SERVER:5000/`", "annotate", "serve", "--port", 5000),
    ("docs/annotate.md", "(default `instance/`)", "annotate", None, "--instance",
     Path("instance")),
]  # fmt: skip
QC_TABLE = "docs/annotate.md"
"""Where the table of the quality-control rules (``mos.compute --exclude``) lies."""


def _default(parsers, command: str, subcommand: str | None, option: str):
    parser = parsers[command]
    if subcommand:
        parser = _subcommands(parser)[subcommand]
    for action in parser._actions:
        if option in action.option_strings:
            return action.default
    raise AssertionError(f"{command} {subcommand or ''} has no option {option}")


@pytest.mark.parametrize(("page", "phrase", "command", "sub", "option", "value"), STATED_DEFAULTS)
def test_a_default_the_docs_state_is_the_codes(parsers, page, phrase, command, sub, option, value):
    assert phrase in (ROOT / page).read_text(), f"{page} no longer says {phrase!r}"
    assert _default(parsers, command, sub, option) == value


def test_the_quality_control_table_states_mos_computes_defaults(parsers):
    rows = re.findall(r"^\| `(--[a-z-]+)`[^|]*\| ([^|]+) \|", (ROOT / QC_TABLE).read_text(), re.M)
    assert len(rows) >= 6
    for option, stated in rows:
        first = stated.split(",")[0].strip().removesuffix(" s")
        assert float(_default(parsers, "mos.compute", None, option)) == float(first), option


def test_the_toml_and_config_blocks_load(tmp_path):
    from annotate import config as lab_config
    from generate.registry import load_registry

    for path in DOCS:
        text = path.read_text()
        for block in re.findall(r"^```toml\n(.*?)^```", text, re.S | re.M):
            toml = tmp_path / "models.toml"
            toml.write_text(block)
            load_registry(toml)  # raises on an unknown key or a malformed entry
        for block in re.findall(r"^```python\n(.*?)^```", text, re.S | re.M):
            if re.search(r"^(from|import) ", block, re.M):  # an API example: what it imports exists
                compile(block, path.name, "exec")
                for module, imported in re.findall(r"^from (\S+) import (.+)$", block, re.M):
                    found = importlib.import_module(module)
                    missing = [n for n in re.split(r",\s*", imported) if not hasattr(found, n)]
                    assert not missing, f"{path.name}: {module} has no {missing}"
                continue
            names: dict = {}
            exec(block, {}, names)  # the docs' instance/config.py examples: assignments only
            assert set(names) <= set(vars(lab_config)), f"{path.name}: unknown config keys"


# --- --help ----------------------------------------------------------------------------------


def test_help_shows_each_default_once_and_never_none(parsers):
    for cli, parser in parsers.items():
        for name, each in all_parsers(parser, cli):
            text = each.format_help()
            assert "%%" not in text and "(default: None)" not in text, name
            for action in each._actions:
                if action.help is argparse.SUPPRESS or not action.option_strings:
                    continue
                formatter = each._get_formatter()
                formatter.add_argument(action)
                entry = formatter.format_help()
                assert entry.count("(default:") <= 1, f"{name} {action.option_strings}"
                if action.required:
                    assert "(default" not in entry, f"{name} {action.option_strings}"
                elif action.default not in (None, False, "", [], argparse.SUPPRESS):
                    assert "default" in entry, f"{name} {action.option_strings} hides its default"


def test_help_points_to_pages_a_user_can_read(parsers):
    """A --help that says "see the module docstring" sends a user into the source; name a page."""
    for cli, parser in parsers.items():
        for name, each in all_parsers(parser, cli):
            text = " ".join(each.format_help().split())
            assert "docstring" not in text.lower(), name
            for page in re.findall(r"docs/[\w.-]+\.md", text):
                assert (ROOT / page).is_file(), f"{name} names {page}"


def test_help_shows_the_defaults_new_users_asked_for(parsers):
    serve = _subcommands(parsers["annotate"])["serve"].format_help()
    assert "(default: 5000)" in serve and "(default: 127.0.0.1)" in serve
    train = " ".join(parsers["train_iqa"].format_help().split())
    assert "default: 50" in train and "default: 8" in train and "default: 0.2" in train


# --- The demo's commands, run as printed -----------------------------------------------------


def _block_after(page: Path, marker: str) -> list[Command]:
    """The commands of the first shell block that contains ``marker``."""
    commands = doc_commands([page])
    line = next(c.line for c in commands if marker in shlex.join(c.words))
    block = [c for c in commands if abs(c.line - line) <= 4]
    return [c for c in block if python_target(c.words)]


def test_the_readmes_demo_and_own_study_commands_run_as_printed(tmp_path, monkeypatch):
    """`annotate demo --no-serve`, then the README's simulated ratings and MOS of the demo and of
    "your own study" (the demo's images standing in for a user's out/study/), in a fresh working
    folder, each command exactly as the README prints it; the MOS names the images, as the
    README's training step needs. (Training is left to tests/test_whole_pipeline.py: slow.)"""
    from annotate.__main__ import main as annotate_main
    from mos.compute import main as compute_main
    from mos.simulate import main as simulate_main

    mains = {"mos.compute": compute_main, "mos.simulate": simulate_main}
    monkeypatch.chdir(tmp_path)
    assert annotate_main(["demo", "--no-serve"]) == 0
    readme = ROOT / "README.md"
    demo = _block_after(readme, "--manifest instance/demo/study/manifest.csv")
    shutil.copytree(tmp_path / "instance" / "demo" / "study", tmp_path / "out" / "study")
    own = _block_after(readme, "--manifest out/study/manifest.csv")
    assert [python_target(c.words)[1] for c in demo + own] == ["mos.simulate", "mos.compute"] * 2
    for command in demo + own:
        _, name, args = python_target(command.words)
        assert mains[name](args) == 0, str(command)
    mos = pd.read_csv(tmp_path / "out" / "mos" / "mos.csv")
    assert len(mos) == 20 and {"distorted_path", "reference_path", "mode"} <= set(mos.columns)
    assert mos["distorted_path"].map(lambda p: Path(p).is_file()).all()
    assert (tmp_path / "out" / "mos-demo" / "mos.csv").is_file()


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="the sqlite3 shell is not installed")
def test_the_backup_line_works_as_printed(tmp_path):
    """docs/deployment.md's sqlite3 backup, run by the shell in a lab's working folder."""
    import sqlite3
    import subprocess

    line = next(
        line for line in (ROOT / "docs" / "deployment.md").read_text().splitlines()
        if ".backup" in line and line.lstrip().startswith("mkdir")
    )  # fmt: skip
    (tmp_path / "instance").mkdir()
    with sqlite3.connect(tmp_path / "instance" / "ratings.db") as db:
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES (42)")
    subprocess.run(["bash", "-c", line.split("#")[0]], cwd=tmp_path, check=True)
    (copy,) = (tmp_path / "backup").glob("ratings-*.db")
    assert sqlite3.connect(copy).execute("SELECT x FROM t").fetchone() == (42,)
