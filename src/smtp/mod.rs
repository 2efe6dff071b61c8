//! The development server's SMTP intake (`--dev-smtp`): applications under test send mail
//! here and it lands in the mailbox of each recipient's local part. The command parser is a
//! pure function; the conversation is generic over `BufRead + Write` and hands whole messages
//! to an [`session::Intake`], which the dev server implements with `poplar deliver`'s append.
//!
//! Written here rather than taken from the `mailin` crate: mailin 0.6 refuses the null
//! reverse path of bounces (`MAIL FROM:<>`) and any `SIZE=` parameter, and offers neither
//! SIZE nor PIPELINING, all of which applications send or expect.

pub mod command;
pub mod session;
