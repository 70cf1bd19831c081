"""The examples of README.md and the man pages, pasted literally.

Every example a reader may paste is taken from the documents themselves (a
fenced block in Markdown, a `.Bd -literal` display in mdoc) and run:

  - a netproxyd config (Lua) through `netproxyd -t`, which must pass without
    a warning;
  - an HAProxy config through `haproxy -c`, which must report neither a
    warning nor an alert;
  - a systemd unit through `systemd-analyze verify`, which must say nothing;
  - a C program through the compiler, with -Wall -Wextra -Werror;
  - every shell command, in the order of the document, as one reader's
    shell session, with its exit status checked and its output compared with
    the output the document shows.

Each document gets a sandbox of its own, as a new user on a fresh Debian
would have it: `unshare` makes a mount, network and PID namespace (lo up,
nothing else listening), /etc is an overlay whose writes vanish with it,
/usr/local an empty tmpfs into which `make install` installs the build (and
no netproxyd user, which a package may have added to the host), and
the shell's descriptor limits are the kernel's defaults (1024 soft, 4096
hard). So a command runs exactly as written, with the ports, paths
(/etc/netproxyd.conf.lua, /usr/local/bin/netproxyd) and `pidof` it names,
and nothing here can touch the host or another test.

How a block is read, and what a document may say about it in a comment
right before it (`<!-- doctest: ... -->` in Markdown, `.\\" doctest: ...`
in mdoc; a reader never sees either):

    skip: REASON          not run, for REASON (shown in the test's output)
    file PATH             the block is the file PATH: written there, then
                          checked as its kind says (Lua, HAProxy, unit, C)
    append PATH           appended to PATH (a later Lua global replaces an
                          earlier one), then PATH is checked
    global-section PATH   inserted in the global section of the Prosody
                          config PATH (before its first VirtualHost), then
                          PATH is checked
    prepend: TEXT         a fragment: checked with TEXT in front of it
    prosody-global: LUA   LUA goes into the global section of Prosody's
                          /etc/prosody/prosody.cfg.lua first (a line each)
    same-as PATH          `netproxyd -t` says of the block what it says of
                          PATH, a file of the source tree
    setup: COMMAND        COMMAND runs in the session first: a prerequisite
                          the text states in words
    haproxy-fragment      checked within the document's last complete HAProxy
                          config, in place of its sections of the same names
    numbers vary          in the output shown, any number stands for any
                          number (times, sizes)

The kind of a Markdown block is its fence's language (sh, lua, haproxy, ini,
c); an mdoc display is a shell session when it starts with a prompt
(`$ `, or `# ` for root), and otherwise is recognised by its content. Other
displays (log lines, output shown on its own) are text, and not run.

In a shell session, a line after a prompt is a command, continued over the
following lines while bash finds it incomplete (a trailing backslash, pipe
or `&&`, an open quote); the lines up to the next prompt are its output. In
that output, folded lines (indented) are joined, `...` or `…` stands for
anything, and a line of its own `...` for any lines. A command that would
stay in the foreground (`netproxyd -c ...`) runs as in a second terminal:
in the background until the next one replaces it (the first gets SIGTERM, a
reader's Ctrl-C), its output compared once it says "running:". A command
that ends in `&` is a job of the session's shell, as in a reader's; the
next command waits (3 s at most) for a server it starts to listen, and the
output shown after it is what it prints meanwhile, awaited (60 s at most).

What a document assumes around it, the test provides (SCENARIOS below): a
server where it says one listens, a file it says was captured. The one
liberty taken: netproxy-bench's measurements run for 1 second instead of
the 5 they ask for. Everything is bounded in time; the sandbox and every
process in it end with the session.
"""
import base64
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SESSION_TIMEOUT = 300      # seconds for one document's whole session
STEP_WAIT = 60             # seconds a step may wait for a daemon or an output

# The documents whose examples run here. man/libnetproxy_preload.8 is left
# out: its examples are servers run in the foreground (Prosody, python3 -m
# http.server), which a session cannot tell when to end.
DOCS = ["README.md", "man/netproxy-send.1", "man/netproxy-dump.1", "man/netproxy-bench.1",
        "man/libnetproxy.3", "man/netproxyd.8", "man/netproxyd.conf.5"]


def build_dir():
    return Path(os.environ.get("NETPROXY_BUILD") or REPO / "build").resolve()


# --- the documents' blocks -------------------------------------------------------


@dataclass
class Block:
    doc: str
    line: int           # of the first line of the block's text, 1-based
    lang: str           # a Markdown fence's language, or ""
    text: str
    marks: list = field(default_factory=list)
    kind: str = ""

    @property
    def where(self):
        return f"{self.doc}:{self.line}"

    def mark(self, name):
        """The argument of mark `name` ("" when given bare), or None."""
        for m in self.marks:
            if m == name:
                return ""
            for sep in (" ", ": "):
                if m.startswith(name + sep):
                    return m[len(name) + len(sep):].strip()
        return None


def markdown_blocks(doc, text):
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(```+)(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.groups()
        marks, k = [], i - 1
        while k >= 0 and (c := re.match(r"^\s*<!--\s*doctest:\s*(.*?)\s*-->\s*$", lines[k])):
            marks.insert(0, c.group(1))
            k -= 1
        body, j = [], i + 1
        while j < len(lines) and not re.match(rf"^\s*{fence}\s*$", lines[j]):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
            j += 1
        yield Block(doc, i + 2, lang, "\n".join(body) + "\n", marks)
        i = j + 1


def unroff(line):
    return line.replace("\\e", "\\").replace("\\&", "")


def mdoc_blocks(doc, text):
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not re.match(r"^\.Bd\s+-literal\b", line):
            continue
        marks, k = [], i - 1
        while k >= 0 and (c := re.match(r'^\.\\"\s*doctest:\s*(.*?)\s*$', lines[k])):
            marks.insert(0, c.group(1))
            k -= 1
        body, j = [], i + 1
        while not lines[j].startswith(".Ed"):
            if not lines[j].startswith('.\\"'):
                body.append(unroff(lines[j]))
            j += 1
        yield Block(doc, i + 2, "", "\n".join(body) + "\n", marks)


LUA_KEYS = re.compile(r"^(proxy_\w+|services|Include|user|group|workers|max_connections|"
                      r"log_level|log_syslog|local function)\b", re.M)


def classify(block):
    if block.mark("skip") is not None:
        return "skip"
    known = {"sh": "sh", "lua": "lua", "haproxy": "haproxy", "ini": "ini", "c": "c"}
    if block.lang:
        return known.get(block.lang, "text")
    first = block.text.lstrip("\n").split("\n", 1)[0]
    if first.startswith(("$ ", "# ")) and not first.startswith("# /"):
        return "sh"
    if re.search(r"^(global|defaults)\s*$|^(frontend|backend|listen) [\w.-]+\s*$", block.text,
                 re.M):
        return "haproxy"
    if "#include" in block.text:
        return "c"
    if re.match(r"^\[(Unit|Service|Install)\]", first):
        return "ini"
    if LUA_KEYS.search(block.text) and "=" in block.text and "->" not in block.text:
        return "lua"
    return "text"


def blocks_of(doc):
    text = (REPO / doc).read_text()
    found = list(markdown_blocks(doc, text) if doc.endswith(".md") else mdoc_blocks(doc, text))
    for b in found:
        b.kind = classify(b)
    return found


# --- shell sessions: commands and the output shown after them ---------------------


@dataclass
class Command:
    text: str
    expected: list      # the output lines shown, folded as written
    line: int


def incomplete(cmd):
    """Whether bash would read another line to finish cmd."""
    if cmd.endswith("\\"):
        return True
    r = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
    return r.returncode != 0 and ("unexpected end of file" in r.stderr
                                  or "unexpected EOF" in r.stderr)


def commands_of(block):
    lines = block.text.rstrip("\n").split("\n")
    prompted = any(re.match(r"^[$#] ", ln) for ln in lines)
    out, i = [], 0
    while i < len(lines):
        ln = lines[i]
        if prompted and not re.match(r"^[$#] ", ln):
            if out:
                out[-1].expected.append(ln)
            i += 1
            continue
        if not ln.strip():
            i += 1
            continue
        start = i
        cmd = ln[2:] if prompted else ln
        while incomplete(cmd) and i + 1 < len(lines):
            i += 1
            cmd += "\n" + lines[i]
        out.append(Command(cmd, [], block.line + start))
        i += 1
    return out


def expected_regex(lines, numbers_vary=False, fold=True):
    """A regex for the whole output, from the lines a document shows; with
    fold, an indented line continues the one before (a line folded to fit
    the page), else it is a line of its own."""
    joined = []
    for ln in lines:
        if fold and joined and re.match(r"^\s+\S", ln) and joined[-1] not in ("...", "…"):
            joined[-1] += " " + ln.strip()
        else:
            joined.append(ln.rstrip())
    parts = []
    for ln in joined:
        if ln.strip() in ("...", "…"):
            parts.append(r"(?:[^\n]*\n)*?")
            continue
        pieces = re.split(r"\.\.\.|…", re.sub(r"[ \t]+", " ", ln))
        rx = r".*?".join(re.escape(p) for p in pieces)
        if numbers_vary:
            rx = re.sub(r"(?:\\\.)?\d+(?:\\\.\d+)*", r"[0-9.]+", rx)
        parts.append(rx + r"\n")
    return "".join(parts), joined


def foreground_daemon(cmd):
    """Whether cmd is netproxyd run in the foreground (a daemon, not -t)."""
    words = shlex.split(cmd.replace("\\\n", " "), comments=True)
    while words and re.match(r"^\w+=", words[0]):
        words.pop(0)
    if not words or Path(words[0]).name != "netproxyd" or cmd.rstrip().endswith("&"):
        return False
    return not {"-t", "--test", "--setup-routing", "-h", "--help", "--version"} & set(words)


# --- the session script -----------------------------------------------------------

PRELUDE = r"""
set +e +m
T=%(results)s
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=$T/home LANG=C.UTF-8 LC_ALL=C.UTF-8
unset LD_PRELOAD NOTIFY_SOCKET LISTEN_FDS LISTEN_PID
mkdir -p "$HOME"
# What a login without systemd gets: the kernel's limits on descriptors.
ulimit -Sn 1024; ulimit -Hn 4096
waitfor() {  # FILE TEXT SECONDS: until FILE contains TEXT
	local i=0
	while [ $i -lt $(($3 * 10)) ]; do
		grep -qF -- "$2" "$1" 2>/dev/null && return 0
		sleep 0.1; i=$((i + 1))
	done
	return 1
}
listening() {  # COUNT SECONDS: until more than COUNT sockets listen (or not)
	local i=0
	while [ $(ss -Hltn | wc -l) -le $1 ] && [ $i -lt $(($2 * 10)) ]; do
		sleep 0.1; i=$((i + 1))
	done
	return 0
}
FG=
fg_stop() {  # a reader's Ctrl-C in the other terminal
	[ -n "$FG" ] || return 0
	# Not within a millisecond of the last command, as no reader could: a
	# SIGTERM that comes while a reload is being evaluated stops it unfinished.
	sleep 0.3
	kill -TERM $FG 2>/dev/null
	local i=0
	while kill -0 $FG 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	FG=
}
cd "$T/cwd"
"""


def b64(text):
    data = text if isinstance(text, bytes) else text.encode()
    return base64.b64encode(data).decode()


class Session:
    """The steps of one document, as one bash script run in a sandbox."""

    def __init__(self, doc, results):
        self.doc, self.results = doc, Path(results)
        self.script = [PRELUDE % {"results": shlex.quote(str(results))}]
        self.steps = []          # (number, where, what, check(out, rc) -> error or None)
        self.last_haproxy = None

    def step(self, where, what, body, check):
        n = len(self.steps) + 1
        out = f'"$T/{n}.out"'
        self.script.append(f"# step {n}: {where}: {what}\n"
                           f"{{ {body}\n}} >{out} 2>&1 </dev/null; echo $? >\"$T/{n}.rc\"\n")
        self.steps.append((n, where, what, check))
        return n

    def raw(self, text):
        self.script.append(text + "\n")

    # files and their checks

    def write(self, path, text, how="file"):
        q = shlex.quote(path)
        mk = f"mkdir -p \"$(dirname {q})\"; "
        if how == "file":
            return mk + f"printf %s {b64(text)} | base64 -d > {q}"
        if how == "append":
            return mk + f"printf %s {b64(text)} | base64 -d >> {q}"
        if how == "global-section":
            return ("/usr/bin/python3 -c 'import base64, re, sys; p = sys.argv[1]; "
                    "t = open(p).read(); add = base64.b64decode(sys.argv[2]).decode(); "
                    "m = re.search(r\"^(VirtualHost|Component)\\b\", t, re.M); "
                    "at = m.start() if m else len(t); "
                    f"open(p, \"w\").write(t[:at] + add + t[at:])' {q} {b64(text)}")
        raise ValueError(how)

    def check_file(self, block, path):
        q = shlex.quote(path)
        if block.kind == "lua":
            self.step(block.where, f"netproxyd -t -c {path}",
                      f"netproxyd -t -c {q}", lua_ok)
        elif block.kind == "haproxy":
            self.step(block.where, f"haproxy -c -f {path}", f"haproxy -c -f {q}", haproxy_ok)
        elif block.kind == "ini":
            self.step(block.where, f"systemd-analyze verify {path}",
                      f"systemd-analyze verify {q}", silent_ok)
        elif block.kind == "c":
            self.step(block.where, f"cc -c {path}",
                      f"cc -Wall -Wextra -Werror -c {q} -o /dev/null "
                      f"$(pkg-config --cflags libnetproxy)", silent_ok)


def lua_ok(out, rc):
    if rc != 0 or "warning" in out:
        return f"netproxyd -t exits {rc}:\n{out}"
    return None


def haproxy_ok(out, rc):
    if rc != 0 or "[WARNING]" in out or "[ALERT]" in out:
        return f"haproxy -c exits {rc}:\n{out}"
    return None


def silent_ok(out, rc):
    if rc != 0 or out.strip():
        return f"exit {rc}:\n{out}"
    return None


def status_ok(want=0):
    def check(out, rc):
        return None if rc == want else f"exit status {rc}, not {want}:\n{out}"
    return check


def output_ok(cmd, numbers_vary):
    """The command succeeds and prints what the document shows, its indented
    lines read as folded or as they are (whichever matches)."""
    rx, joined = expected_regex(cmd.expected, numbers_vary)
    rx_as_is, _ = expected_regex(cmd.expected, numbers_vary, fold=False)

    def check(out, rc):
        if rc != 0:
            return f"exit status {rc}:\n{out}"
        got = "".join(ln.rstrip() + "\n" for ln in out.rstrip("\n").split("\n")) if out else ""
        squeezed = re.sub(r"[ \t]+", " ", got)
        if not (re.fullmatch(rx, squeezed, re.S) or re.fullmatch(rx_as_is, squeezed, re.S)):
            return ("the output differs from the document's\n--- document ---\n"
                    + "\n".join(joined) + "\n--- real ---\n" + got)
        return None
    return check


PROSODY_CFG = "/etc/prosody/prosody.cfg.lua"


def haproxy_sections(text):
    """An HAProxy config as [(section line, text)], in order."""
    out = []
    for ln in text.split("\n"):
        if re.match(r"^\S", ln) and not ln.startswith("#"):
            out.append([ln.strip(), ""])
        if out:
            out[-1][1] += ln + "\n"
    return out


def haproxy_merge(base, fragment):
    """The config base with the sections of fragment in place of those of
    the same name, and the others added at the end."""
    mine = dict(haproxy_sections(fragment))
    merged = [(head, mine.pop(head, body)) for head, body in haproxy_sections(base)]
    return "".join(body for _, body in merged) + "".join(mine.values())


def add_block(s, block, transform):
    """The steps of one block."""
    if block.kind == "skip":
        return
    setup = block.mark("setup")
    if setup is not None:
        s.step(block.where, f"setup: {setup}", setup, status_ok())
    prosody = [m.split(":", 1)[1].strip() for m in block.marks
               if m.startswith("prosody-global:")]
    if prosody:
        s.step(block.where, f"in {PROSODY_CFG}: " + "; ".join(prosody),
               s.write(PROSODY_CFG, "\n".join(prosody) + "\n", "global-section"), status_ok())
    same = block.mark("same-as")
    if same is not None:
        n = len(s.steps) + 1
        s.raw(s.write(f"/tmp/doctest-{n}.lua", block.text))
        s.step(block.where, f"the same as {same}",
               f"diff <(netproxyd -t -c /tmp/doctest-{n}.lua 2>&1 | head -n -1) "
               f"<(netproxyd -t -c {shlex.quote(same)} 2>&1 | head -n -1)", silent_ok)
    if block.kind in ("lua", "haproxy", "ini", "c"):
        text = block.text
        if block.kind == "haproxy":
            if block.mark("haproxy-fragment") is not None:
                assert s.last_haproxy, f"{block.where}: no HAProxy config before the fragment"
                text = haproxy_merge(s.last_haproxy, text)
            elif re.search(r"^defaults\b", text, re.M):
                s.last_haproxy = text
        prepend = block.mark("prepend")
        if prepend is not None:
            text = prepend + "\n" + text
        for how in ("file", "append", "global-section"):
            path = block.mark(how)
            if path is not None:
                s.step(block.where, f"{how} {path}", s.write(path, text, how), status_ok())
                s.check_file(block, path)
                return
        if block.kind == "c":
            s.step(block.where, "a C example", "false", lambda out, rc:
                   "a C example needs `file NAME`, and commands that compile it")
            return
        n = len(s.steps) + 1
        tmp = f"/tmp/doctest-{n}.{'lua' if block.kind == 'lua' else 'cfg'}"
        if block.kind == "ini":
            tmp = f"/etc/systemd/system/doctest-{n}.service"
        s.raw(s.write(tmp, text))
        s.check_file(block, tmp)
        return
    if block.kind != "sh":
        return
    numbers_vary = block.mark("numbers vary") is not None
    for cmd in commands_of(block):
        text = transform(cmd.text)
        where = f"{block.doc}:{cmd.line}"
        first = text.split("\n", 1)[0]
        if text.strip().startswith("#"):
            continue
        if foreground_daemon(text):
            n = len(s.steps) + 1
            s.raw("fg_stop")
            body = (f"FG=$( {{ {text} >\"$T/{n}.log\" 2>&1 & }}; echo $! )\n"
                    f"waitfor \"$T/{n}.log\" 'running: ' {STEP_WAIT}; r=$?\n"
                    f"cat \"$T/{n}.log\"; kill -0 $FG 2>/dev/null && exit_ok=0 || exit_ok=1\n"
                    f"[ $r = 0 ] && [ $exit_ok = 0 ]")
            s.step(where, first, body, output_ok(cmd, True) if cmd.expected
                   else foreground_ok)
            continue
        if text.rstrip().endswith("&"):
            # A reader's next command finds a server it started listening.
            n = s.step(where, first, f"before=$(ss -Hltn | wc -l)\n{text}\n"
                       f"listening $before 3", status_ok())
            if cmd.expected:
                literal = max(re.split(r"\.\.\.|…|\d+", cmd.expected[0]), key=len).strip()
                s.step(where, f"the output of: {first}",
                       f'waitfor "$T/{n}.out" {shlex.quote(literal)} {STEP_WAIT}; '
                       f'cat "$T/{n}.out"', output_ok(cmd, numbers_vary))
            continue
        s.step(where, first, text, output_ok(cmd, numbers_vary) if cmd.expected
               else status_ok())


def foreground_ok(out, rc):
    return None if rc == 0 else f"did not start (no \"running:\" line):\n{out}"


# --- the sandbox ----------------------------------------------------------------


def why_no_sandbox():
    if os.geteuid() != 0:
        return "needs root: the examples run in mount, network and PID namespaces"
    for exe in ("unshare", "ip", "haproxy", "systemd-analyze", "cc", "pkg-config", "base64"):
        if not shutil.which(exe) and not Path("/usr/sbin", exe).exists():
            return f"{exe} is not installed"
    r = subprocess.run(["unshare", "-m", "-n", "-p", "-f", "--mount-proc", "true"],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return f"unshare cannot make namespaces here: {r.stderr.strip()}"
    return None


SANDBOX = r"""
set -e
mount -t tmpfs tmpfs "$SB"
mkdir "$SB/upper" "$SB/work"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$SB/upper,workdir=$SB/work" /etc
mount -t tmpfs tmpfs /usr/local
# As on a fresh system: no user that a package of netproxyd would have made.
if getent passwd netproxyd >/dev/null; then userdel netproxyd; fi
if getent group netproxyd >/dev/null; then groupdel netproxyd; fi
ip link set lo up
make -s --no-print-directory -C "$REPO" BUILD="$BUILD" install >"$RESULTS/install.log" 2>&1
exec bash "$RESULTS/session.sh"
"""


def run_session(s, tmp):
    script = tmp / "session.sh"
    script.write_text("".join(s.script))
    sb = tmp / "sandbox"
    sb.mkdir()
    env = {**os.environ, "SB": str(sb), "REPO": str(REPO), "BUILD": str(build_dir()),
           "RESULTS": str(tmp)}
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    try:
        r = subprocess.run(["unshare", "-m", "-n", "-p", "-f", "--mount-proc",
                            "--kill-child", "bash", "-c", SANDBOX],
                           env=env, capture_output=True, text=True, timeout=SESSION_TIMEOUT,
                           start_new_session=True)
        ended = f"the session ended with {r.returncode}:\n{r.stdout[-2000:]}{r.stderr[-2000:]}"
    except subprocess.TimeoutExpired:
        ended = f"the session did not end within {SESSION_TIMEOUT} s"
    errors, ran = [], []
    for n, where, what, check in s.steps:
        rc_file, out_file = tmp / f"{n}.rc", tmp / f"{n}.out"
        if not rc_file.exists():
            log = (tmp / "install.log").read_text() if (tmp / "install.log").exists() else ""
            errors.append(f"{where}: {what}: never ran ({ended})\n{log[-2000:]}")
            break
        out = out_file.read_text(errors="replace")
        err = check(out, int(rc_file.read_text() or 1))
        ran.append(f"{'FAIL' if err else 'ok  '} {where}: {what}")
        if err:
            errors.append(f"{where}: {what}\n{err}")
    return errors, ran


# --- what the documents assume ----------------------------------------------------

# What netproxy-dump(1)'s capture example saves in payload.bin: the first
# segment from an AWS NLB behind a VPC endpoint, a v2 header with the
# endpoint's id (TLV 0xEA) and the client's request.
NLB_PAYLOAD = bytes.fromhex(
    "0d0a0d0a000d0a515549540a211100260a0001170a00022da1120050ea001701767063652d3038"
    "643262663135666163353030316339474554202f20485454502f312e310d0a486f73743a206578"
    "616d706c652e6f72670d0a0d0a")

XMPP_REPLY = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
              b"xmlns:stream='http://etherx.jabber.org/streams' from='example.org' "
              b"id='doctest' version='1.0'><stream:features/>")


def server_cmd(kind, port, results):
    """A line of the prelude: a test server on 127.0.0.1:port, not a job of
    the session's shell, and a wait until it listens."""
    log = f"{results}/server-{port}"
    return (f"( /usr/bin/python3 {shlex.quote(__file__)} {kind} {port} {log} "
            f">{log}.err 2>&1 & )\n"
            f"waitfor {log}.ready listening 10\n")


def shorter_runs(cmd):
    """netproxy-bench's measurements for 1 s, not 5 (or 3): the flags are what is tested."""
    if re.match(r"^netproxy-bench\b(?!.*\bserve\b)(?!.*-m idle)", cmd):
        return re.sub(r"(\s-d)\s+\d+(\.\d+)?", r"\1 1", cmd)
    return cmd


def received(results, port):
    path = Path(results) / f"server-{port}"
    if not path.exists():
        return []
    return [base64.b64decode(json.loads(ln)["received"]) for ln in
            path.read_text().splitlines()]


def after_send(s, results):
    """netproxy-send(1): the health check example again, with the XMPP
    server stopped: it must not say up."""
    s.raw("kill $(cat \"$T/server-5222.pid\")")
    check = [c for b in blocks_of("man/netproxy-send.1") if b.kind == "sh"
             for c in commands_of(b) if "--local" in c.text and "echo up" in c.text]
    assert len(check) == 1, check
    s.step(f"{s.doc}:{check[0].line}", "the health check with the XMPP server stopped",
           check[0].text, lambda out, rc: None if "up" not in out.split()
           else f"said up with the service stopped:\n{out}")


def check_send(results):
    """What the XMPP server behind netproxyd received: a stream header that an
    XML parser takes, never a backslash."""
    import xml.parsers.expat
    got = received(results, 5222)
    assert got, "the XMPP server behind netproxyd received nothing"
    for data in got:
        assert b"\\" not in data, f"a backslash reached the server: {data!r}"
        if b"<stream:stream" in data:
            p = xml.parsers.expat.ParserCreate(namespace_separator=" ")
            p.Parse(data + b"</stream:stream>", True)


def check_netproxyd(results):
    """netproxyd(8): the reload took (the daemon's own log says so), and the
    server behind netproxyd --send-proxy v1 read the header and hello of the
    try by hand, as the page says."""
    logs = [p.read_text() for p in Path(results).glob("*.log")]
    daemon = [t for t in logs if "starting with /etc/netproxyd.conf.lua" in t]
    assert len(daemon) == 1 and "reloaded: generation 2" in daemon[0], daemon
    got = received(results, 5222)
    want = b"PROXY TCP4 203.0.113.7 127.0.0.1 50000 15222\r\nhello\n"
    assert want in got, f"the server on 5222 received {got!r}, not {want!r}"


SCENARIOS = {
    "man/netproxy-send.1": dict(
        prelude=lambda r: server_cmd("xmpp", 5222, r)
        + "( netproxyd >\"$T/netproxyd.log\" 2>&1 & )\nwaitfor \"$T/netproxyd.log\" 'running: ' 10\n",
        after=after_send, check=check_send),
    "man/netproxy-dump.1": dict(files={"payload.bin": NLB_PAYLOAD}),
    "man/netproxy-bench.1": dict(transform=shorter_runs),
    "man/netproxyd.8": dict(
        prelude=lambda r: server_cmd("record", 5222, r) + server_cmd("record", 5269, r),
        check=check_netproxyd),
}


def session_for(doc, tmp):
    sc = SCENARIOS.get(doc, {})
    (tmp / "cwd").mkdir()
    (tmp / "cwd" / "build").symlink_to(build_dir())
    (tmp / "cwd" / "examples").symlink_to(REPO / "examples")
    for name, data in sc.get("files", {}).items():
        (tmp / "cwd" / name).write_bytes(data)
    s = Session(doc, tmp)
    if "prelude" in sc:
        s.raw(sc["prelude"](tmp))
    blocks = blocks_of(doc)
    for b in blocks:
        add_block(s, b, sc.get("transform", lambda c: c))
    if "after" in sc:
        sc["after"](s, tmp)
    s.raw("fg_stop")
    return s, blocks


# --- the tests ---------------------------------------------------------------------

_SKIP = why_no_sandbox() if __name__ != "__main__" else None


def test_every_document_has_its_examples_found():
    """The extraction itself: each document yields the blocks it has, so that
    a change of format cannot leave the examples silently untested."""
    want = {  # kind: at least this many
        "README.md": {"sh": 5, "lua": 6, "haproxy": 3, "c": 1},  # the units are in systemd/
        "man/netproxy-send.1": {"sh": 5},
        "man/netproxy-dump.1": {"sh": 4},
        "man/netproxy-bench.1": {"sh": 7},
        "man/libnetproxy.3": {"c": 3, "sh": 1},
        "man/netproxyd.8": {"sh": 3, "lua": 2, "haproxy": 3, "ini": 1},
        "man/netproxyd.conf.5": {"sh": 4, "lua": 6},
    }
    for doc, kinds in want.items():
        have = {}
        for b in blocks_of(doc):
            have[b.kind] = have.get(b.kind, 0) + 1
        for kind, n in kinds.items():
            assert have.get(kind, 0) >= n, f"{doc}: {have}"
        for b in blocks_of(doc):
            assert b.kind != "skip" or b.mark("skip"), f"{b.where}: skipped without a reason"


def nested_quotes(text):
    """Places where a quote opens inside one of the same kind: what mdoc
    makes of `.Ql a , Ql b` on one line (‘a, ‘b’’)."""
    bad = []
    for opening, closing in (("‘", "’"), ("“", "”")):
        depth, start = 0, 0
        for i, ch in enumerate(text):
            if ch == opening:
                if depth:
                    bad.append(text[max(0, start - 20):i + 30].replace("\n", " "))
                depth, start = depth + 1, i
            elif ch == closing and depth:
                depth -= 1
    return bad


@pytest.mark.skipif(shutil.which("mandoc") is None, reason="mandoc is not installed")
@pytest.mark.parametrize("page", sorted(str(p.relative_to(REPO)) for p in
                                        (REPO / "man").glob("*.[1-8]")))
def test_man_page_quotes_render_balanced(page):
    """mandoc -Tlint accepts quotes nested by mistake; the rendered page
    shows them, as a reader of man(1) sees it."""
    out = subprocess.run(["mandoc", "-Tutf8", "-Owidth=80", str(REPO / page)],
                         capture_output=True, text=True, check=True).stdout
    text = re.sub(r".\x08", "", out)          # overstrike (bold, underline)
    assert not nested_quotes(text), nested_quotes(text)


@pytest.mark.skipif(_SKIP is not None, reason=str(_SKIP))
@pytest.mark.parametrize("doc", DOCS)
def test_examples_work_as_written(doc, tmp_path):
    os.chmod(tmp_path, 0o755)
    s, blocks = session_for(doc, tmp_path)
    errors, ran = run_session(s, tmp_path)
    print(f"\n{doc}:\n  " + "\n  ".join(ran))
    for b in blocks:
        if b.kind == "skip":
            print(f"  skip {b.where}: {b.mark('skip')}")
    check = SCENARIOS.get(doc, {}).get("check")
    if check:
        try:
            check(tmp_path)
        except AssertionError as e:
            errors.append(f"{doc}: {e}")
    assert not errors, "\n\n".join(errors)


# --- the test servers, run inside the sandbox as `python3 test_docs.py KIND PORT LOG` -----


def serve(kind, port, log):
    """kind "record": read each connection to its end, then close; "xmpp":
    the same, answering a stream header with one of its own and features.
    Each connection's bytes go to log as a JSON line."""
    lock = threading.Lock()
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(128)
    Path(log + ".pid").write_text(str(os.getpid()))
    Path(log + ".ready").write_text("listening\n")

    def handle(c):
        got, answered = b"", False
        c.settimeout(30)
        try:
            while chunk := c.recv(65536):
                got += chunk
                if kind == "xmpp" and b"<stream:stream" in got and not answered:
                    c.sendall(XMPP_REPLY)
                    answered = True
        except OSError:
            pass
        with lock, open(log, "a") as f:
            f.write(json.dumps({"received": base64.b64encode(got).decode()}) + "\n")
        c.close()

    while True:
        c, _ = ls.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), sys.argv[3])
