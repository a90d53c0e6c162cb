"""The output log of a child, and the excerpt a client may see."""

from __future__ import annotations

from server_core.process.output import OutputLog, client_safe_lines


def test_client_safe_lines_pick_the_last_error_lines_without_paths() -> None:
    lines = [
        "loading model",
        "error: first",
        "failed to load model '/opt/secret/m.gguf'",
        "Cannot   allocate\tbuffer",
        "C:\\models\\m.gguf: invalid magic",
        "unknown model architecture: 'xyz'",
        "exception: boom",
    ]
    assert client_safe_lines(lines) == [
        "Cannot allocate buffer",
        "unknown model architecture: 'xyz'",
        "exception: boom",
    ]
    assert client_safe_lines(lines, limit=1) == ["exception: boom"]
    assert client_safe_lines(["error " + "x" * 300]) == [("error " + "x" * 300)[:200]]
    assert client_safe_lines(["all good"]) == []


def test_output_log_keeps_the_last_lines_and_feeds_followers() -> None:
    out = OutputLog("m", keep=2)
    seen: list[str] = []

    def broken(line: str) -> None:
        raise RuntimeError(line)

    out.follow(broken)  # a broken follower changes nothing for the others
    out.follow(seen.append)
    for line in ("a", "b", "c"):
        out.add(line)
    out.unfollow(seen.append)
    out.unfollow(seen.append)  # not following any more: ignored
    out.add("d")
    assert seen == ["a", "b", "c"]
    assert out.recent() == ["c", "d"]


def test_output_log_keeps_at_least_one_line() -> None:
    out = OutputLog("m", keep=0)
    out.add("only")
    assert out.recent() == ["only"]
