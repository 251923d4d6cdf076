//! Turning a slice's byte stream into node console lines `[<slice>] <line>` (docs/architecture.md, "Console"): a
//! line ends at `\n` or when it reaches [`MAX_LINE`] bytes; `\r` and other control bytes
//! that could move the cursor over the prefix are dropped, so every byte a guest prints
//! stays behind its slice's prefix.

/// Longest line kept; a longer one is emitted in pieces of this size.
pub const MAX_LINE: usize = 1024;

/// Bytes of the current, unfinished line.
#[derive(Clone, Debug)]
pub struct LineBuffer {
    bytes: [u8; MAX_LINE],
    len: usize,
}

impl Default for LineBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl LineBuffer {
    pub const fn new() -> Self {
        Self {
            bytes: [0; MAX_LINE],
            len: 0,
        }
    }

    /// Adds one byte; returns a complete line (without its newline) when this byte ends one,
    /// either by being `\n` or by filling the buffer.
    pub fn push(&mut self, byte: u8) -> Option<&[u8]> {
        match byte {
            b'\n' => return Some(self.take()),
            b'\t' | 0x1b | 0x20..=0x7e | 0x80..=0xff => {}
            _ => return None,
        }
        self.bytes[self.len] = byte;
        self.len += 1;
        (self.len == MAX_LINE).then(|| self.take())
    }

    /// Whatever is pending, emptying the buffer (to flush a partial line).
    pub fn take(&mut self) -> &[u8] {
        let len = core::mem::take(&mut self.len);
        &self.bytes[..len]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The node console's escape byte: `Ctrl-A`.
pub const ESCAPE: u8 = 0x01;

/// What a byte typed on the node console asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Deliver this byte to the focused slice.
    Byte(u8),
    /// `Ctrl-A` then `1`..`9`: focus slice n (0-based index).
    Focus(usize),
    /// `Ctrl-A` then `c`: print the exit counters.
    Counters,
    /// `Ctrl-A` then `p`: press the focused slice's power key (docs/control.md, "Power key").
    PowerKey,
    /// `Ctrl-A` then `?` or `h`: print the console help.
    Help,
}

/// Splits console input into bytes for the focused slice and `Ctrl-A` commands. `Ctrl-A Ctrl-A`
/// sends one `Ctrl-A` to the slice; `Ctrl-A` followed by anything else unknown is dropped.
#[derive(Clone, Copy, Debug, Default)]
pub struct InputDecoder {
    escaped: bool,
}

impl InputDecoder {
    pub const fn new() -> Self {
        Self { escaped: false }
    }

    /// Feeds one byte typed on the node console.
    pub fn feed(&mut self, byte: u8) -> Option<Input> {
        if !self.escaped {
            if byte == ESCAPE {
                self.escaped = true;
                return None;
            }
            return Some(Input::Byte(byte));
        }
        self.escaped = false;
        match byte {
            ESCAPE => Some(Input::Byte(ESCAPE)),
            b'1'..=b'9' => Some(Input::Focus(usize::from(byte - b'1'))),
            b'c' => Some(Input::Counters),
            b'p' => Some(Input::PowerKey),
            b'?' | b'h' => Some(Input::Help),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn lines(input: &[u8]) -> Vec<Vec<u8>> {
        let mut buffer = LineBuffer::new();
        input
            .iter()
            .filter_map(|&b| buffer.push(b).map(<[u8]>::to_vec))
            .collect()
    }

    #[test]
    fn splits_on_newline_and_drops_carriage_return() {
        assert_eq!(lines(b"one\r\ntwo\n"), [b"one".to_vec(), b"two".to_vec()]);
    }

    #[test]
    fn drops_control_bytes_but_keeps_escape_and_tab() {
        assert_eq!(lines(b"a\x08\x00b\tc\x1b[0m\n"), [b"ab\tc\x1b[0m".to_vec()]);
    }

    #[test]
    fn wraps_long_lines() {
        let long = [b'x'; MAX_LINE + 10];
        let mut input = long.to_vec();
        input.push(b'\n');
        let out = lines(&input);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len(), MAX_LINE);
        assert_eq!(out[1].len(), 10);
    }

    #[test]
    fn take_flushes_a_partial_line() {
        let mut buffer = LineBuffer::new();
        for &b in b"partial" {
            assert!(buffer.push(b).is_none());
        }
        assert!(!buffer.is_empty());
        assert_eq!(buffer.take(), b"partial");
        assert!(buffer.is_empty());
    }

    #[test]
    fn escape_sequences() {
        let mut d = InputDecoder::new();
        let out: Vec<Option<Input>> = b"a\x012\x01\x01\x01c\x01?\x01p\x01zq"
            .iter()
            .map(|&b| d.feed(b))
            .collect();
        assert_eq!(
            out,
            [
                Some(Input::Byte(b'a')),
                None,
                Some(Input::Focus(1)),
                None,
                Some(Input::Byte(ESCAPE)),
                None,
                Some(Input::Counters),
                None,
                Some(Input::Help),
                None,
                Some(Input::PowerKey),
                None,
                None,
                Some(Input::Byte(b'q')),
            ]
        );
    }
}
