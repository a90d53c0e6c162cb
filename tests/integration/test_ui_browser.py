"""The status page in a real headless Chromium (Debian's ``chromium``, installed by
``scripts/install-chromium``), driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: NUL-separated JSON on the child's fds 3 and 4, read by the
reactor, so server_core keeps serving while the test waits for the page).

The page loads and shows the managed models; a request starts one and the page shows it
loaded and the finished request (updated from ``/api/events``); its log is followed; an
unload makes the page show it stopped. With API keys the page asks for the key and goes
live once it is typed in. Without JavaScript the tables are there all the same.
Set ``UI_SCREENSHOT=path.png`` to save a screenshot of the page with a model loaded.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from tests.integration.stack import reactor, stack
from tests.integration.test_managed import ask, managed

pytestmark = pytest.mark.timeout(90)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    raise RuntimeError("these tests need Chromium: run scripts/install-chromium")

WAIT = 20.0
"""Seconds any one wait for the page may take (a managed start included)."""


class Browser(protocol.ProcessProtocol):
    """A headless Chromium and the DevTools commands sent to it."""

    def __init__(self) -> None:
        self._buffer = b""
        self._pending: dict[int, defer.Deferred[dict[str, Any]]] = {}
        self._next = 0
        self.stderr = b""
        self.ended: defer.Deferred[None] = defer.Deferred()

    @classmethod
    def start(cls, profile: Path) -> Browser:
        browser = cls()
        argv = [str(CHROMIUM), "--headless", "--disable-gpu", "--disable-dev-shm-usage"]
        argv += ["--remote-debugging-pipe", f"--user-data-dir={profile}", "--no-first-run"]
        argv += ["--window-size=1100,900", "--hide-scrollbars"]
        if os.geteuid() == 0:
            argv.append("--no-sandbox")  # Chromium's sandbox refuses to run as root
        reactor.spawnProcess(
            browser,
            argv[0],
            [*argv, "about:blank"],
            env=None,
            childFDs={0: "w", 1: "r", 2: "r", 3: "w", 4: "r"},
        )
        return browser

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if fd != 4:
            self.stderr = (self.stderr + data)[-4000:]
            return
        self._buffer += data
        while b"\0" in self._buffer:
            raw, self._buffer = self._buffer.split(b"\0", 1)
            message = json.loads(raw)
            waiting = self._pending.pop(message.get("id", -1), None)
            if waiting is not None:
                waiting.callback(message)

    def processEnded(self, reason: Failure) -> None:
        for waiting in self._pending.values():
            waiting.errback(RuntimeError(f"chromium ended: {self.stderr[-1000:]!r}"))
        self._pending.clear()
        self.ended.callback(None)

    async def send(self, method: str, session: str | None = None, **params: Any) -> Any:
        self._next += 1
        command: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session is not None:
            command["sessionId"] = session
        answer = self._pending[self._next] = defer.Deferred()
        answer.addTimeout(WAIT, reactor)
        assert self.transport is not None
        self.transport.writeToChild(3, json.dumps(command).encode() + b"\0")
        message = await answer
        if "error" in message:
            raise AssertionError(f"{method}: {message['error']}")
        return message["result"]

    async def open(self, url: str, *, scripts: bool = True) -> Tab:
        target = await self.send("Target.createTarget", url="about:blank")
        attached = await self.send(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        tab = Tab(self, attached["sessionId"])
        if not scripts:
            await tab.command("Emulation.setScriptExecutionDisabled", value=True)
        await tab.command("Page.navigate", url=url)
        return tab

    async def close(self) -> None:
        if self.ended.called:
            return
        try:
            await self.send("Browser.close")
        except Exception:
            assert self.transport is not None
            self.transport.signalProcess("KILL")
        await self.ended.addTimeout(WAIT, reactor)


class Tab:
    """One page of the browser."""

    def __init__(self, browser: Browser, session: str) -> None:
        self._browser = browser
        self._session = session

    async def command(self, method: str, **params: Any) -> Any:
        return await self._browser.send(method, self._session, **params)

    async def value(self, expression: str) -> Any:
        result = await self.command("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def until(self, expression: str, timeout: float = WAIT) -> Any:
        """Evaluate ``expression`` every 50 ms until it is truthy; fail after ``timeout``."""
        start = reactor.seconds()
        while True:
            found = await self.value(expression)
            if found:
                return found
            if reactor.seconds() - start > timeout:
                html = await self.value("document.body && document.body.outerHTML")
                raise AssertionError(f"not reached in {timeout} s: {expression}\n{html}")
            await deferLater(reactor, 0.05, lambda: None)

    def status_of(self, alias: str, column: str = "status") -> str:
        """The expression of what the models table shows for ``alias`` in ``column``."""
        rows = "[...document.querySelectorAll('#models tbody tr')]"
        row = f"{rows}.find(r => r.dataset.alias === {json.dumps(alias)})"
        return f"{row}?.querySelector('td.{column}')?.textContent"


@pytest.fixture
def browser(tmp_path: Path) -> Any:
    started = Browser.start(tmp_path / "profile")
    yield started
    pytest_twisted.blockon(defer.ensureDeferred(started.close()))


@pytest_twisted.ensureDeferred
async def test_the_page_follows_a_model_from_its_start_to_its_unload(
    tmp_path: Path, browser: Browser
) -> None:
    async with managed(tmp_path, {"fake": [], "other": []}) as m:
        tab = await browser.open(m.url + "/ui")
        # Rendered by the server: both models, not running yet; then live.
        assert await tab.until(f"{tab.status_of('fake')} === 'unloaded'")
        assert await tab.value(tab.status_of("other")) == "unloaded"
        assert await tab.until("document.getElementById('live').dataset.live === 'live'")
        # A request starts the model: the page shows it loaded and the request's ending.
        result = await ask(m, "fake")
        assert result.outcome == "done", result.summary()
        assert await tab.until(f"{tab.status_of('fake')} === 'loaded'")
        ended = await tab.until(
            "[...document.querySelectorAll('#recent tbody tr')]"
            ".map(r => [...r.cells].map(c => c.textContent))"
            ".find(cells => cells[2] === 'fake')"
        )
        assert ended[3] == "200" and ended[4] == "complete"
        assert ended[5].endswith(" s")  # its time to first token
        assert await tab.value(tab.status_of("other")) == "unloaded"
        # Nothing is in flight or waiting any more (the queue events say so).
        assert await tab.until(
            f"{tab.status_of('fake', 'in-flight')} === '0'"
            f" && {tab.status_of('fake', 'waiting')} === '0'"
        )
        assert await tab.value(tab.status_of("fake", "requests")) == "1"
        # Its log, followed live.
        await tab.value(
            "(() => { const s = document.getElementById('log-alias'); s.value = 'fake';"
            " s.dispatchEvent(new Event('change')); return true; })()"
        )
        assert await tab.until("document.getElementById('log').textContent.length > 0")
        screenshot = os.environ.get("UI_SCREENSHOT")
        if screenshot:
            shot = await tab.command("Page.captureScreenshot", format="png")
            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
        # An unload stops it: the page shows it, and the followed log says so.
        response = await treq.post(m.url + "/unload", json={"alias": "fake"}, persistent=False)
        assert response.code == 200, await treq.content(response)
        assert await tab.until(f"{tab.status_of('fake')} === 'unloaded'")
        assert await tab.until(
            "document.getElementById('log-state').textContent === 'the process exited'"
        )


@pytest_twisted.ensureDeferred
async def test_without_javascript_the_tables_are_rendered_by_the_server(
    tmp_path: Path, browser: Browser
) -> None:
    async with managed(tmp_path, {"fake": []}) as m:
        result = await ask(m, "fake")
        assert result.outcome == "done", result.summary()
        first = await browser.open(m.url + "/ui")  # the page remembers from here on
        await first.until(f"{first.status_of('fake')} === 'loaded'")
        again = await ask(m, "fake")
        assert again.outcome == "done", again.summary()
        tab = await browser.open(m.url + "/ui", scripts=False)
        assert await tab.until(f"{tab.status_of('fake')} === 'loaded'")
        assert await tab.value("document.getElementById('live').dataset.live") == "static"
        rows = await tab.value(
            "[...document.querySelectorAll('#recent tbody tr')]"
            ".map(r => [...r.cells].map(c => c.textContent))"
        )
        assert [row[2] for row in rows] == ["fake"], rows
        assert rows[0][4] == "complete"


@pytest_twisted.ensureDeferred
async def test_with_keys_the_page_goes_live_once_the_key_is_typed_in(browser: Browser) -> None:
    async with stack(server_yaml='  api_keys: ["sekret"]\n') as s:
        tab = await browser.open(s.url + "/ui")
        assert await tab.until("document.getElementById('live').dataset.live === 'locked'")
        assert await tab.value("document.getElementById('key-needed').hidden") is False
        assert await tab.value("document.querySelectorAll('#models tr[data-alias]').length") == 0
        await tab.value(
            "(() => { document.getElementById('key').value = 'wrong';"
            " document.getElementById('key-use').click(); return true; })()"
        )
        assert await tab.until(
            "document.getElementById('live').textContent === 'the key was refused'"
        )
        await tab.value(
            "(() => { document.getElementById('key').value = 'sekret';"
            " document.getElementById('key-use').click(); return true; })()"
        )
        assert await tab.until("document.getElementById('live').dataset.live === 'live'")
        assert await tab.value("document.getElementById('key-needed').hidden") is True
        assert await tab.value("document.getElementById('key').value") == ""
        auth: dict[bytes | str, bytes | str] = {"Authorization": "Bearer sekret"}
        response = await treq.post(
            s.url + "/v1/chat/completions",
            json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]},
            headers=auth,
            persistent=False,
        )
        assert response.code == 200, await treq.content(response)
        await treq.content(response)
        cells = await tab.until(
            "[...document.querySelectorAll('#recent tbody tr')]"
            ".map(r => [...r.cells].map(c => c.textContent)).find(c => c[2] === 'fake')"
        )
        assert cells[3] == "200" and cells[4] == "complete"
        # The key is nowhere but in the script's memory: not in the URL, not stored.
        assert await tab.value("location.href") == s.url + "/ui"
        assert await tab.value("localStorage.length + sessionStorage.length") == 0
        assert await tab.value("document.cookie") == ""


@pytest_twisted.ensureDeferred
async def test_a_hostile_log_line_is_shown_as_text_in_the_browser(
    tmp_path: Path, browser: Browser
) -> None:
    # The fake llama-server logs its model's path, as the real one does: a file name is
    # something an attacker may choose.
    hostile = "<img src=x onerror=window.pwned=1>.gguf"
    model = tmp_path / hostile
    model.write_bytes(b"GGUF")
    async with managed(tmp_path, {"fake": []}, model=str(model)) as m:
        result = await ask(m, "fake")
        assert result.outcome == "done", result.summary()
        tab = await browser.open(m.url + "/ui")
        assert await tab.until(f"{tab.status_of('fake')} === 'loaded'")
        await tab.value(
            "(() => { const s = document.getElementById('log-alias'); s.value = 'fake';"
            " s.dispatchEvent(new Event('change')); return true; })()"
        )
        assert await tab.until(
            f"document.getElementById('log').textContent.includes({json.dumps(hostile)})"
        )
        assert await tab.value("document.querySelectorAll('img').length") == 0
        assert await tab.value("window.pwned === undefined") is True
