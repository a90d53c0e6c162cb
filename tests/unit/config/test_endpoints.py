"""``server.listen``: Twisted endpoint descriptions, checked without the global reactor."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server_core.config.endpoints import endpoint_problem, looks_like_endpoint, with_backlog
from tests.unit.config.support import assert_error_at_marked_line


@pytest.mark.parametrize(
    "description", ["tcp:1135:interface=127.0.0.1", "tcp:0", "tcp6:0", "unix:/tmp/s.sock"]
)
def test_valid_descriptions_have_no_problem(description: str) -> None:
    assert looks_like_endpoint(description)
    assert endpoint_problem(description) is None


@pytest.mark.parametrize(
    ("description", "needle"),
    [
        ("tcp:notaport", "notaport"),
        ("nosuchtype:1", "Unknown endpoint type"),
        ("tcp:1:bogus=1", "bogus"),
    ],
)
def test_invalid_descriptions_say_why(description: str, needle: str) -> None:
    problem = endpoint_problem(description)
    assert problem is not None and needle in problem


@pytest.mark.parametrize("value", [1135, None, "1135", ["tcp:1"]])
def test_only_strings_with_a_type_look_like_endpoints(value: object) -> None:
    assert not looks_like_endpoint(value)


def test_checking_listen_does_not_install_the_global_reactor() -> None:
    # twistd picks the reactor after reading the configuration: reading it must not
    # install the default one first.
    code = (
        "import sys\n"
        "from server_core.config import parse_config\n"
        "cfg = parse_config('server: {listen: \"tcp:0:interface=127.0.0.1\"}', env={})\n"
        "assert cfg.server.listen == 'tcp:0:interface=127.0.0.1'\n"
        "print('twisted.internet.reactor' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


# -- errors, each with its line ----------------------------------------------------

ERRORS: list[tuple[str, str]] = [
    ("server:\n  listen: 1135  # <-\n", "server.listen: expected a Twisted endpoint string"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[m for _, m in ERRORS])
def test_error_names_file_and_line(base: Path, text: str, message: str) -> None:
    assert_error_at_marked_line(base, text, message)


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("tcp:1135:interface=127.0.0.1", "tcp:1135:interface=127.0.0.1:backlog=1024"),
        ("tcp6:1135:interface=\\:\\:1", "tcp6:1135:interface=\\:\\:1:backlog=1024"),
        ("tcp:1135:backlog=5", "tcp:1135:backlog=5"),  # the operator's own wins
        ("unix:/run/sc.sock", "unix:/run/sc.sock"),  # not TCP: left as it is
    ],
)
def test_tcp_listeners_get_a_backlog_a_burst_fits_in(description: str, expected: str) -> None:
    assert with_backlog(description) == expected
    assert endpoint_problem(with_backlog(description)) is None
