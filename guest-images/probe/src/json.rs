//! Minimal JSON output (RFC 8259) without allocation, for the `SLICE-REPORT`
//! line: an object writer and string escaping.

use core::fmt::{self, Write};

/// A JSON string literal (with quotes) for arbitrary bytes.
///
/// Valid UTF-8 passes through except `"`, `\` and control characters; if the
/// bytes are not valid UTF-8, every byte >= 0x80 is written as `\u00XX`.
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let utf8 = core::str::from_utf8(self.0).is_ok();
        f.write_char('"')?;
        let mut run_start = 0;
        for (i, &b) in self.0.iter().enumerate() {
            let escape: Option<&str> = match b {
                b'"' => Some("\\\""),
                b'\\' => Some("\\\\"),
                b'\n' => Some("\\n"),
                b'\r' => Some("\\r"),
                b'\t' => Some("\\t"),
                _ => None,
            };
            let needs_hex = b < 0x20 || b == 0x7f || (!utf8 && b >= 0x80);
            if escape.is_none() && !needs_hex {
                continue;
            }
            flush(f, &self.0[run_start..i])?;
            run_start = i + 1;
            match escape {
                Some(e) => f.write_str(e)?,
                None => write!(f, "\\u{b:04x}")?,
            }
        }
        flush(f, &self.0[run_start..])?;
        f.write_char('"')
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Writes a run of bytes that needs no escaping (so it is valid UTF-8 or
/// printable ASCII).
fn flush(f: &mut fmt::Formatter<'_>, run: &[u8]) -> fmt::Result {
    match core::str::from_utf8(run) {
        Ok(s) => f.write_str(s),
        // Unreachable in practice: non-UTF-8 input has every byte >= 0x80
        // escaped, so a run is plain ASCII. Stay correct anyway.
        Err(_) => run.iter().try_for_each(|&b| write!(f, "\\u{b:04x}")),
    }
}

/// A hexadecimal address as a JSON string, e.g. `"0x40000000"`.
pub struct HexString(pub u64);

impl fmt::Display for HexString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{:#x}\"", self.0)
    }
}

/// Writes one JSON object, field by field, in the order of the calls.
pub struct ObjectWriter<'w, W: Write> {
    out: &'w mut W,
    fields: usize,
    result: fmt::Result,
}

impl<'w, W: Write> ObjectWriter<'w, W> {
    /// Starts an object (`{`).
    pub fn new(out: &'w mut W) -> Self {
        let result = out.write_char('{');
        Self {
            out,
            fields: 0,
            result,
        }
    }

    /// A field whose value is already valid JSON text (number, nested value).
    pub fn raw(&mut self, key: &str, value: impl fmt::Display) -> &mut Self {
        if self.result.is_ok() {
            let comma = if self.fields == 0 { "" } else { "," };
            self.result = write!(self.out, "{comma}{}:{value}", Escaped(key.as_bytes()));
            self.fields += 1;
        }
        self
    }

    /// A string field.
    pub fn string(&mut self, key: &str, value: &[u8]) -> &mut Self {
        self.raw(key, Escaped(value))
    }

    /// A number field.
    pub fn number(&mut self, key: &str, value: u64) -> &mut Self {
        self.raw(key, value)
    }

    /// A boolean field.
    pub fn boolean(&mut self, key: &str, value: bool) -> &mut Self {
        self.raw(key, value)
    }

    /// An address field, written as a hex string.
    pub fn hex(&mut self, key: &str, value: u64) -> &mut Self {
        self.raw(key, HexString(value))
    }

    /// Ends the object (`}`) and reports whether every write succeeded.
    pub fn finish(&mut self) -> fmt::Result {
        self.result?;
        self.out.write_char('}')
    }
}

/// A JSON array of numbers.
pub struct NumberList<'a>(pub &'a [u64]);

impl fmt::Display for NumberList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('[')?;
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            write!(f, "{n}")?;
        }
        f.write_char(']')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(bytes: &[u8]) -> String {
        format!("{}", Escaped(bytes))
    }

    #[test]
    fn plain_text_is_quoted() {
        assert_eq!(render(b"heartbeat=500"), "\"heartbeat=500\"");
    }

    #[test]
    fn quotes_backslashes_and_controls_are_escaped() {
        assert_eq!(render(b"a\"b\\c\nd\x01"), r#""a\"b\\c\nd\u0001""#);
    }

    #[test]
    fn utf8_passes_through() {
        assert_eq!(render("slice-é".as_bytes()), "\"slice-é\"");
    }

    #[test]
    fn invalid_utf8_bytes_are_escaped() {
        assert_eq!(render(&[b'a', 0xff, b'b']), r#""a\u00ffb""#);
    }

    #[test]
    fn object_fields_in_order() {
        let mut s = String::new();
        let mut o = ObjectWriter::new(&mut s);
        o.string("slice", b"web-0")
            .number("cpus", 2)
            .raw("mpidrs", NumberList(&[0, 1]));
        o.hex("memory_base", 0x4000_0000).boolean("wfit", true);
        o.finish().unwrap();
        assert_eq!(
            s,
            r#"{"slice":"web-0","cpus":2,"mpidrs":[0,1],"memory_base":"0x40000000","wfit":true}"#
        );
    }

    #[test]
    fn empty_object() {
        let mut s = String::new();
        ObjectWriter::new(&mut s).finish().unwrap();
        assert_eq!(s, "{}");
    }
}
