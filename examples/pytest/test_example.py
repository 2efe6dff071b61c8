"""A test suite driving poplar's development server through the fixtures of conftest.py:
mail sent over SMTP, read back over POP3 octet for octet, listed and added through the HTTP
API, and every mailbox reset to the seed between tests."""

import poplib

import pytest

# A message with what mail paths get wrong: a dot-led line (POP3 stuffs it), a body line
# starting "From " (an mbox quotes it), 8-bit UTF-8 text, and CRLF line ends throughout.
MESSAGE = (b"From: App <app@example.com>\r\n"
           b"To: dora@example.org\r\n"
           b"Subject: order shipped\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n"
           b"\r\n"
           b"Gr\xc3\xbc\xc3\x9fe,\r\n"
           b".signature\r\n"
           b"From the warehouse, with love\r\n")


def crlf(data):
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def test_sent_over_smtp_read_over_pop3_octet_for_octet(mail):
    mail.send("dora@example.org", MESSAGE)
    assert mail.retrieve_all("dora") == [MESSAGE]


def test_the_api_lists_what_pop3_serves(mail):
    mail.send("erin@example.org", MESSAGE)
    mail.send("erin@example.org", MESSAGE.replace(b"order shipped", b"order delivered"))
    listed = mail.messages("erin")
    assert [m["subject"] for m in listed] == ["order shipped", "order delivered"]
    assert listed[0]["from"] == "App <app@example.com>"
    client = mail.pop3_login("erin")
    try:
        uidls = [line.split()[1].decode() for line in client.uidl()[1]]
        sizes = [int(line.split()[1]) for line in client.list()[1]]
    finally:
        client.quit()
    assert [(m["uidl"], m["size"]) for m in listed] == list(zip(uidls, sizes))
    assert sizes[0] == len(MESSAGE)


def test_a_message_posted_to_the_api_is_served_and_its_raw_form_kept(mail):
    status, body = mail.api("POST", "/api/v1/mailboxes/frank/messages", MESSAGE)
    assert status == 201, body
    status, raw = mail.api("GET", f"/api/v1/mailboxes/frank/messages/{body['uidl']}")
    assert (status, raw) == (200, MESSAGE)
    assert mail.retrieve_all("frank") == [MESSAGE]


def test_the_seed_is_served_and_reset_brings_it_back(mail):
    samples = mail.seed["alice"]
    assert mail.retrieve_all("alice") == [crlf(p.read_bytes()) for p in samples]
    first = mail.messages("alice")[0]["uidl"]
    status, _ = mail.api("DELETE", f"/api/v1/mailboxes/alice/messages/{first}")
    assert status == 200
    mail.send("gina@example.org", MESSAGE)
    assert len(mail.messages("alice")) == len(samples) - 1

    mail.reset()
    assert len(mail.messages("alice")) == len(samples)
    status, body = mail.api("GET", "/api/v1/mailboxes/gina/messages")
    assert status == 404, body


def test_a_mailbox_in_a_pop3_session_is_not_changed_under_it(mail):
    mail.send("hank@example.org", MESSAGE)
    client = mail.pop3_login("hank")
    try:
        status, body = mail.api("DELETE", "/api/v1/mailboxes/hank")
        assert status == 409, body
        assert "POP3 session" in body["error"]
    finally:
        client.quit()
    assert mail.retrieve_all("hank") == [MESSAGE]


def test_a_wrong_command_gets_an_error_the_client_sees(mail):
    client = mail.pop3_login("ivan")
    try:
        try:
            client.retr(1)
        except poplib.error_proto as e:
            assert e.args[0].startswith(b"-ERR")
        else:
            raise AssertionError("RETR of a message that does not exist succeeded")
    finally:
        client.quit()


def test_a_refused_dele_deletes_nothing_and_the_sessions_log_shows_it(mail):
    mail.faults([{"command": "DELE", "action": "err", "code": "SYS/TEMP", "text": "try later"}])
    before = len(mail.messages("alice"))
    client = mail.pop3_login("alice")
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\] try later"):
        client.dele(1)
    client.quit()
    assert len(mail.messages("alice")) == before
    last = mail.sessions()[-1]
    assert last["user"] == "alice"
    assert any(c["command"] == "DELE 1" and c.get("fault") for c in last["commands"]), last
