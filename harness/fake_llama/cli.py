"""``fake-llama-server``: the fake as a process, with llama-server's command line.

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
* a missing model file or a bind failure exit 1 with llama-server's messages.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from harness.fake_llama.faults import Faults, FaultSpecError, parse_faults
from harness.fake_llama.server import BindError, FakeConfig, FakeServer
from harness.fake_llama.templates import TemplateError, resolve_template

__all__ = ["ENV_FAULT", "CliOptions", "UsageError", "main", "parse_args"]

ENV_FAULT = "FAKE_LLAMA_FAULT"
ENV_PARENT_PID = "FAKE_LLAMA_PARENT_PID"  # exit when this parent goes away (no orphans)
ENV_NEW_PGRP = "FAKE_LLAMA_NEW_PGRP"  # start a new process group

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
        arg = args[i]
        i += 1
        inline: str | None = None
        if arg.startswith("--") and "=" in arg:
            arg, inline = arg.split("=", 1)
        if arg in ("-h", "--help", "--usage"):
            opts.help = True
            continue
        if arg == "--version":
            opts.version = True
            continue
        if arg in _BOOL_FLAGS:
            name, value = _BOOL_FLAGS[arg]
            setattr(opts, name, value)
            continue
        if arg in _VALUE_FLAGS:
            if inline is None:
                if i >= len(args):
                    raise UsageError(f"error: expected value for argument: {arg}")
                inline = args[i]
                i += 1
            _apply(opts, arg, _VALUE_FLAGS[arg], inline)
            continue
        if arg.startswith("-") and len(arg) > 1:
            ignored = [arg if inline is None else f"{arg}={inline}"]
            if inline is None and i < len(args):
                nxt = args[i]
                if not nxt.startswith("-") or _NEGATIVE_NUMBER.match(nxt):
                    ignored.append(nxt)
                    i += 1
            opts.ignored.extend(ignored)
            warnings.append(
                f"warn: fake-llama-server ignores llama-server flag: {' '.join(ignored)}"
            )
            continue
        raise UsageError(f"error: invalid argument: {arg}")
    try:
        # llama-server checks the template once every flag is read (so flag order
        # does not matter) and exits 1.
        resolve_template(opts.chat_template, jinja=opts.jinja)
    except TemplateError as e:
        raise UsageError(str(e)) from None
    return opts, warnings


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


def _stderr(line: str) -> None:
    # Once the parent is gone the pipe is broken: a log line must never stop the
    # process from exiting (or from handling SIGTERM).
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class _Runner:
    """Runs one FakeServer as the whole process."""

    def __init__(self, config: FakeConfig) -> None:
        from twisted.internet import reactor

        self.reactor: Any = reactor
        self.config = config
        self.exit_code = 0
        self.terminating = False
        self.server = FakeServer(
            config,
            reactor,
            log=_stderr,
            on_load_failed=self._load_failed,
            on_crash=self._crash,
        )

    def run(self) -> int:
        pf = self.server.process_faults
        if os.environ.get(ENV_NEW_PGRP):
            try:
                os.setpgrp()
            except OSError:
                pass
        self._install_signals(ignore_term=pf.ignore_sigterm)
        try:
            self.server.listen()
        except BindError:
            return 1
        self.server.start_loading()
        self._watch_parent()
        self.reactor.run(installSignalHandlers=False)
        sys.stderr.flush()
        return self.exit_code

    # -- signals ---------------------------------------------------------------------

    def _install_signals(self, *, ignore_term: bool) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        if ignore_term:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            _stderr("srv  fake: (ignore_sigterm) SIGTERM will be ignored")
        else:
            signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.server.state in ("new", "loading"):
            # llama-server installs its handler only after the model loaded: before
            # that the default action applies and the process dies by the signal.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if self.terminating:
            try:
                _stderr("Received second interrupt, terminating immediately.")
            finally:
                os._exit(1)
        self.terminating = True
        self.reactor.callFromThread(self._graceful)

    def _graceful(self) -> None:
        self.server.log("srv    operator(): operator(): cleaning up before exit...")
        delay = self.server.process_faults.shutdown_delay

        def stopped(_: object) -> None:
            self.server.log("srv    operator(): HTTP server stopped")
            self.reactor.callLater(delay, self._stop_reactor)

        self.server.stop(abort=False).addCallback(stopped)

    def _stop_reactor(self) -> None:
        if self.reactor.running:
            self.reactor.stop()

    # -- lifecycle hooks -------------------------------------------------------------

    def _load_failed(self, server: FakeServer, reason: str) -> None:
        self.exit_code = 1
        self.reactor.callLater(0, self._stop_reactor)

    def _crash(self, server: FakeServer) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)

    def _watch_parent(self) -> None:
        pid = os.environ.get(ENV_PARENT_PID)
        if not pid or not pid.isdigit():
            return
        from twisted.internet.task import LoopingCall

        def check() -> None:
            if os.getppid() != int(pid):
                try:
                    _stderr("srv  fake: parent process is gone, exiting")
                finally:
                    os._exit(1)

        LoopingCall(check).start(0.5, now=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        opts, warnings = parse_args(argv)
    except UsageError as e:
        _stderr(str(e))
        return 1
    if opts.help:
        sys.stdout.write(USAGE)
        return 0
    if opts.version:
        _stderr("version: 0 (fakellama)\nbuilt with python for fake-llama-server")
        return 0
    for w in warnings:
        _stderr(w)
    try:
        faults = parse_faults(os.environ.get(ENV_FAULT, ""))
        for spec in opts.faults:
            faults = faults.merged(parse_faults(spec))
    except FaultSpecError as e:
        _stderr(f"error: invalid fault spec: {e}")
        return 1
    if opts.model is None:
        _stderr("error: fake-llama-server needs -m/--model (router mode is not imitated)")
        return 1
    if opts.parallel < 1:
        opts.parallel = 1
    _stderr("build: 0 (fakellama) with python for fake-llama-server")
    _stderr(
        f"system info: fake-llama-server (harness.fake_llama), seed = {opts.seed}, "
        f"faults = '{faults.to_spec()}'"
    )
    if opts.api_keys:
        _stderr(f"srv         init: api_keys: ****{opts.api_keys[0][-4:]}")
    return _Runner(opts.to_config(faults)).run()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
