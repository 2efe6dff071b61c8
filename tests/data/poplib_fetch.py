"""Python's poplib against poplar: log in, fetch every message, delete each, quit.

Usage: poplib_fetch.py HOST PORT USER PASSWORD OUTDIR

Writes message N as OUTDIR/N (lines joined with CRLF, as the client received them, after
poplib's own un-stuffing) and prints one line per message: N LIST-SIZE OCTETS UIDL.
The caller compares the files with the fixture byte for byte.
"""

import pathlib
import poplib
import sys

host, port, user, password, outdir = sys.argv[1:6]
out = pathlib.Path(outdir)

p = poplib.POP3(host, int(port), timeout=20)
caps = p.capa()
for cap in ("TOP", "UIDL", "USER", "PIPELINING", "RESP-CODES"):
    assert cap in caps, (cap, caps)
p.user(user)
p.pass_(password)
count, total = p.stat()
_, listing, _ = p.list()
sizes = dict(tuple(map(int, line.split())) for line in listing)
_, uidls, _ = p.uidl()
uids = dict(line.decode().split(" ", 1) for line in uidls)
print(f"stat {count} {total}")
for n in range(1, count + 1):
    _, lines, octets = p.retr(n)
    (out / str(n)).write_bytes(b"".join(line + b"\r\n" for line in lines))
    print(f"{n} {sizes[n]} {octets} {uids[str(n)]}")
    p.dele(n)
print(p.quit().decode())
