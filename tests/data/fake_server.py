"""A scripted fake MCP server on stdio for mcpdome's integration tests (Python 3 stdlib only).

It reads one JSON-RPC message per line from stdin and acts on its method. Every answer is one
line written with a single write and flushed, so the tests can predict stdout exactly.

Methods (request = has an id; a notification gets the same action without the answer):

  fake/say      write params.out to stdout verbatim (the test supplies every byte, newlines too)
  fake/reply    answer with params.raw written verbatim instead of a generated response
  fake/stderr   write params.text to stderr verbatim, then answer
  fake/hold     do not answer yet
  fake/release  answer every held request (oldest first), then this one
  fake/twice    answer twice
  fake/crash    exit with status params.code (default 3) without answering
  fake/roots    send the client {"jsonrpc":"2.0","id":0,"method":"roots/list"}; when the client's
                response with id 0 arrives, answer with {"client_said": <that raw line>}
  fake/closein  close stdin, answer, and keep running without reading (until a signal ends us)
  fake/big      answer with {"pad": "x" * params.n}
  fake/sample   send the client {"jsonrpc":"2.0","id":"sample-<our id>","method":
                <params.method, default "sampling/createMessage">,"params":params.request};
                when a response with that id arrives (the client's answer, or mcpdome's
                error), answer with {"client_said": <that raw line>}
  fake/sigmask  answer with {"blocked": <SigBlk of /proc/self/status: the blocked signals, hex>}
  fake/spawn    start `sleep 60` as a child that outlives us (stdin/stderr to /dev/null, stdout
                to /dev/null unless params.keep_stdout, stdin ours if params.keep_stdin), write
                its pid to params.pidfile, then answer with {"pid": <its pid>, "parent": <our pid>}
  fake/pid      answer with {"pid": <our pid>}
  fake/die      write params.out verbatim (half a line, say), then SIGKILL ourselves
  fake/deaf     stop reading for good: sleep params.delay seconds, write params.out verbatim,
                then params.n notifications/message lines like fake/flood's, then answer, then
                sleep until a signal ends us
  fake/exit     stop reading, sleep params.delay seconds, then exit with status params.code
  fake/progress send params.count notifications/progress for params.token, one every
                params.every seconds, then answer with {"progressed": params.count}
  fake/flood    write params.n notifications/message lines, each with params.seq = 0, 1, ... and
                a pad of params.size bytes, as fast as the pipe takes them, then answer with
                {"sent": params.n}
  anything else answered with {"echo": <the raw request line, minus its "\\n">}; notifications
                and responses are only logged

Flags:
  --log FILE      append every line received, byte for byte, to FILE (flushed before acting)
  --stderr TEXT   write TEXT and a newline to stderr at start
  --eof-exit N    on stdin EOF, answer held requests and exit with status N (default 0)
  --ignore-eof    on stdin EOF, keep running without answering anything
  --ignore-term   ignore SIGTERM (inherited by fake/spawn's child), so only SIGKILL ends us
  --tools A,B,... answer tools/list with {"tools": [{"name": "A", "inputSchema": {"type":
                  "object"}}, ...]} instead of the echo (tools/call is still echoed)
  --tools-file F  answer tools/list with the contents of F (a JSON result object, e.g.
                  {"tools": [...]}) written verbatim; F is read again for every tools/list, so
                  a test changes the list by rewriting F (a rug pull)
  --results-file F  F holds {"<tool name>": <result object>, ...}, read again for every call: a
                  tools/call of a tool named in F is answered with its result (other calls are
                  still echoed); a key with a slash names a method (e.g. "prompts/list")
                  answered with its result the same way. A result given as a JSON string is
                  written verbatim as the result's text (for bytes json.dumps cannot write,
                  such as a lone surrogate escape)
  --instructions TEXT  answer initialize with a minimal InitializeResult whose `instructions`
                  is TEXT (without this flag initialize is echoed)
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--log")
    parser.add_argument("--stderr")
    parser.add_argument("--eof-exit", type=int, default=0)
    parser.add_argument("--ignore-eof", action="store_true")
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--tools")
    parser.add_argument("--tools-file")
    parser.add_argument("--results-file")
    parser.add_argument("--instructions")
    opts = parser.parse_args()

    if opts.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if opts.stderr is not None:
        err(opts.stderr + "\n")
    log = open(opts.log, "ab") if opts.log else None

    held = []  # (id, raw line) of requests not answered yet
    waiting_roots = []  # ids of fake/roots requests waiting for the client's answer
    waiting_samples = {}  # id of a request fake/sample sent the client -> id of the fake/sample

    while True:
        raw = sys.stdin.buffer.readline()
        if not raw:
            break
        if log:
            log.write(raw)
            log.flush()
        try:
            msg = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(msg, dict):
            continue
        method = msg.get("method")
        has_id = "id" in msg
        rid = msg.get("id")
        params = msg.get("params") or {}
        if method is None:
            # A response from the client, to our roots/list.
            if rid == 0 and waiting_roots:
                answer(waiting_roots.pop(0), {"client_said": text(raw)})
            elif isinstance(rid, str) and rid in waiting_samples:
                answer(waiting_samples.pop(rid), {"client_said": text(raw)})
            continue

        if method == "fake/say":
            out(params["out"].encode())
        elif method == "fake/crash":
            sys.exit(params.get("code", 3))
        elif method == "fake/die":
            out(params["out"].encode())
            os.kill(os.getpid(), signal.SIGKILL)
        elif method == "fake/deaf":
            time.sleep(params["delay"])
            out(params["out"].encode())
            flood(params["n"], params["size"])
            answer(rid, {"sent": params["n"]})
            while True:
                time.sleep(3600)
        elif method == "fake/exit":
            time.sleep(params["delay"])
            sys.exit(params["code"])
        elif not has_id:
            continue
        elif method == "fake/reply":
            out(params["raw"].encode())
        elif method == "fake/stderr":
            err(params["text"])
            answer(rid, {"echo": text(raw)})
        elif method == "fake/hold":
            held.append((rid, raw))
        elif method == "fake/release":
            for hid, hraw in held:
                answer(hid, {"echo": text(hraw)})
            held.clear()
            answer(rid, {"echo": text(raw)})
        elif method == "fake/twice":
            answer(rid, {"echo": text(raw)})
            answer(rid, {"echo": text(raw)})
        elif method == "fake/roots":
            waiting_roots.append(rid)
            out(b'{"jsonrpc":"2.0","id":0,"method":"roots/list"}\n')
        elif method == "fake/sample":
            sid = "sample-%s" % dumps(rid)
            waiting_samples[sid] = rid
            request = {"jsonrpc": "2.0", "id": sid}
            request["method"] = params.get("method", "sampling/createMessage")
            request["params"] = params.get("request", {})
            out((dumps(request) + "\n").encode())
        elif method == "tools/list" and opts.tools_file is not None:
            with open(opts.tools_file, "rb") as f:
                body = f.read().strip()
            out(b'{"jsonrpc":"2.0","id":' + dumps(rid).encode() + b',"result":' + body + b"}\n")
        elif method == "tools/call" and opts.results_file is not None and called(opts, params):
            with open(opts.results_file) as f:
                canned(rid, json.load(f)[params["name"]])
        elif "/" in method and opts.results_file is not None and method in results(opts):
            canned(rid, results(opts)[method])
        elif method == "initialize" and opts.instructions is not None:
            answer(rid, {
                "protocolVersion": "2025-06-18",
                "capabilities": {"tools": {"listChanged": True}},
                "serverInfo": {"name": "fake", "version": "0"},
                "instructions": opts.instructions,
            })
        elif method == "tools/list" and opts.tools is not None:
            names = [name for name in opts.tools.split(",") if name]
            tools = [{"name": name, "inputSchema": {"type": "object"}} for name in names]
            answer(rid, {"tools": tools})
        elif method == "fake/big":
            answer(rid, {"pad": "x" * params["n"]})
        elif method == "fake/closein":
            os.close(0)
            answer(rid, {"echo": text(raw)})
            while True:
                time.sleep(3600)
        elif method == "fake/pid":
            answer(rid, {"pid": os.getpid()})
        elif method == "fake/progress":
            for n in range(params["count"]):
                time.sleep(params["every"])
                note = {"jsonrpc": "2.0", "method": "notifications/progress",
                        "params": {"progressToken": params["token"], "progress": n + 1}}
                out((dumps(note) + "\n").encode())
            answer(rid, {"progressed": params["count"]})
        elif method == "fake/flood":
            flood(params["n"], params["size"])
            answer(rid, {"sent": params["n"]})
        elif method == "fake/sigmask":
            answer(rid, {"blocked": status_field("SigBlk")})
        elif method == "fake/spawn":
            keep = params.get("keep_stdout", False)
            child = subprocess.Popen(
                ["sleep", "60"],
                stdin=None if params.get("keep_stdin", False) else subprocess.DEVNULL,
                stdout=None if keep else subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            with open(params["pidfile"], "w") as f:
                f.write(str(child.pid))
            answer(rid, {"pid": child.pid, "parent": os.getpid()})
        else:
            answer(rid, {"echo": text(raw)})

    if opts.ignore_eof:
        while True:
            time.sleep(3600)
    for hid, hraw in held:
        answer(hid, {"echo": text(hraw)})
    sys.exit(opts.eof_exit)


def flood(n, size):
    """Writes n notifications/message lines with seq 0, 1, ... and a pad of size bytes."""
    pad = "x" * size
    for seq in range(n):
        note = '{"jsonrpc":"2.0","method":"notifications/message","params":{"seq":%d,"pad":"%s"}}\n'
        sys.stdout.buffer.write((note % (seq, pad)).encode())
    sys.stdout.buffer.flush()


def results(opts):
    with open(opts.results_file) as f:
        return json.load(f)


def canned(rid, result):
    """Answers with a result from --results-file: a string is the result's raw text."""
    if isinstance(result, str):
        out(b'{"jsonrpc":"2.0","id":' + dumps(rid).encode() + b',"result":' + result.encode() + b"}\n")
    else:
        answer(rid, result)


def called(opts, params):
    """Whether --results-file has a result for the tool this tools/call names."""
    with open(opts.results_file) as f:
        return params.get("name") in json.load(f)


def status_field(name):
    """A field of /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == name:
                return value.strip()
    return None


def text(raw):
    """The line as a string, without its trailing newline (a CR before it stays)."""
    return raw.decode("utf-8", "surrogateescape").removesuffix("\n")


def dumps(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def answer(rid, result):
    line = '{"jsonrpc":"2.0","id":%s,"result":%s}\n' % (dumps(rid), dumps(result))
    out(line.encode("utf-8", "surrogateescape"))


def out(data):
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def err(data):
    sys.stderr.write(data)
    sys.stderr.flush()


if __name__ == "__main__":
    main()
