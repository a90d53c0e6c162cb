"""llama-server command-line flags: tokenising and merging configuration layers.

A managed server's flags come in layers: the global ``llama_server.args`` (or an
executable variant's args, which replace them), then the alias's
``context_params``. ``merge_flags(*layers)`` combines them the way a person reads
them: a later layer wins per flag.

How a token list is read follows llama.cpp's ``common/arg.cpp`` (checked against
the upstream source):

* each option has several spellings that are **one** flag: ``-c`` / ``--ctx-size``,
  ``-ngl`` / ``--gpu-layers`` / ``--n-gpu-layers``, and also positive / negative
  pairs such as ``--mmap`` / ``--no-mmap`` (``_KNOWN`` below is the table);
* in a ``--long`` flag ``_`` means ``-`` (llama.cpp rewrites it), so
  ``--ctx_size`` is ``--ctx-size``;
* a flag that takes a value always consumes the next token, even one starting
  with ``-`` (``-ngl -1``, ``--temp -0.5``); a few take two values
  (``--lora-scaled FNAME SCALE``);
* llama-server does **not** understand ``--flag=value``; it is accepted here and
  written back as two tokens;
* ``-fa`` / ``--flash-attn`` takes ``on|off|auto`` in current builds and no value
  in older ones, so a following token is its value only when it is not a flag;
* a flag missing from the table (a newer or forked build) takes the next token as
  its value when that token does not look like a flag (a negative number is a
  value, not a flag).

Some options accumulate when repeated (``REPEATABLE_KEYS``: ``--lora``,
``--lora-scaled``, ``--control-vector``, ``--control-vector-scaled``,
``--override-kv``, ``--override-tensor``/``-ot``, ``--override-tensor-draft``/
``-otd``, ``--reverse-prompt``/``-r``, ``--logit-bias``/``-l``,
``--dry-sequence-breaker``, ``--api-key``, ``--api-key-file``, ``--spec-replace``,
``--rpc``). ``--lora`` and ``--lora-scaled`` fill the same adapter list (and so do
the two control-vector flags), so each pair is one repeatable family: the adapter
order, which the ``/lora-adapters`` ids depend on, is kept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "REPEATABLE_KEYS",
    "Flag",
    "FlagError",
    "flag_key",
    "format_flags",
    "has_flag",
    "merge_flags",
    "parse_flags",
]


class FlagError(ValueError):
    """A token list llama-server could not parse (a missing value, a stray word)."""


# Arity: 0 = no value, 1 / 2 = that many values, -1 = optional value.
_OPTIONAL = -1

# (spellings, arity). The first spelling starting with "--" names the flag's key.
# Options of llama-server and of the common set it inherits, from common/arg.cpp.
_TABLE: tuple[tuple[tuple[str, ...], int], ...] = (
    # -- no value (switches and positive/negative pairs)
    (("-h", "--help", "--usage"), 0),
    (("--version",), 0),
    (("-cl", "--cache-list"), 0),
    (("--completion-bash",), 0),
    (("--verbose-prompt",), 0),
    (("--display-prompt", "--no-display-prompt"), 0),
    (("--swa-full",), 0),
    (("--kv-unified", "-kvu"), 0),
    (("--context-shift", "--no-context-shift"), 0),
    (("--perf", "--no-perf"), 0),
    (("--show-timings", "--no-show-timings"), 0),
    (("-e", "--escape", "--no-escape"), 0),
    (("--prompt-cache-all",), 0),
    (("--prompt-cache-ro",), 0),
    (("-sp", "--special"), 0),
    (("-cnv", "--conversation", "-no-cnv", "--no-conversation"), 0),
    (("-st", "--single-turn"), 0),
    (("-i", "--interactive"), 0),
    (("-if", "--interactive-first"), 0),
    (("-mli", "--multiline-input"), 0),
    (("--in-prefix-bos",), 0),
    (("--warmup", "--no-warmup"), 0),
    (("--spm-infill",), 0),
    (("--ignore-eos",), 0),
    (("-kvo", "--kv-offload", "-nkvo", "--no-kv-offload"), 0),
    (("--repack", "-nr", "--no-repack"), 0),
    (("--no-host",), 0),
    (("-cb", "--cont-batching", "-nocb", "--no-cont-batching"), 0),
    (("--mmproj-auto", "--no-mmproj", "--no-mmproj-auto"), 0),
    (("--mmproj-offload", "--no-mmproj-offload"), 0),
    (("--mlock",), 0),
    (("--mmap", "--no-mmap"), 0),
    (("--list-devices",), 0),
    (("--cpu-moe", "-cmoe"), 0),
    (("--cpu-moe-draft", "-cmoed"), 0),
    (("--check-tensors",), 0),
    (("--op-offload", "--no-op-offload"), 0),
    (("--webui", "--no-webui"), 0),
    (("--embedding", "--embeddings"), 0),
    (("--reranking", "--rerank"), 0),
    (("--metrics",), 0),
    (("--props",), 0),
    (("--slots", "--no-slots"), 0),
    (("--models-autoload", "--no-models-autoload"), 0),
    (("--jinja", "--no-jinja"), 0),
    (("--prefill-assistant", "--no-prefill-assistant"), 0),
    (("--lora-init-without-apply",), 0),
    (("--simple-io",), 0),
    (("--log-disable",), 0),
    (("-v", "--verbose", "--log-verbose"), 0),
    (("--offline",), 0),
    (("--log-prefix",), 0),
    (("--log-timestamps",), 0),
    (("--tts-use-guide-tokens",), 0),
    # -- optional value (on|off|auto now; a bare switch in older builds)
    (("-fa", "--flash-attn"), _OPTIONAL),
    # -- one value
    (("-co", "--color"), 1),
    (("-t", "--threads"), 1),
    (("-tb", "--threads-batch"), 1),
    (("-C", "--cpu-mask"), 1),
    (("-Cr", "--cpu-range"), 1),
    (("--cpu-strict",), 1),
    (("--prio",), 1),
    (("--poll",), 1),
    (("-Cb", "--cpu-mask-batch"), 1),
    (("-Crb", "--cpu-range-batch"), 1),
    (("--cpu-strict-batch",), 1),
    (("--prio-batch",), 1),
    (("--poll-batch",), 1),
    (("-c", "--ctx-size"), 1),
    (("-n", "--predict", "--n-predict"), 1),
    (("-b", "--batch-size"), 1),
    (("-ub", "--ubatch-size"), 1),
    (("--keep",), 1),
    (("--ctx-checkpoints", "--swa-checkpoints"), 1),
    (("--cache-ram", "-cram"), 1),
    (("-p", "--prompt"), 1),
    (("-sys", "--system-prompt"), 1),
    (("-f", "--file"), 1),
    (("-sysf", "--system-prompt-file"), 1),
    (("-bf", "--binary-file"), 1),
    (("-ptc", "--print-token-count"), 1),
    (("--prompt-cache",), 1),
    (("--in-prefix",), 1),
    (("--in-suffix",), 1),
    (("--samplers",), 1),
    (("-s", "--seed"), 1),
    (("--sampling-seq", "--sampler-seq"), 1),
    (("--temp",), 1),
    (("--top-k",), 1),
    (("--top-p",), 1),
    (("--min-p",), 1),
    (("--top-nsigma",), 1),
    (("--xtc-probability",), 1),
    (("--xtc-threshold",), 1),
    (("--typical",), 1),
    (("--repeat-last-n",), 1),
    (("--repeat-penalty",), 1),
    (("--presence-penalty",), 1),
    (("--frequency-penalty",), 1),
    (("--dry-multiplier",), 1),
    (("--dry-base",), 1),
    (("--dry-allowed-length",), 1),
    (("--dry-penalty-last-n",), 1),
    (("--dynatemp-range",), 1),
    (("--dynatemp-exp",), 1),
    (("--mirostat",), 1),
    (("--mirostat-lr",), 1),
    (("--mirostat-ent",), 1),
    (("--grammar",), 1),
    (("--grammar-file",), 1),
    (("-j", "--json-schema"), 1),
    (("-jf", "--json-schema-file"), 1),
    (("--pooling",), 1),
    (("--attention",), 1),
    (("--rope-scaling",), 1),
    (("--rope-scale",), 1),
    (("--rope-freq-base",), 1),
    (("--rope-freq-scale",), 1),
    (("--yarn-orig-ctx",), 1),
    (("--yarn-ext-factor",), 1),
    (("--yarn-attn-factor",), 1),
    (("--yarn-beta-slow",), 1),
    (("--yarn-beta-fast",), 1),
    (("-gan", "--grp-attn-n"), 1),
    (("-gaw", "--grp-attn-w"), 1),
    (("-ctk", "--cache-type-k"), 1),
    (("-ctv", "--cache-type-v"), 1),
    (("-dt", "--defrag-thold"), 1),
    (("-np", "--parallel"), 1),
    (("-mm", "--mmproj"), 1),
    (("-mmu", "--mmproj-url"), 1),
    (("--image-min-tokens",), 1),
    (("--image-max-tokens",), 1),
    (("--numa",), 1),
    (("-dev", "--device"), 1),
    (("--n-cpu-moe", "-ncmoe"), 1),
    (("--n-cpu-moe-draft", "-ncmoed"), 1),
    (("-ngl", "--gpu-layers", "--n-gpu-layers"), 1),
    (("-sm", "--split-mode"), 1),
    (("-ts", "--tensor-split"), 1),
    (("-mg", "--main-gpu"), 1),
    (("-fit", "--fit"), 1),
    (("-fitt", "--fit-target"), 1),
    (("-fitc", "--fit-ctx"), 1),
    (("--control-vector-layer-range",), 2),
    (("-a", "--alias"), 1),
    (("-m", "--model"), 1),
    (("-mu", "--model-url"), 1),
    (("-dr", "--docker-repo"), 1),
    (("-hf", "-hfr", "--hf-repo"), 1),
    (("-hfd", "-hfrd", "--hf-repo-draft"), 1),
    (("-hff", "--hf-file"), 1),
    (("-hfv", "-hfrv", "--hf-repo-v"), 1),
    (("-hffv", "--hf-file-v"), 1),
    (("-hft", "--hf-token"), 1),
    (("--host",), 1),
    (("--port",), 1),
    (("--path",), 1),
    (("--api-prefix",), 1),
    (("--ssl-key-file",), 1),
    (("--ssl-cert-file",), 1),
    (("--chat-template-kwargs",), 1),
    (("-to", "--timeout"), 1),
    (("--threads-http",), 1),
    (("--cache-reuse",), 1),
    (("--slot-save-path",), 1),
    (("--media-path",), 1),
    (("--models-dir",), 1),
    (("--models-preset",), 1),
    (("--models-max",), 1),
    (("--reasoning-format",), 1),
    (("--reasoning-budget",), 1),
    (("--chat-template",), 1),
    (("--chat-template-file",), 1),
    (("-sps", "--slot-prompt-similarity"), 1),
    (("--log-file",), 1),
    (("--log-colors",), 1),
    (("-lv", "--verbosity", "--log-verbosity"), 1),
    (("-td", "--threads-draft"), 1),
    (("-tbd", "--threads-batch-draft"), 1),
    (("-Cd", "--cpu-mask-draft"), 1),
    (("-Crd", "--cpu-range-draft"), 1),
    (("--cpu-strict-draft",), 1),
    (("--prio-draft",), 1),
    (("--poll-draft",), 1),
    (("-Cbd", "--cpu-mask-batch-draft"), 1),
    (("-Crbd", "--cpu-range-batch-draft"), 1),
    (("--cpu-strict-batch-draft",), 1),
    (("--prio-batch-draft",), 1),
    (("--poll-batch-draft",), 1),
    (("--draft-max", "--draft", "--draft-n"), 1),
    (("--draft-min", "--draft-n-min"), 1),
    (("--draft-p-split",), 1),
    (("--draft-p-min",), 1),
    (("-cd", "--ctx-size-draft"), 1),
    (("-devd", "--device-draft"), 1),
    (("-ngld", "--gpu-layers-draft", "--n-gpu-layers-draft"), 1),
    (("-md", "--model-draft"), 1),
    (("-ctkd", "--cache-type-k-draft"), 1),
    (("-ctvd", "--cache-type-v-draft"), 1),
    (("-mv", "--model-vocoder"), 1),
    (("--tts-speaker-file",), 1),
)

# Repeatable options: (spellings, arity, family key). Options of one family fill the
# same list in llama-server, so they are one flag here.
_REPEATABLE_TABLE: tuple[tuple[tuple[str, ...], int, str], ...] = (
    (("--lora",), 1, "--lora"),
    (("--lora-scaled",), 2, "--lora"),
    (("--control-vector",), 1, "--control-vector"),
    (("--control-vector-scaled",), 2, "--control-vector"),
    (("--override-kv",), 1, "--override-kv"),
    (("--override-tensor", "-ot"), 1, "--override-tensor"),
    (("--override-tensor-draft", "-otd"), 1, "--override-tensor-draft"),
    (("-r", "--reverse-prompt"), 1, "--reverse-prompt"),
    (("-l", "--logit-bias"), 1, "--logit-bias"),
    (("--dry-sequence-breaker",), 1, "--dry-sequence-breaker"),
    (("--api-key",), 1, "--api-key"),
    (("--api-key-file",), 1, "--api-key-file"),
    (("--spec-replace",), 2, "--spec-replace"),
    (("--rpc",), 1, "--rpc"),
)


def _build() -> tuple[dict[str, tuple[str, int]], frozenset[str]]:
    known: dict[str, tuple[str, int]] = {}
    for names, arity in _TABLE:
        key = next(n for n in names if n.startswith("--"))
        for name in names:
            assert name not in known, name
            known[name] = (key, arity)
    repeatable = set()
    for names, arity, key in _REPEATABLE_TABLE:
        repeatable.add(key)
        for name in names:
            assert name not in known, name
            known[name] = (key, arity)
    return known, frozenset(repeatable)


_KNOWN, REPEATABLE_KEYS = _build()
"""``REPEATABLE_KEYS``: keys of the options whose occurrences accumulate."""

_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _looks_like_flag(token: str) -> bool:
    return token.startswith("-") and len(token) > 1 and not _NUMBER.match(token)


def _normalise(name: str) -> str:
    # llama.cpp replaces '_' with '-' in "--" arguments before looking them up.
    return name.replace("_", "-") if name.startswith("--") else name


def flag_key(name: str) -> str:
    """The identity of a flag spelling: ``-c`` and ``--ctx_size`` -> ``--ctx-size``."""
    norm = _normalise(name.split("=", 1)[0] if name.startswith("--") else name)
    known = _KNOWN.get(norm)
    return known[0] if known else norm


@dataclass(frozen=True)
class Flag:
    """One flag occurrence: its key, the spelling used and its values."""

    key: str
    name: str
    values: tuple[str, ...] = ()

    @property
    def repeatable(self) -> bool:
        return self.key in REPEATABLE_KEYS

    def tokens(self) -> list[str]:
        return [self.name, *self.values]


def parse_flags(tokens: Sequence[str]) -> list[Flag]:
    """Split a token list into flags, reading it as llama-server would (see module doc).

    Raises ``FlagError`` for a word that is no flag's value, a flag whose values are
    missing and ``--switch=value`` on a flag that takes no value.
    """
    out: list[Flag] = []
    toks = [str(t) for t in tokens]
    i = 0
    while i < len(toks):
        token = toks[i]
        i += 1
        if not _looks_like_flag(token):
            raise FlagError(f"{token!r} is not a flag (and follows no flag that takes a value)")
        name, inline = token, None
        if token.startswith("--") and "=" in token:
            name, inline = token.split("=", 1)
        known = _KNOWN.get(_normalise(name))
        key = known[0] if known else _normalise(name)
        arity = known[1] if known else _OPTIONAL
        values: list[str] = []
        if inline is not None:
            if arity == 0:
                raise FlagError(f"{name} takes no value (got {token!r})")
            values.append(inline)
        if arity == _OPTIONAL:
            if inline is None and i < len(toks) and not _looks_like_flag(toks[i]):
                values.append(toks[i])
                i += 1
        else:
            while len(values) < arity:
                if i >= len(toks):
                    need = "a value" if arity == 1 else f"{arity} values"
                    raise FlagError(f"{name} needs {need}")
                values.append(toks[i])
                i += 1
        out.append(Flag(key=key, name=name, values=tuple(values)))
    return out


def format_flags(flags: Sequence[Flag]) -> list[str]:
    """Flags back to tokens (``--flag value`` form, never ``--flag=value``)."""
    return [tok for flag in flags for tok in flag.tokens()]


def merge_flags(*layers: Sequence[str]) -> list[str]:
    """Merge token lists; a later layer wins per flag.

    * Order: flags appear in the order of their first appearance in any layer; a
      flag keeps the spelling and value(s) of the last layer that sets it (within
      one layer, of its last occurrence, as llama-server does).
    * Repeatable flags (``REPEATABLE_KEYS``): every occurrence of the last layer that
      sets the flag is kept, in order; earlier layers' occurrences are replaced. So
      ``merge_flags(x, x) == merge_flags(x)``.
    * ``--flag=value`` comes out as ``--flag value``.

    Raises ``FlagError`` (a ``ValueError``) for a layer llama-server could not parse.
    """
    order: list[str] = []
    chosen: dict[str, list[Flag]] = {}
    for layer in layers:
        in_layer: dict[str, list[Flag]] = {}
        for flag in parse_flags(layer):
            if flag.key not in chosen and flag.key not in in_layer:
                order.append(flag.key)
            if flag.repeatable:
                in_layer.setdefault(flag.key, []).append(flag)
            else:
                in_layer[flag.key] = [flag]
        chosen.update(in_layer)
    return format_flags([flag for key in order for flag in chosen[key]])


def has_flag(tokens: Sequence[str], names: Sequence[str] | frozenset[str]) -> bool:
    """True when ``tokens`` sets any flag whose key is one of ``names``' keys."""
    keys = {flag_key(n) for n in names}
    return any(flag.key in keys for flag in parse_flags(tokens))
