//! English plurals for replies and command-line reports.

/// `n` and `noun`, plural unless `n` is 1: "1 message", "2 messages".
pub fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_plural_except_for_one() {
        assert_eq!(plural(0, "message"), "0 messages");
        assert_eq!(plural(1, "'>From ' line"), "1 '>From ' line");
        assert_eq!(plural(2, "message"), "2 messages");
    }
}
