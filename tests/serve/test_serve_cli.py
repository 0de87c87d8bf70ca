"""`peftlab serve` from the terminal: the API key from a file or the environment, never from argv; a warning when exposed."""

from __future__ import annotations

import pytest

from peftlab.cli import main
from peftlab.serve import launch
from tests.serve.conftest import exchange

KEY = "s3cret-key-0123"


@pytest.fixture
def requests_while_serving(monkeypatch):
    """Instead of waiting for Ctrl-C, `serve` sends GET /v1/models with each Authorization value in `checks`, notes
    each status in `seen`, and returns."""
    checks: list[str | None] = []
    seen: list[int] = []

    def ask_then_stop(server):
        for authorization in checks:
            header = f"Authorization: {authorization}\r\n" if authorization else ""
            seen.append(exchange(server.port, f"GET /v1/models HTTP/1.1\r\nHost: t\r\n{header}\r\n".encode())[0])

    monkeypatch.setattr(launch, "wait_until_interrupted", ask_then_stop)
    return checks, seen


def serve_argv(tiny_llama: str, *flags: str) -> list[str]:
    return ["serve", "--model", tiny_llama, "--dtype", "fp32", "--port", "0", *flags]


def test_the_key_comes_from_a_file(tiny_llama, tmp_path, requests_while_serving, capsys, monkeypatch):
    monkeypatch.delenv("PEFTLAB_API_KEY", raising=False)
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    checks, seen = requests_while_serving
    checks += [None, "Bearer wrong", f"Bearer {KEY}"]
    assert main(serve_argv(tiny_llama, "--api-key-file", str(key_file))) == 0
    assert seen == [401, 401, 200]
    out = capsys.readouterr().out
    assert "API key required" in out and "warning" not in out and KEY not in out


def test_the_key_comes_from_the_environment(tiny_llama, requests_while_serving, monkeypatch):
    monkeypatch.setenv("PEFTLAB_API_KEY", KEY)
    checks, seen = requests_while_serving
    checks += [None, f"Bearer {KEY}"]
    assert main(serve_argv(tiny_llama)) == 0
    assert seen == [401, 200]


def test_a_world_readable_key_file_is_warned_about(tiny_llama, tmp_path, requests_while_serving, capsys):
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    key_file.chmod(0o644)
    assert main(serve_argv(tiny_llama, "--api-key-file", str(key_file))) == 0
    assert f"chmod 600 {key_file}" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["serve", "--api-key", KEY], ["serve", f"--api-key={KEY}"], ["serve", "--api-key"]])
def test_a_key_on_the_command_line_is_refused_in_one_line(argv, capsys):
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert "--api-key-file" in error and "$PEFTLAB_API_KEY" in error and len(error.splitlines()) == 1
    assert KEY not in error


@pytest.mark.parametrize("content, problem", [("", "empty"), ("two words", "spaces")])
def test_a_bad_key_file_is_refused_in_one_line(content, problem, tmp_path, capsys):
    key_file = tmp_path / "key"
    key_file.write_text(content)
    assert main(["serve", "--api-key-file", str(key_file)]) == 2
    assert problem in capsys.readouterr().err
    assert main(["serve", "--api-key-file", str(tmp_path / "missing")]) == 2
    assert "cannot read it" in capsys.readouterr().err


def test_serving_beyond_loopback_without_a_key_warns_in_one_line(tiny_llama, requests_while_serving, capsys, monkeypatch):
    monkeypatch.delenv("PEFTLAB_API_KEY", raising=False)
    checks, seen = requests_while_serving
    checks.append(None)
    assert main(serve_argv(tiny_llama, "--host", "0.0.0.0")) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "0.0.0.0" in warnings[0] and "--api-key-file" in warnings[0], warnings
    assert seen == [200]
    assert main(serve_argv(tiny_llama, "--host", "127.0.0.1")) == 0
    assert "warning" not in capsys.readouterr().out


def test_limits_that_contradict_each_other_are_refused(capsys):
    assert main(["serve", "--max-prompts", "100", "--max-waiting", "50"]) == 2
    error = capsys.readouterr().err
    assert "--max-prompts" in error and "--max-waiting" in error
    assert main(["serve", "--idle-timeout", "0"]) == 2
    assert "--idle-timeout must be more than 0" in capsys.readouterr().err
