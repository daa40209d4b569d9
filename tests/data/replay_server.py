"""A scripted MCP server on stdio for the hostile-input tests (Python 3 stdlib only).

It logs every line it receives, byte for byte, to the file named by its one argument, and
acts on what it reads:

  notification "notifications/replay/say"    write bytes.fromhex(params.hex) to stdout verbatim
  notification "notifications/replay/flood"  write params.prefix, then params.n bytes of "x" in
                                              64 KiB chunks, then params.suffix and a newline:
                                              one long line, streamed, never held whole
  request "replay/hold"                       do not answer
  request whose params (or, for tools/call, arguments) have a member "hold": do not answer
                                              (the test answers with .../say)
  request "tools/list"                        answer with {"tools": [...]} naming each entry of
                                              the --tools option (comma separated)
  any other request                           answered with {"echo": <the raw line, minus "\\n">}
  anything else (notifications, responses, lines that are not JSON) is only logged

The control notifications are how a test makes the server send an exact byte sequence, so it
can play the hostile server without a second channel. Lines are parsed the way the Python SDK
parses them (json.loads: a key given twice keeps its last value).
"""

import json
import sys


def main():
    log = open(sys.argv[1], "ab")
    tools = []
    if len(sys.argv) > 3 and sys.argv[2] == "--tools":
        tools = [name for name in sys.argv[3].split(",") if name]
    while True:
        raw = sys.stdin.buffer.readline()
        if not raw:
            return
        log.write(raw)
        log.flush()
        try:
            msg = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if not isinstance(msg, dict):
            continue
        method = msg.get("method")
        params = msg.get("params")
        if not isinstance(params, dict):
            params = {}
        if method == "notifications/replay/say":
            out(bytes.fromhex(params["hex"]))
        elif method == "notifications/replay/flood":
            out(params.get("prefix", "").encode())
            chunk = b"x" * 65536
            left = params["n"]
            while left > 0:
                out(chunk[: min(left, len(chunk))])
                left -= len(chunk)
            out(params.get("suffix", "").encode() + b"\n")
        elif "id" not in msg or not isinstance(method, str):
            continue
        elif method == "replay/hold" or held_call(method, params):
            continue
        elif method == "tools/list":
            listed = [{"name": name, "inputSchema": {"type": "object"}} for name in tools]
            answer(msg["id"], {"tools": listed})
        else:
            answer(msg["id"], {"echo": raw.decode("utf-8", "surrogateescape").removesuffix("\n")})


def held_call(method, params):
    arguments = params.get("arguments")
    return "hold" in params or (method == "tools/call" and isinstance(arguments, dict)
                                and "hold" in arguments)


def answer(rid, result):
    body = {"jsonrpc": "2.0", "id": rid, "result": result}
    line = json.dumps(body, ensure_ascii=False, separators=(",", ":")) + "\n"
    out(line.encode("utf-8", "surrogatepass"))


def out(data):
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
