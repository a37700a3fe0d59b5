"""An MCP agent on the official Python SDK (`mcp` on PyPI), driven by the e2e tests
(tests/tests/mcp): it connects to `host mcp` over stdio or to `host serve --mcp` over
Streamable HTTP, runs one scenario and prints what it saw as one JSON object on stdout.
The tests judge it; this script only records (tool results, protocol errors, tool names).

    agent.py --stdio HOST_BIN --socket PATH [--write] SCENARIO ...
    agent.py --url URL [--token TOKEN] SCENARIO ...

Scenarios: `read ID` (every read tool on sandbox ID, the prompt, bad input, write tools
tried), `agent ID LIB1 LIB2` (create from LIB1, call, reload LIB2, call, destroy),
`verdict ID` (a verdict that agrees with the kernel and one that contradicts it),
`reload_dir ID DIR` (reload from an app crate directory, then call), `insights` (the
resources: list them, read the collection, the first insight and one that does not exist).
"""

import argparse
import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

READ_TOOLS = [
    "list_sandboxes",
    "sandbox_info",
    "sandbox_usage",
    "sandbox_workers",
    "recent_events",
    "detector_anomalies",
    "snapshot",
    "isolation_report",
]


def attr(obj, snake, camel):
    """A result field by its 2.x (snake_case) or 1.x (camelCase) name."""
    return getattr(obj, snake) if hasattr(obj, snake) else getattr(obj, camel)


async def tool(session, name, arguments):
    """One tools/call: the result as plain data, or the protocol error."""
    try:
        r = await session.call_tool(name, arguments)
    except MCPError as e:
        return {"protocol_error": {"code": e.error.code, "message": e.error.message}}
    text = [c.text for c in r.content if getattr(c, "type", None) == "text"]
    return {
        "is_error": bool(attr(r, "is_error", "isError")),
        "structured": attr(r, "structured_content", "structuredContent"),
        "text": text,
    }


async def read(session, sandbox, huge=True):
    out = {}
    for name in READ_TOOLS:
        args = {} if name == "list_sandboxes" else {"sandbox_id": sandbox}
        if name == "recent_events":
            args["limit"] = 5
        out[name] = await tool(session, name, args)
    prompts = await session.list_prompts()
    out["prompts"] = [p.name for p in prompts.prompts]
    got = await session.get_prompt("judge_sandbox", {"sandbox_id": sandbox})
    out["prompt_text"] = [m.content.text for m in got.messages]
    # Bad input: never a crash, always an MCP error (a protocol error or an error result).
    out["bad"] = {
        "unknown_tool": await tool(session, "no_such_tool", {}),
        "wrong_type": await tool(session, "sandbox_info", {"sandbox_id": 12}),
        "missing_arg": await tool(session, "sandbox_usage", {}),
        "path_id": await tool(session, "sandbox_info", {"sandbox_id": "../../etc/passwd"}),
        "unknown_sandbox": await tool(session, "sandbox_usage", {"sandbox_id": "nobody-here"}),
    }
    out["write_tries"] = {
        "destroy_sandbox": await tool(session, "destroy_sandbox", {"sandbox_id": sandbox}),
        "create_sandbox": await tool(
            session, "create_sandbox", {"sandbox_id": "mcp-x", "library": "/nonexistent.so"}
        ),
    }
    if huge:
        out["bad"]["huge_arg"] = await huge_arg(session)
    # Still alive after all that.
    out["after"] = await tool(session, "list_sandboxes", {})
    return out


async def huge_arg(session):
    """A 2 MiB argument: an error result over stdio, a 413 over HTTP."""
    return await tool(session, "snapshot", {"sandbox_id": "x" * (2 << 20)})


async def agent(session, sandbox, lib1, lib2):
    steps = []

    async def step(name, arguments):
        r = await tool(session, name, arguments)
        steps.append({"tool": name, **r})
        return r

    await step("create_sandbox", {"sandbox_id": sandbox, "library": lib1})
    await step("call_function", {"sandbox_id": sandbox, "function": "answer"})
    await step("reload_sandbox", {"sandbox_id": sandbox, "library": lib2})
    await step("call_function", {"sandbox_id": sandbox, "function": "answer"})
    await step("snapshot", {"sandbox_id": sandbox})
    await step("call_function", {"sandbox_id": sandbox, "function": "no_such_function"})
    await step("reload_sandbox", {"sandbox_id": sandbox, "library": "relative/lib.so"})
    await step("destroy_sandbox", {"sandbox_id": sandbox})
    await step("list_sandboxes", {})
    return {"steps": steps}


async def verdict(session, sandbox):
    calm = {"sandbox_id": sandbox, "state": "healthy", "summary": "sandbox stable"}
    alarm = {
        "sandbox_id": sandbox,
        "state": "critical",
        "summary": "everything is on fire",
        "notifications": [{"severity": "critical", "summary": "fire", "type": "process_spike"}],
    }
    warns = {
        "sandbox_id": sandbox,
        "state": "warning",
        "summary": "process count elevated",
        "notifications": [
            {"severity": "warning", "summary": "process count elevated", "type": "process_spike"}
        ],
    }
    return {
        "agrees": await tool(session, "report_verdict", calm),
        "warns": await tool(session, "report_verdict", warns),
        "contradicts": await tool(session, "report_verdict", alarm),
        "bad_state": await tool(session, "report_verdict", {"sandbox_id": sandbox, "state": "fine"}),
    }


async def read_resource(session, uri):
    """One resources/read: the text contents, or the protocol error."""
    try:
        r = await session.read_resource(uri)
    except MCPError as e:
        return {"protocol_error": {"code": e.error.code, "message": e.error.message}}
    return {"texts": [c.text for c in r.contents if hasattr(c, "text")]}


async def insights(session):
    listed = await session.list_resources()
    uris = [str(r.uri) for r in listed.resources]
    out = {"resources": uris, "collection": await read_resource(session, "sandbox-host://insights")}
    one = [u for u in uris if u.startswith("sandbox-host://insights/")]
    if one:
        out["first"] = await read_resource(session, one[0])
    out["missing"] = await read_resource(session, "sandbox-host://insights/0000000000000000")
    return out


async def run(session, args):
    init = await session.initialize()
    tools = await session.list_tools()
    report = {
        "server": attr(init, "server_info", "serverInfo").name,
        "protocol": attr(init, "protocol_version", "protocolVersion"),
        "tools": [t.name for t in tools.tools],
        "schemas": {t.name: attr(t, "input_schema", "inputSchema") for t in tools.tools},
    }
    s = args.scenario
    if s[0] == "read":
        report.update(await read(session, s[1], huge=not args.url))
    elif s[0] == "agent":
        report.update(await agent(session, s[1], s[2], s[3]))
    elif s[0] == "reload_dir":
        report["reload"] = await tool(
            session, "reload_sandbox", {"sandbox_id": s[1], "app_dir": s[2]}
        )
        report["call"] = await tool(
            session, "call_function", {"sandbox_id": s[1], "function": "answer"}
        )
    elif s[0] == "verdict":
        report.update(await verdict(session, s[1]))
    elif s[0] == "insights":
        report.update(await insights(session))
    elif s[0] != "init":
        raise SystemExit(f"unknown scenario {s[0]}")
    return report


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--stdio", metavar="HOST_BIN")
    p.add_argument("--socket")
    p.add_argument("--write", action="store_true")
    p.add_argument("--url")
    p.add_argument("--token")
    p.add_argument("scenario", nargs="+")
    args = p.parse_args()
    if args.stdio:
        cmd = ["mcp", "--socket", args.socket] + (["--write"] if args.write else [])
        params = StdioServerParameters(command=args.stdio, args=cmd)
        async with stdio_client(params) as (r, w), ClientSession(r, w) as session:
            report = await run(session, args)
    else:
        report = await over_http(args, run)
        if args.scenario[0] == "read":
            # Over HTTP the server answers a body past its cap with 413 before reading it
            # whole, and may close the connection under the sender: a session of its own,
            # whose end, error or not, is recorded.
            try:
                huge = await over_http(args, initialized_huge_arg)
            except Exception as e:  # noqa: BLE001 - what the client saw is the record
                huge = {"transport_error": f"{type(e).__name__}: {e}"}
            report["bad"]["huge_arg"] = huge
    print(json.dumps(report))


async def initialized_huge_arg(session, _args):
    await session.initialize()
    return await huge_arg(session)


async def log_refusal(response):
    """For a test's failure message: what the server refused, and why."""
    if response.status_code >= 400:
        await response.aread()
        sent = response.request.content[:200]
        auth = "with" if "authorization" in response.request.headers else "without"
        print(
            f"HTTP {response.status_code} {response.request.method} {response.url} "
            f"({auth} a token; sent {sent!r}): {response.text[:500]}",
            file=sys.stderr,
        )


async def over_http(args, body):
    """Runs `body(session, args)` in a session over Streamable HTTP."""
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    async with create_mcp_http_client(headers=headers) as http:
        http.event_hooks["response"] = [log_refusal]
        async with streamable_http_client(args.url, http_client=http) as streams:
            r, w = streams[0], streams[1]
            async with ClientSession(r, w) as session:
                return await body(session, args)


if __name__ == "__main__":
    asyncio.run(main())
