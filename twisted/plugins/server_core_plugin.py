"""twistd dropin: ``twistd -n server-core --config FILE --port ENDPOINT``."""

from __future__ import annotations

import sys
from typing import Any

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer

CONFIG_HINT = (
    "fix that line and start again (examples/ holds a working file for each kind of alias; "
    "the README's Configuration section lists every option)"
)


class Options(usage.Options):
    optParameters = [
        ["config", "c", None, "YAML config file (default: the embedded default config)."],
        ["port", "p", None, "Listen endpoint (default: tcp:1135:interface=127.0.0.1)."],
    ]

    def postOptions(self) -> None:
        # Load here so a bad config stops the start with its FILE:LINE and a hint. Not a
        # UsageError: twistd would print its whole usage text above the one useful line.
        from server_core.config import default_config, load_config
        from server_core.errors import ConfigError

        try:
            self["loaded"] = load_config(self["config"]) if self["config"] else default_config()
        except ConfigError as exc:
            print(f"server-core: {exc}", file=sys.stderr)
            print(f"server-core: {CONFIG_HINT}", file=sys.stderr)
            raise SystemExit(1) from None
        if self["port"]:
            from twisted.internet import reactor
            from twisted.internet.endpoints import serverFromString

            try:
                serverFromString(reactor, self["port"])
            except (ValueError, KeyError, TypeError) as exc:
                raise usage.UsageError(f"--port {self['port']!r}: {exc}") from None
        self._refuse_unauthenticated()

    def _refuse_unauthenticated(self) -> None:
        # Checked here, for the config's listen and for --port alike, so the refusal is
        # one line before anything starts (make_service would raise it too, but twistd
        # would print it as a traceback).
        from server_core.config.exposure import unauthenticated_refusal

        config = self["loaded"]
        refusal = unauthenticated_refusal(config.server, self["port"] or config.server.listen)
        if refusal is not None:
            where = f"{config.source}: " if config.source else ""
            print(f"server-core: {where}{refusal}", file=sys.stderr)
            raise SystemExit(1)


@implementer(IServiceMaker, IPlugin)
class ServerCoreServiceMaker:
    tapname = "server-core"
    description = "OpenAI-compatible server in front of llama.cpp llama-server processes."
    options = Options

    def makeService(self, options: Options) -> Any:
        from twisted.internet import reactor

        from server_core.service import make_service

        return make_service(options["loaded"], reactor, listen=options["port"])


serviceMaker = ServerCoreServiceMaker()
