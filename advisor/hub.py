"""Whether the Hugging Face hub can be reached, decided in seconds (one TCP connect, DNS included).

huggingface_hub itself finds out by a metadata request with retries, and before it does, a command has imported
torch and transformers (4-7 s of CPU on the 2-core host, 10-40 s when it is busy): an offline machine waited
that long to hear that a model is not in its cache. The model spec check (`advisor.models.check_model_spec`)
and GSM8K's loader ask here first; standard library only (huggingface_hub's constants and its HTTP client's proxy
rules, read lazily). An answer is kept for `KEPT_S`: the model loader, asking after the spec check and torch's
imports, reuses the spec check's.
"""

from __future__ import annotations

import importlib
import os
import socket
import threading
import time
from typing import Any
from urllib.parse import ParseResult, urlparse

PROBE_S = 2.0
"""How long the probe waits for the hub's TCP handshake: a connected host answers in milliseconds."""
KEPT_S = 120.0
"""How long a probe's answer is reused for the same address (`hub_reachable`): past the seconds of imports
between the spec check's probe and the loader's (10-40 s on a busy host), short of a long run's later turns."""
_ANSWERS: dict[tuple[str, int, float], tuple[float, bool]] = {}
"""(first hop's host, port, timeout) -> (when probed, by `time.monotonic`; whether it answered)."""

DEFAULT_PORTS = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080}
"""The port of an address that names none, by its scheme: a proxy's (one of another scheme: 80, as an http://
proxy's) and the hub's (another scheme: 443)."""


def endpoint() -> str:
    """The hub's address as huggingface_hub reads it (`HF_ENDPOINT`, default https://huggingface.co)."""
    return str(_constants().ENDPOINT)


def check_endpoint() -> None:
    """One line naming HF_ENDPOINT where urllib cannot read it ('http://[::1'): huggingface_hub parses it as it is
    imported, and its ValueError was a traceback from every command that imports it - transformers does, so each
    that loads a model, the bundled one too. Called before those imports, by `check_import`
    (`_constants`, `import_runtime`, the spec check's cache lookup, GSM8K's loader); commands that never import it
    (studies, recommend, export, pareto - but recommend and export of a point recorded before 2026-12-05 whose
    model is a hub id, which read its config.json in the local hub cache) do not read the variable and are not
    refused. A port urllib cannot read ('https://hub:99999', ':3l28')
    is refused as the proxies' is: huggingface_hub's import reads the port too (its ValueError, a traceback)."""
    if (value := os.environ.get("HF_ENDPOINT")) is not None:
        url = _parsed(value.rstrip("/"), "HF_ENDPOINT")  # as huggingface_hub reads it
        try:
            url.port  # noqa: B018 - read for its ValueError, as huggingface_hub's import reads it
        except ValueError:
            raise _no_valid_port(url, "HF_ENDPOINT") from None


def check_import(library: str) -> None:
    """Before `library` ('huggingface_hub', 'transformers' or 'datasets') is imported: one line for HF_ENDPOINT
    urllib cannot read (`check_endpoint`), then for a variable the libraries it imports read as they are imported
    (`advisor.libenv.check_variables`)."""
    from advisor.libenv import check_variables

    check_endpoint()
    check_variables(library)


def _constants() -> Any:
    """huggingface_hub's constants module, the variables its import reads checked first (`check_import`)."""
    check_import("huggingface_hub")
    from huggingface_hub import constants

    return constants


def offline_set(*also: str) -> bool:
    """Whether offline mode is on, as the library that would download reads it: a variable `also` names
    (`HF_DATASETS_OFFLINE` for datasets), where set, decides alone; else `HF_HUB_OFFLINE`, or where it is unset or
    empty `TRANSFORMERS_OFFLINE` (huggingface_hub's order: HF_HUB_OFFLINE=0 with TRANSFORMERS_OFFLINE=1 is online);
    else huggingface_hub's own setting (read at its import, or set since)."""
    constants = _constants()

    def on(value: str) -> bool:
        return value.upper() in constants.ENV_VARS_TRUE_VALUES

    for name in also:
        if (value := os.environ.get(name)) is not None:
            return on(value)
    hub = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return bool(constants.HF_HUB_OFFLINE) if hub is None else on(hub)


def hub_reachable(timeout: float = PROBE_S, *also_offline: str) -> bool:
    """Whether the hub answers a TCP connect within `timeout` seconds; False at once in offline mode
    (`offline_set`). The connect runs in a daemon thread, so a resolver that hangs cannot hold the caller longer.
    An answer for the same first hop within `KEPT_S` is reused: one probe per command, not the spec check's and
    the loader's."""
    if offline_set(*also_offline):
        return False
    host, port, _ = _first_hop(urlparse(endpoint()))
    key = (host, port, timeout)
    if (kept := _ANSWERS.get(key)) is not None and time.monotonic() - kept[0] < KEPT_S:
        return kept[1]
    answer = _probe(host, port, timeout)
    _ANSWERS[key] = (time.monotonic(), answer)
    return answer


def _probe(host: str, port: int, timeout: float) -> bool:
    """One TCP connect to `host`:`port`, waited for at most `timeout` seconds. A name the resolver cannot encode
    (a label past 63 characters: the idna codec's UnicodeError, no OSError) answers no, as an unknown one does: it
    was the probe thread's traceback above the command's one line."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except (OSError, UnicodeError):
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _first_hop(url: ParseResult) -> tuple[str, int, bool]:
    """Where a request to the hub's `url` connects first, and whether that is a proxy: the one the environment
    names for its scheme (HTTPS_PROXY, ALL_PROXY, ...) unless NO_PROXY exempts the hub, both as huggingface_hub's
    HTTP client reads them (`_client_proxy`), else the hub itself. Behind a proxy a direct connect is often blocked
    though the hub answers."""
    from urllib.request import getproxies, proxy_bypass  # (40 ms of imports: only when a hub id is asked for)

    host = url.hostname or "huggingface.co"
    proxies = getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and (chosen := _client_proxy(url.geturl())) is not None:
        proxy = chosen[0]
    elif proxy and proxy_bypass(host):  # no httpx here: urllib's reading of NO_PROXY (requests' too)
        proxy = None
    if proxy:
        kind = url.scheme if proxies.get(url.scheme) else "all"
        # the variable as it is spelled: urllib reads either case, the lower one first (https_proxy, HTTPS_PROXY)
        name = next((n for n in (f"{kind}_proxy", f"{kind.upper()}_PROXY") if os.environ.get(n) == proxies[kind]),
                    f"{kind.upper()}_PROXY")
        hop = _parsed(proxy if "://" in proxy else f"http://{proxy}", name)
        if hop.hostname:
            return hop.hostname, _port(hop, DEFAULT_PORTS.get(hop.scheme, 80), name), True
    return host, _port(url, DEFAULT_PORTS.get(url.scheme, 443), "HF_ENDPOINT"), False


def _client_proxy(url: str) -> tuple[str | None] | None:
    """(the proxy, None: none) a request to `url` goes through as huggingface_hub's HTTP client - httpx2 (2.x) or
    httpx (1.x) - picks it from the environment: its own patterns, most specific first, as its Client mounts them.
    Its NO_PROXY is not urllib's: '.huggingface.co' exempts subdomains only and a '*' among other names exempts
    every host, where urllib's `proxy_bypass` exempts the first and not the second (a probe that went straight to
    the hub while the download went through the proxy, or the reverse). None: neither client is installed, it has
    not the API read here, or it cannot read the address (its InvalidURL, all it raises on one: httpx2 drops a
    NO_PROXY entry it cannot read, httpx raises it); any other error is ours and not hidden."""
    for module in ("httpx2", "httpx"):
        try:
            client, utils = importlib.import_module(module), importlib.import_module(f"{module}._utils")
        except ImportError:
            continue
        try:
            proxies, url_pattern, url_type, invalid = (utils.get_environment_proxies, utils.URLPattern, client.URL,
                                                       client.InvalidURL)
        except AttributeError:  # not the (private) API read here: urllib's reading decides
            return None
        try:
            mounts = sorted((url_pattern(key), proxy) for key, proxy in proxies().items())
            target = url_type(url)
            return (next((proxy for pattern, proxy in mounts if pattern.matches(target)), None),)
        except invalid:  # an address it cannot read - an HF_ENDPOINT ('https://[::1]x': InvalidURL, no ValueError,
            return None  # was a traceback), httpx's NO_PROXY entry -: urllib's reading decides, the download the rest
    return None


def _parsed(address: str, what: str) -> ParseResult:
    """`address` as a URL; one urllib cannot read (an IPv6 host with its closing bracket left out:
    'http://[::1:3128') is refused in one line naming the variable `what` that gave it, not urllib's ValueError
    (a traceback before any request), said without its user:password@ part."""
    try:
        return urlparse(address)
    except ValueError:
        from advisor.errors import BadVariable

        raise BadVariable(f"{what} gives an address that is no URL ({_netloc(address)}); give it as "
                        "http://HOST:PORT, an IPv6 host in brackets ([::1])") from None


def _netloc(address: str) -> str:
    """The host and port of URL text `address`, without its user:password@ part (not to be echoed)."""
    return address.partition("://")[2].split("/", 1)[0].rpartition("@")[2]


def _port(url: ParseResult, default: int, what: str) -> int:
    """`url`'s port, else `default`; a port that is no number from 1 to 65535 (a typo: 'proxy:3l28') is refused in
    one line naming the variable `what` that gave it, the address said without its user:password@ part: urllib
    raises ValueError (a traceback before any request), and took port 0 for none (the probe asked port 80 of a
    proxy the download would ask port 0 of, and named it 'proxy:80')."""
    try:
        port = url.port
    except ValueError:
        port = 0
    if port == 0:
        raise _no_valid_port(url, what)
    return default if port is None else port


def _no_valid_port(url: ParseResult, what: str) -> Exception:
    """The one line for `url`, given by the variable `what`, whose port is no number from 1 to 65535."""
    from advisor.errors import BadVariable

    return BadVariable(f"{what} gives an address with no valid port ({_netloc(url.geturl())}); give a port from 1 "
                     "to 65535, or none")


def unreachable_note(timeout: float = PROBE_S) -> str:
    """Why the hub counts as unreachable, said in the refusal: offline mode, or no answer from the endpoint."""
    if offline_set():
        return "offline mode is set (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)"
    host, port, proxied = _first_hop(urlparse(endpoint()))
    address = f"[{host}]" if ":" in host else host  # an IPv6 proxy as a URL writes it: [::1]:3128, not ::1:3128
    via = f" through the proxy {address}:{port}" if proxied else ""
    return f"the hub ({endpoint()}) could not be reached{via} in {timeout:g} s"


def network_errors() -> tuple[type[BaseException], ...]:
    """What a hub request raises when the network fails under it (a proxy that resets the connection, a read
    timeout): OSError and the HTTP client's own errors - httpx2 (huggingface_hub 2.x), httpx (1.x) or requests
    (before), whichever are installed. Imported only when an error is being sorted."""
    found: list[type[BaseException]] = [OSError]
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(found)
