#!/usr/bin/env python3
"""Drives the orchestrator with the official MCP Python SDK (PyPI `mcp`) as a third-party client.

For each transport asked for, connects with `mcp.Client` in its default mode (`mode="auto"`: it
probes `server/discover` and uses protocol 2026-07-28 when the server offers it, else falls back
to the `initialize` handshake), lists the tools, calls a pass-through tool and a composite, and
prints one line per check:

    PASS  python <transport>: <check>  (detail)
    FAIL  python <transport>: <check>  (reason)

Exits 1 if any check failed. Run by scripts/clients.sh with the venv it installs; usable alone:

    python scripts/python_client.py --stdio BIN CONFIG [--http URL]

The HTTP bearer token comes from the environment variable CLIENTS_TOKEN (kept out of argv).
Environment the stdio orchestrator gets on top of the SDK's default set: `--stdio-env KEY=VALUE`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

CUSTOMER = "CUST-0001"
PASS_THROUGH = "sql__get_customer"
COMPOSITE = "customer_insights"
# Seconds one request may take, and one transport's whole run.
REQUEST_TIMEOUT = 30.0
TRANSPORT_TIMEOUT = 90.0

failures = 0


def report(ok: bool, transport: str, check: str, detail: str) -> None:
    global failures
    if not ok:
        failures += 1
    label = f"python {transport}: {check}"
    print(f"{'PASS' if ok else 'FAIL'}  {label:<52} ({detail})", flush=True)


def describe(error: BaseException) -> str:
    """One line for an exception, unwrapping exception groups (anyio task groups)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    text = " ".join(str(error).split())
    text = re.sub(r" ?For further information visit \S+", "", text)
    if len(text) > 400:
        text = text[:400] + "…"
    return f"{type(error).__name__}: {text}"


def result_text(result: Any) -> str:
    """Everything a tool result says, as text: its content blocks and structured content."""
    parts = [json.dumps(result.structured_content)] if result.structured_content is not None else []
    for block in result.content:
        parts.append(getattr(block, "text", None) or block.model_dump_json())
    return "\n".join(parts)


async def call_check(client: Client, transport: str, tool: str) -> None:
    check = f"tools/call {tool}"
    try:
        with anyio.fail_after(REQUEST_TIMEOUT):
            result = await client.call_tool(tool, {"customerId": CUSTOMER})
    except Exception as e:  # noqa: BLE001 - every failure is a finding to print
        report(False, transport, check, describe(e))
        return
    text = result_text(result)
    if result.is_error:
        report(False, transport, check, f"isError: {' '.join(text.split())[:300]}")
    elif CUSTOMER not in text:
        report(False, transport, check, f"the result does not mention {CUSTOMER}: {text[:200]}")
    else:
        # A composite names the outcome of each step (a degraded one still succeeds).
        sources = (result.meta or {}).get("sources") or []
        steps = "; steps " + ", ".join(f"{s.get('step')} {s.get('outcome')}" for s in sources) if sources else ""
        report(True, transport, check, f"isError=false, mentions {CUSTOMER}, {len(text)} chars{steps}")


async def exercise(transport: str, connect: Callable[[], Client]) -> None:
    checks = ["connect", "tools/list", f"tools/call {PASS_THROUGH}", f"tools/call {COMPOSITE}"]
    done: list[str] = []

    async def run() -> None:
        async with connect() as client:
            server = client.server_info
            report(
                True,
                transport,
                "connect",
                f"protocol {client.protocol_version}, server "
                f"{server.name if server else '?'} {server.version if server else ''}".rstrip(),
            )
            done.append("connect")

            names: list[str] = []
            try:
                cursor = None
                with anyio.fail_after(REQUEST_TIMEOUT):
                    while True:
                        page = await client.list_tools(cursor=cursor)
                        names += [t.name for t in page.tools]
                        cursor = page.next_cursor
                        if not cursor:
                            break
            except Exception as e:  # noqa: BLE001
                report(False, transport, "tools/list", describe(e))
            else:
                missing = [n for n in (PASS_THROUGH, COMPOSITE) if n not in names]
                if missing:
                    report(False, transport, "tools/list", f"{len(names)} tools, missing {', '.join(missing)}: {names}")
                else:
                    report(True, transport, "tools/list", f"{len(names)} tools, {PASS_THROUGH} and {COMPOSITE} among them")
            done.append("tools/list")

            for tool in (PASS_THROUGH, COMPOSITE):
                await call_check(client, transport, tool)
                done.append(f"tools/call {tool}")

    try:
        with anyio.fail_after(TRANSPORT_TIMEOUT):
            await run()
    except Exception as e:  # noqa: BLE001 - a failed connect (or teardown) fails what is left
        reason = describe(e)
        left = [c for c in checks if c not in done]
        for check in left:
            report(False, transport, check, reason if check == left[0] else "not run: " + left[0] + " failed")
        if not left:
            report(False, transport, "disconnect", reason)


async def main(args: argparse.Namespace) -> None:
    if args.stdio:
        binary, config = args.stdio
        env = dict(kv.split("=", 1) for kv in args.stdio_env)
        params = StdioServerParameters(command=binary, args=["serve", "--config", config], env=env)
        with open(args.stdio_log, "a") if args.stdio_log else open(os.devnull, "w") as errlog:
            await exercise("stdio", lambda: Client(stdio_client(params, errlog=errlog), read_timeout_seconds=REQUEST_TIMEOUT))
    if args.http:
        token = os.environ.get("CLIENTS_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else None
        async with create_mcp_http_client(headers=headers) as http:
            await exercise(
                "http",
                lambda: Client(streamable_http_client(args.http, http_client=http), read_timeout_seconds=REQUEST_TIMEOUT),
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stdio", nargs=2, metavar=("BIN", "CONFIG"), help="run `BIN serve --config CONFIG` over stdio")
    parser.add_argument("--stdio-env", action="append", default=[], metavar="KEY=VALUE", help="extra environment for BIN")
    parser.add_argument("--stdio-log", metavar="FILE", help="append the stdio orchestrator's stderr here")
    parser.add_argument("--http", metavar="URL", help="the orchestrator's streamable-HTTP endpoint")
    parsed = parser.parse_args()
    if not parsed.stdio and not parsed.http:
        parser.error("give --stdio and/or --http")
    anyio.run(main, parsed)
    sys.exit(1 if failures else 0)
