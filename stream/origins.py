"""Which ``http(s)`` origins a fetch may reach, and how: the allow-list of a site's own internal origins and
the outbound proxy (``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``).

Default-deny stays the rule (stream/fetch.py): every address a name resolves to must be public. The
allow-list (``DARKROOM_ALLOWED_ORIGINS``) widens it two ways only:

- a **host** on the list (``images.internal.example``, or ``*.internal.example`` for its subdomains) may
  resolve to any unicast address but a link-local or cloud metadata one: private (RFC 1918, ULA), CGNAT,
  loopback (an image sidecar) -- the site's own DNS says where its own origins are;
- a **CIDR** on the list (``10.20.0.0/16``, ``fd00::/8``, or one address) admits its addresses for any host.

The cloud metadata addresses (``METADATA_ADDRESSES``) are admitted only by an entry naming exactly that
address (``169.254.169.254/32``): a range such as ``169.254.0.0/16``, ``fd00::/8`` or ``0.0.0.0/0`` that
happens to contain one does not. Unspecified and multicast addresses are never fetched.

**Through a proxy** the proxy, not the worker, resolves the name, so the worker cannot pin the address. It
still vets what it can see: an IP-literal host (any spelling ``inet_aton`` takes, ``http://2130706433/``
included) is vetted exactly as a resolved address would be, and a name that can only be internal (one
label such as ``metadata``, or under ``localhost``, ``localdomain``, ``local``, ``internal``, ``home.arpa``)
is refused unless it is on the allow-list. Any other name goes to the proxy, which is trusted configuration:
its own egress rules must keep it from reaching internal addresses (docs/deploy.md "Internal origins and
proxies"). Put internal origins in ``NO_PROXY`` so the worker connects to them itself, vetted and pinned.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import socket
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

from stream.settings import Settings, SettingsError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Cloud instance metadata and credential endpoints: AWS IMDS (IPv4 and IPv6), ECS task metadata, AWS's
#: DNS resolver and time service, Alibaba Cloud, Oracle Cloud's legacy address. GCP and Azure use 169.254.169.254.
METADATA_ADDRESSES: frozenset[Address] = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "169.254.169.253", "169.254.169.123", "fd00:ec2::254",
              "fd00:ec2::23", "100.100.100.200", "192.0.0.192")
)  # fmt: skip
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: DNS names that only ever mean something inside a network (RFC 6761, 6762, 8375; ICANN's ``.internal``)
_INTERNAL_SUFFIXES = ("localhost", "localdomain", "local", "internal", "home.arpa")
_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_HOST = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*")


def embedded_ipv4(addr: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (IPv4-mapped, 6to4, NAT64), which is where packets end up."""
    if addr.version != 6:
        return None
    if addr.ipv4_mapped or addr.sixtofour:
        return addr.ipv4_mapped or addr.sixtofour
    return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF) if addr in _NAT64 else None


def refused_address(addr: Address, allow_loopback: bool) -> bool:
    """True for anything but a public unicast address (loopback allowed only in development)."""
    embedded = embedded_ipv4(addr)
    if embedded is not None:
        return refused_address(embedded, allow_loopback)
    if addr.is_loopback:
        return not allow_loopback
    return not addr.is_global or addr.is_multicast


def ip_literal(host: str) -> Address | None:
    """``host`` as an address if it is one, in any spelling a resolver or proxy would take as an address
    (``0x7f.1``, ``2130706433``, ``[::1]``); None for a name."""
    host = host.strip("[]").split("%")[0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefx." for c in host.lower()):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


@dataclass(frozen=True)
class Proxy:
    """An outbound HTTP proxy (``http://[user:password@]host[:port]``), trusted configuration."""

    host: str
    port: int
    #: the ``Proxy-Authorization`` header value, from the URL's user and password (never logged)
    authorization: str | None = field(default=None, repr=False)

    @property
    def netloc(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, variable: str, url: str) -> Proxy:
        """``url`` as curl and requests read it: no scheme means ``http://``; the port defaults to 80."""
        if "://" not in url:
            url = "http://" + url
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port or 80
        except ValueError as exc:
            raise SettingsError(f"{variable}={_redacted(url)!r} is not a proxy URL: {exc}") from None
        if parts.scheme.lower() != "http":
            raise SettingsError(
                f"{variable}={_redacted(url)!r}: only http:// proxies are supported (https:// origins go "
                "through them in a CONNECT tunnel, TLS end to end)"
            )
        if not parts.hostname or parts.path not in ("", "/") or parts.query:
            raise SettingsError(f"{variable}={_redacted(url)!r} is not a proxy URL (http://host:port)")
        authorization = None
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        return cls(parts.hostname, port, authorization)


def _redacted(url: str) -> str:
    """``url`` with any password replaced, for error messages."""
    return re.sub(r"//([^/@:]*):[^/@]*@", r"//\1:***@", url)


@dataclass(frozen=True)
class Origins:
    """The fetch policy for ``http(s)``: allowed internal hosts and ranges, proxies, connection reuse."""

    #: host names that may resolve to private addresses (lower case, no trailing dot)
    hosts: frozenset[str] = frozenset()
    #: ``*.suffix`` entries: any subdomain of these (not the suffix itself)
    host_suffixes: tuple[str, ...] = ()
    #: ranges whose addresses any host may reach
    networks: tuple[Network, ...] = ()
    #: the proxy for ``http://`` and for ``https://`` origins (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``)
    http_proxy: Proxy | None = None
    https_proxy: Proxy | None = None
    #: ``NO_PROXY`` entries: ``*``, names (matching subdomains too), ``name:port``, addresses and CIDRs
    no_proxy: tuple[str, ...] = ()
    #: how long an idle connection is kept for the next fetch to the same origin; 0: no reuse
    keepalive_s: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, env: Mapping[str, str] | None = None) -> Origins:
        """``DARKROOM_ALLOWED_ORIGINS`` and ``DARKROOM_FETCH_KEEPALIVE_S`` of ``settings``, and the proxy
        variables of ``env`` (default: ``os.environ``)."""
        hosts, suffixes, networks = parse_allowed_origins(settings.allowed_origins)
        proxies, no_proxy = proxy_environment(os.environ if env is None else env)
        return cls(
            hosts=frozenset(hosts),
            host_suffixes=tuple(suffixes),
            networks=tuple(networks),
            http_proxy=proxies.get("http"),
            https_proxy=proxies.get("https"),
            no_proxy=no_proxy,
            keepalive_s=settings.fetch_keepalive_s,
        )

    def host_allowed(self, host: str) -> bool:
        """Whether ``host`` (a name) is one of the site's own origins."""
        host = host.lower().rstrip(".")
        return host in self.hosts or any(host.endswith("." + s) for s in self.host_suffixes)

    def address_refusal(self, addr: Address, host_allowed: bool, allow_loopback: bool) -> str | None:
        """Why ``addr`` may not be fetched (None if it may), for a host that is or is not on the list."""
        target = embedded_ipv4(addr) or addr  # where the packets go
        candidates = {addr, target}
        if target.is_unspecified or target.is_multicast:
            return f"non-unicast address {addr}"
        if target in METADATA_ADDRESSES:
            exact = any(net.num_addresses == 1 and c in net for net in self.networks for c in candidates)
            return None if exact else f"cloud metadata address {addr} (allowed only by its own /32 or /128)"
        if any(c in net for net in self.networks for c in candidates if c.version == net.version):
            return None
        if not refused_address(addr, allow_loopback):
            return None
        if host_allowed and not target.is_link_local:
            return None
        return f"non-public address {addr}"

    def name_refusal_through_proxy(self, host: str) -> str | None:
        """Why a name may not be handed to a proxy to resolve (None if it may): only internal names."""
        name = host.lower().rstrip(".")
        if self.host_allowed(name):
            return None
        if "." not in name or any(name == s or name.endswith("." + s) for s in _INTERNAL_SUFFIXES):
            return f"{host[:200]!r} can only be an internal name and is not in DARKROOM_ALLOWED_ORIGINS"
        return None

    def proxy_for(self, scheme: str, host: str, port: int) -> Proxy | None:
        """The proxy a request to ``scheme://host:port`` goes through, or None: no proxy for the scheme, a
        ``NO_PROXY`` match, or a loopback host (direct, and vetted as any direct fetch is)."""
        proxy = self.https_proxy if scheme == "https" else self.http_proxy
        if proxy is None or bypasses_proxy(self.no_proxy, host, port) or _is_loopback(host):
            return None
        return proxy


def _is_loopback(host: str) -> bool:
    """A loopback address or ``localhost`` name: the worker's own machine, which no proxy can reach for it
    (browsers send these direct too, whatever the proxy settings)."""
    literal = ip_literal(host)
    name = host.lower().rstrip(".")
    return (literal is not None and literal.is_loopback) or name == "localhost"


def parse_allowed_origins(text: str) -> tuple[set[str], list[str], list[Network]]:
    """``DARKROOM_ALLOWED_ORIGINS``: comma-separated host names, ``*.`` suffixes, addresses and CIDRs.

    SettingsError naming the first entry that is none of these (a URL, a port, a host bits set CIDR, ...).
    """
    hosts: set[str] = set()
    suffixes: list[str] = []
    networks: list[Network] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        if "/" in entry or ip_literal(entry) is not None or _is_dotted_ip(entry):
            try:
                networks.append(ipaddress.ip_network(entry, strict=True))
            except ValueError as exc:
                raise SettingsError(
                    f"DARKROOM_ALLOWED_ORIGINS: {entry!r} is not a CIDR (e.g. 10.20.0.0/16 or fd00::/8): {exc}"
                ) from None
            continue
        name = entry.lower().rstrip(".")
        if len(name) > 253 or not _HOST.fullmatch(name) or name == "*":
            raise SettingsError(
                f"DARKROOM_ALLOWED_ORIGINS: {entry!r} is not a host name, *.domain or CIDR "
                "(no scheme, port or path: e.g. images.internal.example,10.20.0.0/16)"
            )
        if name.startswith("*."):
            if "." not in name[2:]:
                raise SettingsError(
                    f"DARKROOM_ALLOWED_ORIGINS: {entry!r} would allow a whole top-level domain"
                )
            suffixes.append(name[2:])
        else:
            hosts.add(name)
    return hosts, suffixes, networks


def _is_dotted_ip(entry: str) -> bool:
    """Four dot-separated numbers: meant as an IPv4 address, even an invalid one (``10.0.0.300``)."""
    return re.fullmatch(r"\d+\.\d+\.\d+\.\d+", entry) is not None


def proxy_environment(env: Mapping[str, str]) -> tuple[dict[str, Proxy], tuple[str, ...]]:
    """The proxies and ``NO_PROXY`` entries of ``env``, as curl, requests and urllib read them: a variable's
    lower-case spelling wins over its upper-case one; ``ALL_PROXY`` serves a scheme without its own; an
    empty value is unset."""
    values: dict[str, tuple[str, str]] = {}
    for name, value in env.items():
        key = name.lower()
        if key in ("http_proxy", "https_proxy", "all_proxy", "no_proxy") and value.strip():
            if key not in values or name == key:
                values[key] = (name, value.strip())
    proxies: dict[str, Proxy] = {}
    for scheme in ("http", "https"):
        found = values.get(f"{scheme}_proxy") or values.get("all_proxy")
        if found:
            proxies[scheme] = Proxy.parse(*found)
    no_proxy = tuple(e.strip().lower() for e in values.get("no_proxy", ("", ""))[1].split(",") if e.strip())
    return proxies, no_proxy


def bypasses_proxy(no_proxy: tuple[str, ...], host: str, port: int) -> bool:
    """Whether ``NO_PROXY`` sends ``host:port`` direct: ``*``; a name matching the host or a domain above it
    (a leading ``.`` or ``*.`` is ignored); ``name:port`` for that port only; an address or CIDR (as
    requests does) for an IP-literal host."""
    host = host.lower().rstrip(".").strip("[]")
    address = ip_literal(host)
    for entry in no_proxy:
        if entry == "*":
            return True
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry.strip("[]"), strict=False):
                    return True
                continue
            except ValueError:
                pass
        name, entry_port = entry, None
        if entry.count(":") == 1:
            name, _, port_text = entry.partition(":")
            entry_port = int(port_text) if port_text.isdigit() else -1
        name = name.removeprefix("*").lstrip(".").rstrip(".")
        if entry_port is not None and entry_port != port:
            continue
        if name and (host == name or host.endswith("." + name)):
            return True
    return False
