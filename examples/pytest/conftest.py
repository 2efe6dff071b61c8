"""A pytest fixture that runs poplar's development server for a test suite.

Copy this file beside your tests. The session-scoped fixture `poplar` starts

    poplar --dev DIR --dev-any-password --mbox-unquote --auth-delay 0
        --listen 127.0.0.1:0 --dev-smtp 127.0.0.1:0 --dev-http 127.0.0.1:0

once for the whole run, reads the three addresses from the banner poplar prints once it
listens on them, waits for GET /readyz, and stops it at the end. DIR starts with the sample
messages of examples/samples/ in alice's mailbox (`seed`, filled by `poplar seed`): what
`reset()` restores. The
function-scoped fixture `mail` is the same server, reset after each test, so that tests do not
see each other's mail. poplar's log (every command, secrets masked) is poplar.log beside DIR.

The binary is $POPLAR_BIN, else `poplar` on $PATH (`cargo build` puts it in target/debug/).
Only the standard library is used besides pytest: smtplib, poplib and urllib.
"""

import json
import os
import poplib
import shutil
import smtplib
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

# Generous: the machine running the tests may be busy. These only keep a hang from lasting.
TIMEOUT = 30
SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def poplar_binary():
    binary = os.environ.get("POPLAR_BIN") or shutil.which("poplar")
    if not binary:
        pytest.fail("set POPLAR_BIN to the poplar binary (cargo build: target/debug/poplar)")
    return binary


def address(text):
    """("127.0.0.1", 1110) from "127.0.0.1:1110"."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class Poplar:
    """A running `poplar --dev`: its three addresses and small helpers over them."""

    def __init__(self, pop3, smtp, http, seed):
        self.pop3 = pop3
        self.smtp = smtp
        self.http = http
        # The files each mailbox was seeded from, in order: what reset() brings back.
        self.seed = seed

    def send(self, to, message, sender="app@example.com"):
        """Sends `message` (bytes, CRLF line ends) over SMTP, as an application would."""
        with smtplib.SMTP(*self.smtp, timeout=TIMEOUT) as s:
            s.sendmail(sender, [to], message)

    def pop3_login(self, user, password="any"):
        """A poplib.POP3 logged in as `user` (any password works with --dev-any-password)."""
        client = poplib.POP3(*self.pop3, timeout=TIMEOUT)
        client.user(user)
        client.pass_(password)
        return client

    def retrieve_all(self, user):
        """Every message of `user` as RETR gives it, dot-unstuffed, with CRLF line ends."""
        client = self.pop3_login(user)
        try:
            count, _ = client.stat()
            return [b"".join(line + b"\r\n" for line in client.retr(n)[1])
                    for n in range(1, count + 1)]
        finally:
            client.quit()

    def api(self, method, path, body=None):
        """(status, body) of an HTTP API call; a JSON body is decoded, others stay bytes."""
        request = urllib.request.Request(f"http://{self.http[0]}:{self.http[1]}{path}",
                                         data=body, method=method)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as r:
                status, kind, data = r.status, r.headers.get_content_type(), r.read()
        except urllib.error.HTTPError as e:
            status, kind, data = e.code, e.headers.get_content_type(), e.read()
        return status, json.loads(data) if kind == "application/json" else data

    def messages(self, user):
        """`user`'s messages as the API lists them: uidl, size, from, to, subject, date."""
        status, body = self.api("GET", f"/api/v1/mailboxes/{urllib.parse.quote(user)}/messages")
        assert status == 200, body
        return body

    def reset(self):
        """Every mailbox back to the seed poplar started with."""
        status, body = self.api("POST", "/api/v1/reset")
        assert status == 200, body

    def faults(self, rules, seed=0):
        """Puts fault `rules` (dicts, as docs/dev.md describes them) in force; `[]` ends them."""
        document = json.dumps({"seed": seed, "rules": rules}).encode()
        status, body = self.api("PUT", "/api/v1/faults", document)
        assert status == 200, body

    def sessions(self):
        """The recent POP3 sessions, oldest first, as GET /api/v1/sessions lists them."""
        status, body = self.api("GET", "/api/v1/sessions")
        assert status == 200, body
        return body


def read_banner(stdout, deadline, log):
    """The POP3, SMTP and HTTP addresses from poplar's banner, or a failure after `deadline`
    seconds or when poplar exits first (the banner comes once every listener is bound)."""
    found = {}
    markers = {"pop3": "listening on ", "smtp": "SMTP on ", "http": "HTTP on "}

    def read():
        for line in stdout:
            for name, marker in markers.items():
                if marker in line and name not in found:
                    found[name] = address(line.split(marker, 1)[1].split(": ", 1)[0].strip())
            if len(found) == len(markers):
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(deadline)
    if len(found) != len(markers):
        pytest.fail(f"poplar's banner named only {found}; its log ends:\n"
                    + log.read_text(errors="replace")[-2000:])
    return found


def wait_ready(server, deadline):
    """Asks GET /readyz until it answers 200, for at most `deadline` seconds."""
    give_up = time.monotonic() + deadline
    while True:
        try:
            status, body = server.api("GET", "/readyz")
            if status == 200:
                return
        except OSError as e:
            status, body = None, e
        if time.monotonic() > give_up:
            pytest.fail(f"/readyz: {status} {body}")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def poplar(tmp_path_factory):
    binary = poplar_binary()
    top = tmp_path_factory.mktemp("poplar")
    mail, log = top / "mail", top / "poplar.log"
    seed = {"alice": sorted(SAMPLES.glob("*.eml"))}
    for user, files in seed.items():
        seeded = subprocess.run(
            [binary, "seed", "--dev", str(mail), "--to", user, *map(str, files)],
            capture_output=True, text=True, timeout=TIMEOUT)
        assert seeded.returncode == 0, seeded.stderr
    with log.open("w") as errors:
        process = subprocess.Popen(
            [binary, "--dev", str(mail), "--dev-any-password", "--mbox-unquote",
             "--auth-delay", "0", "--listen", "127.0.0.1:0",
             "--dev-smtp", "127.0.0.1:0", "--dev-http", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=errors, text=True)
    try:
        found = read_banner(process.stdout, TIMEOUT, log)
        server = Poplar(found["pop3"], found["smtp"], found["http"], seed)
        wait_ready(server, TIMEOUT)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def mail(poplar):
    yield poplar
    poplar.faults([])
    poplar.reset()
