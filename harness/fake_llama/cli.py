"""``fake-llama-server``: llama-server's command line, parsed, then the process runs.

``parse_args`` and ``main`` live here; ``runner.py`` holds the process itself.
Process behaviour copied from llama-server:

* logs go to **stderr** (llama.cpp's logger writes every level but plain output
  there); nothing is written to stdout;
* the port is bound before the model "loads"; ``/health`` answers 503 meanwhile;
  ``... server is listening on http://HOST:PORT`` is logged once loaded (also for
  ``--port 0``, where it is the only way to learn the port);
* SIGTERM/SIGINT during the load kill the process at once (llama-server installs
  its handler only after loading); afterwards the first one shuts down gracefully
  (exit 0), a second one prints ``Received second interrupt, terminating
  immediately.`` and exits 1;
* a missing model file, a bind failure or a chat template llama-server refuses
  exit 1 with llama-server's messages.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.fake_llama.config import FakeConfig
from harness.fake_llama.faults import Faults, FaultSpecError, parse_faults
from harness.fake_llama.runner import ENV_NEW_PGRP, ENV_PARENT_PID, Runner, log_to_stderr
from harness.fake_llama.templates import TemplateError, resolve_template

__all__ = [
    "ENV_FAULT",
    "ENV_NEW_PGRP",
    "ENV_PARENT_PID",
    "CliOptions",
    "UsageError",
    "main",
    "parse_args",
]

ENV_FAULT = "FAKE_LLAMA_FAULT"

USAGE = """\
usage: fake-llama-server -m FNAME [options]

A fake llama.cpp llama-server for tests (harness.fake_llama). Same flags and HTTP API;
deterministic text; scripted faults. See docs/fake-llama-server.md.

  -m,  --model FNAME          model file (must exist; its content is not read)
       --host HOST            address to listen on (default: 127.0.0.1)
       --port PORT            port (default: 8080; 0 = any free port)
  -a,  --alias NAME           model name in API responses (default: model file name)
  -c,  --ctx-size N           context size, split between slots (default: 4096)
  -np, --parallel N           number of slots (default: 1); extra requests queue
  -n,  --predict N            default token limit (default: -1 = until EOS)
       --api-key KEY          require this API key (comma-separated list allowed)
       --api-key-file FNAME   file with one API key per line
       --embeddings           embeddings only (completion routes answer 501)
       --metrics              enable /metrics
       --slots / --no-slots   enable / disable /slots (default: enabled)
       --props                allow POST /props
       --jinja / --no-jinja   chat template is Jinja text / a built-in name (default: --jinja)
       --chat-template T      chat template text (a built-in name with --no-jinja)
       --chat-template-file F file with the chat template text
       --no-webui, --no-ui    no page at /
  -ngl, --n-gpu-layers N      accepted
       --sse-ping-interval S  seconds of stream silence before a ':' ping (default: 30; <= 0 off)
  -s,  --seed N               seed for generated text and fault randomness (default: 0)
       --fault SPEC           inject faults (repeatable; also env FAKE_LLAMA_FAULT)
  -v,  --verbose              log every request
  -h,  --help                 show this help
       --version              show version

Any other llama-server flag is accepted (a following token that does not start
with '-', or is a negative number, is taken as its value) with a warning.
"""

_VALUE_FLAGS: dict[str, str] = {
    "-m": "model",
    "--model": "model",
    "--host": "host",
    "--port": "port",
    "-a": "alias",
    "--alias": "alias",
    "-c": "ctx_size",
    "--ctx-size": "ctx_size",
    "-np": "parallel",
    "--parallel": "parallel",
    "-n": "n_predict",
    "--predict": "n_predict",
    "--n-predict": "n_predict",
    "--api-key": "api_key",
    "--api-key-file": "api_key_file",
    "-ngl": "n_gpu_layers",
    "--gpu-layers": "n_gpu_layers",
    "--n-gpu-layers": "n_gpu_layers",
    "--sse-ping-interval": "sse_ping_interval",
    "-s": "seed",
    "--seed": "seed",
    "--fault": "fault",
    "--chat-template": "chat_template",
    "--chat-template-file": "chat_template_file",
}

_BOOL_FLAGS: dict[str, tuple[str, bool]] = {
    "--embeddings": ("embeddings", True),
    "--embedding": ("embeddings", True),
    "--metrics": ("metrics", True),
    "--slots": ("slots", True),
    "--no-slots": ("slots", False),
    "--props": ("props", True),
    "--jinja": ("jinja", True),
    "--no-jinja": ("jinja", False),
    "--webui": ("webui", True),
    "--ui": ("webui", True),
    "--no-webui": ("webui", False),
    "--no-ui": ("webui", False),
    "-v": ("verbose", True),
    "--verbose": ("verbose", True),
    "--log-verbose": ("verbose", True),
}

_NEGATIVE_NUMBER = re.compile(r"^-\d+(\.\d+)?$")


class UsageError(Exception):
    """Bad command line; the message is printed and the process exits 1."""


@dataclass
class CliOptions:
    """The parsed command line: llama-server's flags the fake understands."""

    model: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    alias: str | None = None
    ctx_size: int = 4096
    parallel: int = 1
    n_predict: int = -1
    api_keys: list[str] = field(default_factory=list)
    embeddings: bool = False
    metrics: bool = False
    slots: bool = True
    props: bool = False
    jinja: bool = True
    chat_template: str | None = None
    webui: bool = True
    n_gpu_layers: str = "auto"
    sse_ping_interval: float = 30.0
    seed: int = 0
    faults: list[str] = field(default_factory=list)
    verbose: bool = False
    help: bool = False
    version: bool = False
    ignored: list[str] = field(default_factory=list)

    def to_config(self, faults: Faults) -> FakeConfig:
        """The server settings these options ask for, with the merged fault set."""
        return FakeConfig(
            model_path=self.model,
            alias=self.alias,
            host=self.host,
            port=self.port,
            ctx_size=self.ctx_size,
            parallel=self.parallel,
            api_keys=tuple(self.api_keys),
            embeddings=self.embeddings,
            metrics=self.metrics,
            slots_endpoint=self.slots,
            props_endpoint=self.props,
            webui=self.webui,
            jinja=self.jinja,
            chat_template=self.chat_template,
            n_gpu_layers=self.n_gpu_layers,
            sse_ping_interval=self.sse_ping_interval,
            seed=self.seed,
            n_predict=self.n_predict,
            faults=faults,
            verbose=self.verbose,
            extra_args=tuple(self.ignored),
        )


def _int(flag: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UsageError(f'error while handling argument "{flag}": stoi: {value!r}') from None


def _float(flag: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise UsageError(f'error while handling argument "{flag}": stof: {value!r}') from None


def parse_args(argv: Sequence[str]) -> tuple[CliOptions, list[str]]:
    """Parse llama-server style arguments. Returns (options, warnings)."""
    opts = CliOptions()
    warnings: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg, inline = args[i], None
        i += 1
        if arg.startswith("--") and "=" in arg:
            arg, inline = arg.split("=", 1)
        if arg in _VALUE_FLAGS:
            if inline is None:
                if i >= len(args):
                    raise UsageError(f"error: expected value for argument: {arg}")
                inline = args[i]
                i += 1
            _apply(opts, arg, _VALUE_FLAGS[arg], inline)
        elif _switch(opts, arg):
            pass
        elif arg.startswith("-") and len(arg) > 1:
            ignored = [arg if inline is None else f"{arg}={inline}"]
            if inline is None and i < len(args) and _is_value(args[i]):
                ignored.append(args[i])
                i += 1
            opts.ignored.extend(ignored)
            warnings.append(
                f"warn: fake-llama-server ignores llama-server flag: {' '.join(ignored)}"
            )
        else:
            raise UsageError(f"error: invalid argument: {arg}")
    _check_template(opts)
    return opts, warnings


def _switch(opts: CliOptions, arg: str) -> bool:
    """Apply a flag without a value; False if ``arg`` is not one."""
    if arg in ("-h", "--help", "--usage"):
        opts.help = True
    elif arg == "--version":
        opts.version = True
    elif arg in _BOOL_FLAGS:
        name, value = _BOOL_FLAGS[arg]
        setattr(opts, name, value)
    else:
        return False
    return True


def _is_value(token: str) -> bool:
    """Whether the token after an unknown flag is taken as that flag's value."""
    return not token.startswith("-") or _NEGATIVE_NUMBER.match(token) is not None


def _check_template(opts: CliOptions) -> None:
    # llama-server checks the template once every flag is read (so flag order does
    # not matter) and exits 1.
    try:
        resolve_template(opts.chat_template, jinja=opts.jinja)
    except TemplateError as e:
        raise UsageError(str(e)) from None


def _apply(opts: CliOptions, flag: str, name: str, value: str) -> None:
    if name in ("model", "host", "alias", "n_gpu_layers", "chat_template"):
        setattr(opts, name, value)
    elif name in ("port", "ctx_size", "parallel", "n_predict", "seed"):
        setattr(opts, name, _int(flag, value))
    elif name == "sse_ping_interval":
        opts.sse_ping_interval = _float(flag, value)
    elif name == "api_key":
        opts.api_keys.extend(k for k in value.split(",") if k)
    elif name == "api_key_file":
        try:
            with open(value, encoding="utf-8") as fh:
                opts.api_keys.extend(line.strip() for line in fh if line.strip())
        except OSError as e:
            raise UsageError(f"error: failed to open file '{value}': {e.strerror}") from None
    elif name == "chat_template_file":
        try:
            with open(value, encoding="utf-8", errors="replace") as fh:
                opts.chat_template = fh.read()
        except OSError:
            msg = f"error: failed to open file '{value}'"
            raise UsageError(f'error while handling argument "{flag}": {msg}') from None
    elif name == "fault":
        opts.faults.append(value)
    else:  # pragma: no cover
        raise AssertionError(name)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        opts, warnings = parse_args(argv)
    except UsageError as e:
        log_to_stderr(str(e))
        return 1
    if opts.help:
        sys.stdout.write(USAGE)
        return 0
    if opts.version:
        log_to_stderr("version: 0 (fakellama)\nbuilt with python for fake-llama-server")
        return 0
    for w in warnings:
        log_to_stderr(w)
    try:
        faults = parse_faults(os.environ.get(ENV_FAULT, ""))
        for spec in opts.faults:
            faults = faults.merged(parse_faults(spec))
    except FaultSpecError as e:
        log_to_stderr(f"error: invalid fault spec: {e}")
        return 1
    if opts.model is None:
        log_to_stderr("error: fake-llama-server needs -m/--model (router mode is not imitated)")
        return 1
    if opts.parallel < 1:
        opts.parallel = 1
    log_to_stderr("build: 0 (fakellama) with python for fake-llama-server")
    log_to_stderr(
        f"system info: fake-llama-server (harness.fake_llama), seed = {opts.seed}, "
        f"faults = '{faults.to_spec()}'"
    )
    if opts.api_keys:
        log_to_stderr(f"srv         init: api_keys: ****{opts.api_keys[0][-4:]}")
    return Runner(opts.to_config(faults)).run()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
