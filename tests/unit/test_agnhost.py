"""The lab's agnhost stand-in (lab/agnhost.py) and its row in the node agent's image table:
the e2e suite's web app (``agnhost serve-hostname --http --port N``) must mean here what it
means in Kubernetes' e2e image."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import agnhost
from lab.nodeagent import images
from lab.nodeagent.images import Resolved, Toolbox

REPO = Path(__file__).resolve().parents[2]
AGNHOST = f"{images.AGNHOST_REPOSITORY}:2.53"  # the e2e suite's web app image (tests/e2e/kit.py)
BOX = Toolbox(python="/venv/bin/python", bin_dir="/venv/bin", repo="/repo")


def test_the_e2e_image_runs_the_stand_in_with_the_pods_args() -> None:
    r = images.resolve(AGNHOST, None, ["serve-hostname", "--http", "--port", "8080"], BOX)
    assert isinstance(r, Resolved), r
    assert r.argv == ("/venv/bin/python", "-m", "lab.agnhost", "serve-hostname", "--http",
                      "--port", "8080")
    assert dict(r.env)["PYTHONPATH"] == "/repo"
    r = images.resolve(AGNHOST, ["/agnhost"], ["serve-hostname"], BOX)
    assert isinstance(r, Resolved) and r.argv[:3] == ("/venv/bin/python", "-m", "lab.agnhost")


@pytest.mark.parametrize(("argv", "want"), [
    ([], {"http": True, "tcp": False, "udp": False, "port": 9376, "close": False}),
    (["--http", "--port", "8080"], {"http": True, "port": 8080}),
    (["-port=81", "--close"], {"port": 81, "close": True}),
    (["--http=false", "--tcp"], {"http": False, "tcp": True}),
])
def test_flags_follow_go_syntax(argv: list[str], want: dict[str, object]) -> None:
    opts = agnhost.parse(argv)
    assert {k: opts[k] for k in want} == want


@pytest.mark.parametrize("argv", [["--tcp"], ["--nope"], ["--port"], ["--http=maybe"]])
def test_bad_flags_are_refused(argv: list[str]) -> None:
    with pytest.raises(ValueError):
        agnhost.parse(argv)


def test_unimplemented_subcommands_fail_naming_what_exists(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert agnhost.main(["netexec", "--http-port=8080"]) == 2
    err = capsys.readouterr().err
    assert "netexec" in err and "serve-hostname" in err


def test_serve_hostname_answers_its_host_name_over_http() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "lab.agnhost", "serve-hostname", "--http",
                             "--port", str(port)], cwd=REPO, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10  # bounded: the server starts in well under a second
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/anything")
                resp = conn.getresponse()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert resp.status == 200
        assert resp.read().decode() == socket.gethostname()
        conn.close()
    finally:
        proc.terminate()
        proc.wait(5)
