#!/bin/sh
# Makes the Dovecot fixtures of tests/storage/storage_dialects.rs with Dovecot's own writer
# (`doveadm save`, `doveadm expunge`, Dovecot 2.3), in a throwaway configuration: run it as
# root from this directory; the mail is written as nobody, as Dovecot refuses root.
set -eu
here=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
mkdir "$tmp/mail"
chown 65534:65534 "$tmp/mail"
cat > "$tmp/dovecot.conf" <<CONF
base_dir = $tmp/run
state_dir = $tmp/run
ssl = no
first_valid_uid = 0
first_valid_gid = 0
mail_uid = 65534
mail_gid = 65534
mail_location = mbox:$tmp/mail:INBOX=$tmp/mail/inbox:INDEX=MEMORY
CONF
save() { HOME=$tmp/mail USER=alice doveadm -c "$tmp/dovecot.conf" save; }
printf 'From: a@x\nSubject: one\n\nfirst body\n\nFrom the start of a paragraph\nmore\n' | save
printf 'From: b@x\nSubject: two\nStatus: RO\n\nno newline at end' | save
printf 'From: c@x\nSubject: three\n\nline\n' | save
cp "$tmp/mail/inbox" "$here/saved.mbox"
HOME=$tmp/mail USER=alice doveadm -c "$tmp/dovecot.conf" expunge mailbox INBOX all
printf 'From: d@x\nSubject: four\n\nFrom here on, a body line\n' | save
printf 'From: e@x\nSubject: five\n\nfive\n' | save
cp "$tmp/mail/inbox" "$here/pseudo.mbox"
