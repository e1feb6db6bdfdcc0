//! Text from a bundle, as a terminal may show it.
//!
//! Everything a bundle says (its name and version, object names, signer names in
//! an envelope nobody has checked yet, a NAR's entry names) is hostile text. Printed
//! raw, an escape sequence can move the cursor, rewrite the line above or repaint
//! the screen, and a refused bundle could leave `OK … signed by release` where its
//! refusal was; a newline can forge a line of output of its own, and a
//! right-to-left override can make a name read as another. So every print of
//! bundle-derived text, on stdout and stderr alike (reports, progress labels,
//! warnings, error messages), goes through [`escaped`], and the places that print
//! anything ([`crate::progress`], the binary's error printer) pass their whole
//! message through [`terminal_safe`] as well, keeping only the line breaks and tabs
//! gapbundle writes itself. JSON output needs neither: serde escapes every control
//! character in a string.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal from a bundle: a control character (C0,
/// DEL, C1) or one that reorders or hides text (the bidirectional overrides,
/// embeddings and isolates, the directional marks).
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

fn escape_into(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
    }
}

/// `s` with every character that could act on a terminal written as an escape
/// (`\n`, `\t`, `\u{1b}`, `\u{202e}`), and nothing else changed.
pub fn escaped(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            escape_into(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`escaped`], shortened to about `max` characters (then `… (N characters)`), for
/// a value that may be of any length in a message.
pub fn shortened(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return escaped(s).into_owned();
    }
    let head: String = s.chars().take(max.saturating_sub(40).max(1)).collect();
    format!("{}… ({n} characters)", escaped(&head))
}

/// A whole message about to be printed: [`escaped`], except for the line breaks
/// and tabs a message of gapbundle's own may hold. Bundle text inside it must have
/// gone through [`escaped`] already (its newlines included); this is the last line
/// of defence for anything that did not.
pub fn terminal_safe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| unsafe_char(c) && c != '\n' && c != '\t') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) && c != '\n' && c != '\t' {
            escape_into(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_are_escaped_and_the_rest_kept() {
        assert_eq!(escaped("edge-site 1.0 ü ✓"), "edge-site 1.0 ü ✓");
        assert!(matches!(escaped("plain"), Cow::Borrowed(_)));
        assert_eq!(
            escaped("x\u{1b}[2K\rOK signed by release\n\u{7}"),
            "x\\u{1b}[2K\\rOK signed by release\\n\\u{7}"
        );
        assert_eq!(escaped("\u{9b}31m\u{7f}"), "\\u{9b}31m\\u{7f}");
        assert_eq!(escaped("abc\u{202e}gpj.exe"), "abc\\u{202e}gpj.exe");
        assert_eq!(escaped("tab\there"), "tab\\there");
    }

    #[test]
    fn whole_messages_keep_their_own_lines() {
        assert_eq!(
            terminal_safe("error: x\n  caused by: \u{1b}]0;title\u{7}"),
            "error: x\n  caused by: \\u{1b}]0;title\\u{7}"
        );
        assert_eq!(terminal_safe("a\r\nb"), "a\\r\nb");
    }

    #[test]
    fn long_values_are_shortened() {
        let s = "a".repeat(5000);
        let short = shortened(&s, 100);
        assert!(short.len() < 120, "{short}");
        assert!(short.ends_with("(5000 characters)"), "{short}");
        assert_eq!(shortened("\u{1b}", 100), "\\u{1b}");
    }
}
