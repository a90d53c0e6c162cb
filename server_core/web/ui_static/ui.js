// The status page's live part: /api/events and /logs/{alias}?follow=1 read as SSE.
// fetch (not EventSource) so that an API key, when the server has keys, can travel as a
// bearer header; the key lives in this variable only. Every value from the server is set
// with textContent, never as HTML: model names and log lines are not trusted.
"use strict";

(function () {
  const RECENT = 50;
  const LOG_LINES = 500;
  let key = "";
  let events = null; // AbortController of the /api/events read
  let logs = null; // AbortController of the followed log
  let retry = 1000;

  function headers() {
    return key ? { Authorization: "Bearer " + key } : {};
  }

  function setLive(state, text) {
    const live = document.getElementById("live");
    live.dataset.live = state;
    live.textContent = text;
  }

  // Reads an SSE body; calls onEvent(type, data) for each event with JSON data.
  async function readSse(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let type = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") type = text;
          else if (field === "data") data.push(text);
        }
        if (!data.length) continue;
        let parsed;
        try {
          parsed = JSON.parse(data.join("\n"));
        } catch (e) {
          continue;
        }
        onEvent(type, parsed);
      }
    }
  }

  function cell(row, name) {
    return row.querySelector("td." + name);
  }

  function modelRow(alias) {
    const body = document.querySelector("#models tbody");
    for (const row of body.rows) {
      if (row.dataset.alias === alias) return row;
    }
    const empty = body.querySelector("tr.empty");
    if (empty) empty.remove();
    const row = document.createElement("tr");
    row.dataset.alias = alias;
    for (const name of ["alias", "status", "in-flight", "waiting", "requests", "detail"]) {
      const td = document.createElement("td");
      td.className = name;
      td.textContent = name === "alias" ? alias : name === "status" || name === "detail" ? "" : "0";
      row.appendChild(td);
    }
    body.appendChild(row);
    addLogOption(alias);
    return row;
  }

  function addLogOption(alias) {
    const select = document.getElementById("log-alias");
    for (const option of select.options) {
      if (option.value === alias) return;
    }
    const option = document.createElement("option");
    option.value = alias;
    option.textContent = alias;
    select.appendChild(option);
  }

  function onState(data) {
    const row = modelRow(String(data.alias));
    const status = cell(row, "status");
    status.dataset.status = String(data.status);
    status.textContent = String(data.status);
    let detail = data.reason ? String(data.reason) : "";
    if (data.status === "loaded" && typeof data.start_seconds === "number") {
      detail = "started in " + data.start_seconds.toFixed(2) + " s";
    }
    cell(row, "detail").textContent = detail;
    if (data.status !== "loaded") {
      cell(row, "in-flight").textContent = "0";
    }
    const select = document.getElementById("log-alias");
    if (data.status === "loaded" && select.value === String(data.alias) && !logs) {
      followLog(select.value);
    }
  }

  function onCounts(data) {
    const row = modelRow(String(data.alias));
    if (typeof data.in_flight === "number") cell(row, "in-flight").textContent = String(data.in_flight);
    if (typeof data.waiting === "number") cell(row, "waiting").textContent = String(data.waiting);
  }

  function seconds(value) {
    return typeof value === "number" ? value.toFixed(3) + " s" : "";
  }

  function onRequestEnd(data) {
    if (data.alias) {
      const count = cell(modelRow(String(data.alias)), "requests");
      count.textContent = String((parseInt(count.textContent, 10) || 0) + 1);
    }
    const body = document.querySelector("#recent tbody");
    const row = document.createElement("tr");
    row.dataset.ending = data.ending ? String(data.ending) : "";
    const ending = (data.ending ? String(data.ending) : "") + (data.cause ? " (" + data.cause + ")" : "");
    const values = {
      time: new Date().toISOString().slice(11, 19),
      route: data.route ? String(data.route) : "",
      model: data.model ? String(data.model) : "",
      status: data.status != null ? String(data.status) : "",
      ending: ending,
      ttft: seconds(data.ttft),
      duration: seconds(data.duration),
    };
    for (const name of Object.keys(values)) {
      const td = document.createElement("td");
      td.className = name;
      td.textContent = values[name];
      row.appendChild(td);
    }
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > RECENT) body.deleteRow(body.rows.length - 1);
  }

  function onEvent(type, data) {
    if (type === "state") onState(data);
    else if (type === "queue" || type === "lease") onCounts(data);
    else if (type === "request_end") onRequestEnd(data);
  }

  function askForKey(message) {
    document.getElementById("key-needed").hidden = false;
    setLive("locked", message);
  }

  async function connect() {
    events = new AbortController();
    try {
      const response = await fetch("/api/events", { headers: headers(), signal: events.signal });
      if (response.status === 401) {
        askForKey(key ? "the key was refused" : "API key needed");
        return;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      document.getElementById("key-needed").hidden = true;
      setLive("live", "live");
      retry = 1000;
      await readSse(response, onEvent);
      throw new Error("the event stream ended");
    } catch (error) {
      if (events.signal.aborted) return;
      setLive("reconnecting", "reconnecting (" + error.message + ")");
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    }
  }

  function logLine(text) {
    const pre = document.getElementById("log");
    pre.appendChild(document.createTextNode(text + "\n"));
    while (pre.childNodes.length > LOG_LINES) pre.removeChild(pre.firstChild);
    pre.scrollTop = pre.scrollHeight;
  }

  async function followLog(alias) {
    if (logs) logs.abort();
    logs = null;
    const state = document.getElementById("log-state");
    document.getElementById("log").textContent = "";
    if (!alias) {
      state.textContent = "";
      return;
    }
    const mine = new AbortController();
    logs = mine;
    state.textContent = "following";
    try {
      const url = "/logs/" + encodeURIComponent(alias) + "?follow=1";
      const response = await fetch(url, { headers: headers(), signal: mine.signal });
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        state.textContent = (body.error && body.error.message) || "HTTP " + response.status;
        return;
      }
      await readSse(response, function (type, data) {
        if (typeof data.line === "string") logLine(data.line);
        else if (typeof data.dropped === "number") logLine("[" + data.dropped + " lines dropped]");
      });
      state.textContent = "the process exited";
    } catch (error) {
      if (!mine.signal.aborted) state.textContent = "log stream lost: " + error.message;
    } finally {
      if (logs === mine) logs = null;
    }
  }

  function start() {
    document.getElementById("key-use").addEventListener("click", function () {
      key = document.getElementById("key").value.trim();
      document.getElementById("key").value = "";
      if (events) events.abort();
      connect();
    });
    document.getElementById("log-alias").addEventListener("change", function (e) {
      followLog(e.target.value);
    });
    if (document.body.dataset.locked === "1") askForKey("API key needed");
    else connect();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
