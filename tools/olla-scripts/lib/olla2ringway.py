#!/usr/bin/env python3
"""Translates an Olla YAML config into a ringway TOML config, for the `go` stand-in
(`../shim/go`) that lets Olla's auth scripts start ringway where they start Olla.

    olla2ringway.py OLLA.yaml > RINGWAY.toml

Only what Olla's scripts write is translated, each to the ringway key with the same
effect on the wire:

  server.host, server.port                 -> server.listen
  server.request_limits.max_body_size      -> server.max_body_bytes
  server.request_limits.max_header_size    -> server.max_header_bytes
  server.rate_limits.*                     -> [rate_limits]
  proxy.load_balancer                      -> proxy.balancer
  proxy.connection_timeout                 -> proxy.connect_timeout_ms
  proxy.response_timeout                   -> proxy.response_timeout_ms
  proxy.retry.enabled: false               -> proxy.max_attempts = 1
  model_registry.routing_strategy          -> [routing] strategy, fallback
  logging.level                            -> log.level
  discovery.static.endpoints[]             -> [[endpoints]]: name, url, type, priority,
        health_check_url -> health_path, check_interval/-timeout -> *_ms,
        auth {type: bearer, token}         -> api_key (a "${VAR}" token: api_key_env = "VAR")
        auth {type: api_key, key, header}  -> api_key, api_key_header
        headers {NAME: VALUE} (one header, no auth)
                                           -> api_key_header = NAME, api_key = VALUE
                                              (ringway sends a key in a header other
                                              than Authorization as is)

ringway has no map of static headers: one header is the equivalent ringway configuration
(the same header and value reach the backend), not a feature of the same name. It has no
way to send `Authorization: Basic ...` either (a key on Authorization always goes as
`Bearer <key>`, and keys with spaces are refused), so `auth.type: basic` is left out, as
is whatever else has no counterpart; FINDINGS.md says so.

Olla keys without a ringway counterpart are listed on stderr (key paths only: never an
endpoint's name nor a value, so that a script grepping the log for those sees only what
ringway itself printed). Environment variables are never expanded here: ringway reads
`api_key_env` itself, and must itself refuse to start when it is unset.
"""

import json
import re
import sys

import yaml

ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")

# Olla keys the scripts set that ringway has no counterpart for, or needs none for.
IGNORED = {
    "server.read_timeout", "server.write_timeout", "server.shutdown_timeout",
    "server.request_logging", "server.read_header_timeout",
    "proxy.engine", "proxy.profile", "proxy.read_timeout",
    "discovery.type", "discovery.refresh_interval", "discovery.health_check.initial_delay",
    "discovery.model_discovery.enabled",
    "model_registry.type", "model_registry.enable_unifier",
    "model_registry.unification.enabled",
    "logging.format", "logging.output",
}


def duration_ms(v):
    """Go durations as Olla writes them: 500ms, 5s, 1m, 1h30m, or a bare number (s)."""
    if isinstance(v, (int, float)):
        return int(v * 1000)
    total, units = 0.0, {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(v))
    if not parts:
        raise ValueError(f"not a duration: {v!r}")
    for n, u in parts:
        total += float(n) * units[u]
    return int(total)


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


def flatten(d, prefix=""):
    for k, v in (d or {}).items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from flatten(v, path + ".")
        else:
            yield path, v


def translate(cfg):
    used = set()
    unsupported = []

    def get(path, default=None):
        node = cfg
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        used.add(path)
        return node

    sections = {"server": {}, "proxy": {}, "rate_limits": {}, "routing": {}, "log": {}}
    host, port = get("server.host", "localhost"), get("server.port", 40114)
    if host in ("localhost", ""):
        host = "127.0.0.1"
    sections["server"]["listen"] = f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if (v := get("server.request_limits.max_body_size")) is not None:
        sections["server"]["max_body_bytes"] = int(v)
    if (v := get("server.request_limits.max_header_size")) is not None:
        sections["server"]["max_header_bytes"] = int(v)
    for key in ("global_requests_per_minute", "per_ip_requests_per_minute",
                "health_requests_per_minute", "burst_size", "trust_proxy_headers",
                "trusted_proxy_cidrs"):
        if (v := get(f"server.rate_limits.{key}")) is not None:
            sections["rate_limits"][key] = v
    if (v := get("server.rate_limits.per_endpoint.default_requests_per_minute")) is not None:
        sections["rate_limits"]["per_endpoint_requests_per_minute"] = int(v)
    if (v := get("server.rate_limits.cleanup_interval")) is not None:
        sections["rate_limits"]["cleanup_interval_ms"] = duration_ms(v)

    if (v := get("proxy.load_balancer")) is not None:
        sections["proxy"]["balancer"] = v
    if (v := get("proxy.connection_timeout")) is not None:
        sections["proxy"]["connect_timeout_ms"] = duration_ms(v)
    if (v := get("proxy.response_timeout")) is not None:
        sections["proxy"]["response_timeout_ms"] = duration_ms(v)
    if get("proxy.retry.enabled") is False:
        sections["proxy"]["max_attempts"] = 1

    if (v := get("model_registry.routing_strategy.type")) is not None:
        sections["routing"]["strategy"] = v
    if (v := get("model_registry.routing_strategy.options.fallback_behavior")) is not None:
        sections["routing"]["fallback"] = v
    if (v := get("logging.level")) is not None:
        sections["log"]["level"] = v

    endpoints = []
    for i, ep in enumerate(get("discovery.static.endpoints", []) or []):
        at = f"discovery.static.endpoints[{i}]"
        out = {}
        for src, dst in (("name", "name"), ("url", "url"), ("type", "type"),
                         ("priority", "priority"), ("health_check_url", "health_path")):
            if src in ep:
                out[dst] = ep[src]
        for src, dst in (("check_interval", "check_interval_ms"),
                         ("check_timeout", "check_timeout_ms")):
            if src in ep:
                out[dst] = duration_ms(ep[src])
        auth, headers = ep.get("auth"), ep.get("headers") or {}
        if auth:
            kind = auth.get("type")
            if kind == "bearer":
                secret(out, auth.get("token", ""))
            elif kind == "api_key":
                secret(out, auth.get("key", ""))
                if auth.get("header"):
                    out["api_key_header"] = auth["header"]
            else:
                unsupported.append(f"{at}.auth.type={kind}")
            if headers:
                unsupported.append(f"{at}.headers (with auth)")
        elif len(headers) == 1:
            (name, value), = headers.items()
            out["api_key_header"] = name
            secret(out, str(value))
        elif headers:
            unsupported.append(f"{at}.headers (more than one)")
        for key in ep:
            if key not in ("name", "url", "type", "priority", "health_check_url",
                           "check_interval", "check_timeout", "auth", "headers",
                           "model_url"):
                unsupported.append(f"{at}.{key}")
        endpoints.append(out)

    for path, _ in flatten(cfg):
        if path in used or path in IGNORED or path.startswith("discovery.static.endpoints"):
            continue
        if any(path.startswith(u + ".") for u in used):
            continue
        unsupported.append(path)

    lines = ["# Translated from an Olla config by tools/olla-scripts/lib/olla2ringway.py", ""]
    for name, body in sections.items():
        if body:
            lines.append(f"[{name}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in body.items()]
            lines.append("")
    for ep in endpoints:
        lines.append("[[endpoints]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in ep.items()]
        lines.append("")
    return "\n".join(lines), unsupported


def secret(out, value):
    """A credential: a `${VAR}` reference stays a reference for ringway to resolve."""
    m = ENV_REF.match(value)
    if m:
        out["api_key_env"] = m.group(1)
    else:
        out["api_key"] = value


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: olla2ringway.py OLLA_CONFIG.yaml")
    with open(sys.argv[1], encoding="utf-8") as f:
        cfg = yaml.safe_load(f) or {}
    toml, unsupported = translate(cfg)
    if unsupported:
        print("olla2ringway: no ringway counterpart, left out: " + ", ".join(unsupported),
              file=sys.stderr)
    sys.stdout.write(toml)


if __name__ == "__main__":
    main()
