"""The command line as a user meets it: ``portico`` itself (help, version, mistakes) and every
component's ``--help`` (each flag explained, its default shown, nothing meant only for
Portico's developers)."""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from portico import cli

ROOT = Path(__file__).resolve().parents[2]


def _builders() -> dict[str, Callable[[], argparse.ArgumentParser]]:
    from ingress.main import build_parser as ingress
    from lb.controller_main import build_parser as controller
    from speaker.main import build_parser as speaker

    return {"controller": controller, "speaker": speaker, "ingress": ingress}


COMPONENTS = ("controller", "speaker", "ingress")
# Words that only make sense to Portico's developers (whole words, any case).
INTERNAL = re.compile(r"\b(emulators?|tests?|todo|xxx|fixme|hacks?|hacky|lab-notes)\b|/tmp\b|``",
                      re.IGNORECASE)
# Flags whose default comes from the pod's environment (the Downward API in the chart).
ENV_DEFAULTS = {
    ("controller", "--lease-namespace"): "POD_NAMESPACE",
    ("controller", "--identity"): "POD_NAME",
    ("speaker", "--node-name"): "NODE_NAME",
    ("speaker", "--namespace"): "POD_NAMESPACE",
}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "portico", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def _entries(help_text: str) -> dict[str, str]:
    """Each option's entry in the options section of a --help, whitespace collapsed, by every
    option string it lists (``--leader-elect, --no-leader-elect`` gives two keys)."""
    section = help_text.split("\noptions:\n", 1)[1]
    entries: dict[str, str] = {}
    for chunk in re.split(r"\n(?=  -)", section):
        text = " ".join(chunk.split())
        for opt in re.findall(r"(?:^|, )(-{1,2}[a-z0-9-]+)", chunk.splitlines()[0].strip()):
            entries[opt] = text
    return entries


# ---- portico itself ----------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_command_on_stdout(flag: str) -> None:
    proc = _run(flag)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.startswith("usage: portico")
    for name, (summary, _) in cli.COMMANDS.items():
        line = next(ln for ln in proc.stdout.splitlines() if ln.split()[:1] == [name])
        assert summary in line, line
    assert "portico COMMAND --help" in proc.stdout
    assert "--version" in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80


def test_commands_are_the_components() -> None:
    # The components, then the one-shot tools (not long-running).
    assert tuple(cli.COMMANDS) == (*COMPONENTS, "migrate")
    for summary, _ in cli.COMMANDS.values():
        assert summary and "\n" not in summary and not INTERNAL.search(summary)


def test_version() -> None:
    proc = _run("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"portico {importlib.metadata.version('portico-lb')}\n"


def test_version_unknown_when_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(cli.metadata, "version", missing)
    assert cli.version() == "unknown"


def test_no_command_is_a_usage_error() -> None:
    proc = _run()
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("usage: portico")
    assert all(name in proc.stderr for name in COMPONENTS)


@pytest.mark.parametrize(("args", "message"), [
    (["frobnicate"], "portico: unknown command 'frobnicate'"),
    (["frobnicate", "--help"], "portico: unknown command 'frobnicate'"),
    (["--frobnicate"], "portico: unknown option '--frobnicate'"),
])
def test_unknown_command_is_named(args: list[str], message: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert message in err
    assert all(f"  {name}  " in err for name in COMPONENTS)


def test_dispatch_imports_are_plain_and_lazy() -> None:
    """A layering checker must see which module each command runs: ``from X import main``
    inside the command's function, never importlib or __import__."""
    tree = ast.parse((ROOT / "portico" / "cli.py").read_text())
    top = {n.module for n in tree.body if isinstance(n, ast.ImportFrom)}
    assert not top & {"lb.controller_main", "speaker.main", "ingress.main"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            assert "import_module" not in name and name != "__import__", name
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    for name, module in (("_controller", "lb.controller_main"), ("_speaker", "speaker.main"),
                         ("_ingress", "ingress.main")):
        imports = [n for n in ast.walk(functions[name]) if isinstance(n, ast.ImportFrom)]
        assert [(n.module, [a.name for a in n.names]) for n in imports] == [(module, ["main"])]


def test_controller_does_not_import_the_speaker_or_ingress() -> None:
    code = ("import sys\nfrom portico.cli import main\n"
            "try:\n    main(['controller', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'scapy', 'exabgp', 'speaker', 'ingress'}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"


# ---- each component's --help -------------------------------------------------------------


@pytest.mark.parametrize("component", COMPONENTS)
def test_component_help_through_portico(component: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main([component, "--help"])
    assert exit_.value.code == 0
    out, _ = capsys.readouterr()
    assert out.startswith(f"usage: portico {component} ")
    assert out == _builders()[component]().format_help()


@pytest.mark.parametrize("component", COMPONENTS)
def test_component_help_describes_the_component(component: str) -> None:
    parser = _builders()[component]()
    assert parser.description and len(parser.description.split()) >= 10
    # A default derived from where Portico is installed (the exabgp next to the interpreter)
    # names that place; a checkout under /tmp is not internal wording.
    text = parser.format_help().replace(os.path.dirname(sys.executable), "<bin>")
    assert not INTERNAL.search(text), INTERNAL.search(text)


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_option_is_explained_with_its_default(component: str) -> None:
    parser = _builders()[component]()
    entries = _entries(parser.format_help())
    options = [a for a in parser._actions if a.option_strings]
    assert len(options) > 5
    for action in options:
        flag = action.option_strings[-1]
        assert action.help and action.help.strip(), f"{flag} has no help"
        entry = entries[flag]
        # The text after the flag (and its metavar) says something.
        assert len(entry.split()) > len(action.option_strings) + 2, entry
        if action.default is not None and action.default is not False \
                and action.default is not argparse.SUPPRESS:
            assert str(action.default) in entry.split(flag, 1)[1], f"{flag}: {entry}"
        if action.choices:
            assert "{" + ",".join(map(str, action.choices)) + "}" in entry, entry


@pytest.mark.parametrize(("component", "flag"), sorted(ENV_DEFAULTS))
def test_environment_defaults_say_so(component: str, flag: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    variable = ENV_DEFAULTS[(component, flag)]
    monkeypatch.setenv(variable, "from-the-environment")
    parser = _builders()[component]()
    action = next(a for a in parser._actions if flag in a.option_strings)
    assert action.default == "from-the-environment"
    entry = _entries(parser.format_help())[flag]
    assert f"${variable}" in entry and "from-the-environment" in entry, entry
    monkeypatch.delenv(variable)
    entry = _entries(_builders()[component]().format_help())[flag]
    assert f"${variable}" in entry, entry
