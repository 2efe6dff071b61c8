//! The development server's web page (`GET /` on `--dev-http`): plain HTML, no script, no
//! framework, nothing fetched from elsewhere. It lists the mailboxes and their messages, with a
//! link to each message as stored, and the recent POP3 sessions.

use std::fmt::Write as _;

use super::api::{MailboxInfo, Summary};
use super::sessions::Record;

/// Text made safe inside HTML elements and double-quoted attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A path segment percent-encoded for a URL.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The page for these mailboxes and, for each that is not in a session, its messages; then
/// the `sessions`, newest first.
pub fn render(
    mailboxes: &[MailboxInfo],
    messages: &[(String, Vec<Summary>)],
    sessions: &[Record],
) -> String {
    let mut h = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>poplar dev mailboxes</title>\
         <style>body{font:15px system-ui,sans-serif;margin:2em;color:#222}\
         table{border-collapse:collapse;margin:.5em 0 1.5em}\
         td,th{border-bottom:1px solid #ddd;padding:.3em .8em;text-align:left}\
         th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}\
         code{font-size:90%}</style></head><body>\n<h1>poplar dev mailboxes</h1>\n",
    );
    if mailboxes.is_empty() {
        h.push_str(
            "<p id=\"empty\">No mailboxes yet: send mail over SMTP, or POST one to the API.</p>\n",
        );
    } else {
        h.push_str(
            "<table id=\"mailboxes\"><thead><tr><th>Mailbox</th><th>Messages</th>\
             <th>Octets</th></tr></thead><tbody>\n",
        );
        for m in mailboxes {
            let (n, octets) = match m.counts {
                Some((n, o)) => (n.to_string(), o.to_string()),
                None => ("in a POP3 session".into(), String::new()),
            };
            let _ = writeln!(
                h,
                "<tr data-user=\"{u}\"><td><a href=\"#mailbox-{id}\">{u}</a></td>\
                 <td class=\"n\">{n}</td><td class=\"n\">{octets}</td></tr>",
                u = esc(&m.user),
                id = segment(&m.user),
            );
        }
        h.push_str("</tbody></table>\n");
    }
    for (user, list) in messages {
        let _ = writeln!(h, "<h2 id=\"mailbox-{}\">{}</h2>", segment(user), esc(user));
        if list.is_empty() {
            h.push_str("<p>No messages.</p>\n");
            continue;
        }
        let _ = writeln!(
            h,
            "<table class=\"messages\" data-user=\"{}\"><thead><tr><th>#</th><th>Subject</th>\
             <th>From</th><th>Date</th><th>Size</th><th>UIDL</th></tr></thead><tbody>",
            esc(user)
        );
        for (i, m) in list.iter().enumerate() {
            let subject = if m.subject.is_empty() {
                "(no subject)"
            } else {
                &m.subject
            };
            let _ = writeln!(
                h,
                "<tr data-uidl=\"{uidl}\"><td class=\"n\">{n}</td>\
                 <td><a class=\"raw\" href=\"/api/v1/mailboxes/{user}/messages/{uidl_seg}\">{subject}</a></td>\
                 <td>{from}</td><td>{date}</td><td class=\"n\">{size}</td><td><code>{uidl}</code></td></tr>",
                n = i + 1,
                uidl = esc(&m.uidl),
                uidl_seg = segment(&m.uidl),
                user = segment(user),
                subject = esc(subject),
                from = esc(&m.from),
                date = esc(&m.date),
                size = m.size,
            );
        }
        h.push_str("</tbody></table>\n");
    }
    render_sessions(&mut h, sessions);
    h.push_str(
        "<p>The API behind this page: <code>/api/v1/mailboxes</code> \
         (docs/dev.md).</p>\n</body></html>\n",
    );
    h
}

/// The sessions table, newest first: each command with its answer, the flags, the faults.
fn render_sessions(h: &mut String, sessions: &[Record]) {
    h.push_str("<h2 id=\"sessions\">Recent POP3 sessions</h2>\n");
    if sessions.is_empty() {
        h.push_str("<p id=\"no-sessions\">No sessions yet.</p>\n");
        return;
    }
    h.push_str(
        "<table id=\"sessions-table\"><thead><tr><th>#</th><th>Client</th><th>User</th>\
         <th>Ended</th><th>Commands</th><th>Flags</th><th>Faults</th></tr></thead><tbody>\n",
    );
    for r in sessions.iter().rev() {
        let mut commands = String::new();
        for c in &r.commands {
            let answer = match (c.status, &c.code) {
                (Some(s), Some(code)) => format!("{s} [{code}]"),
                (Some(s), None) => s.to_owned(),
                (None, _) => "(no answer)".to_owned(),
            };
            let _ = write!(
                commands,
                "<li><code>{}</code> {}</li>",
                esc(&c.command),
                esc(&answer)
            );
        }
        let f = r.flags;
        let flags: Vec<&str> = [
            (f.deleted_without_uidl, "deleted without UIDL"),
            (f.retrieved_without_list, "retrieved without LIST"),
            (f.no_quit, "no QUIT"),
            (f.pipelined, "pipelined"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect();
        let faults: Vec<String> = r
            .faults
            .iter()
            .map(|(command, rule, action)| format!("{action} on {command} (rule {rule})"))
            .collect();
        let _ = writeln!(
            h,
            "<tr data-session=\"{id}\"><td class=\"n\">{id}</td><td>{client}</td>\
             <td>{user}</td><td>{ending}</td><td><ol class=\"commands\">{commands}</ol></td>\
             <td class=\"flags\">{flags}</td><td class=\"faults\">{faults}</td></tr>",
            id = r.id,
            client = esc(r.client.as_deref().unwrap_or("-")),
            user = esc(r.user.as_deref().unwrap_or("-")),
            ending = r.ending.unwrap_or("in progress"),
            flags = esc(&flags.join(", ")),
            faults = esc(&faults.join("; ")),
        );
    }
    h.push_str("</tbody></table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_from_mail_is_escaped() {
        let boxes = [MailboxInfo {
            user: "a<b>".into(),
            counts: Some((1, 10)),
        }];
        let list = vec![(
            "a<b>".to_owned(),
            vec![Summary {
                uidl: "u\"1".into(),
                size: 10,
                from: "<script>x</script>".into(),
                to: String::new(),
                subject: "a & b".into(),
                date: "'d'".into(),
            }],
        )];
        let page = render(&boxes, &list, &[]);
        assert!(!page.contains("<script>x"));
        assert!(page.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(page.contains("a &amp; b") && page.contains("&#39;d&#39;"));
        assert!(page.contains("/api/v1/mailboxes/a%3Cb%3E/messages/u%221"));
        assert!(page.contains("data-uidl=\"u&quot;1\""));
    }
}
