//! Turning a slice's byte stream into node console lines `[<slice>] <line>` (docs/architecture.md, "Console"): a
//! line ends at `\n` or when it reaches [`MAX_LINE`] bytes. Nothing a guest prints may move
//! the cursor over the prefix, clear the screen, change colours or modes for the lines that
//! follow, or pose as another line: `\r` and the other C0 control bytes are dropped, and so
//! are whole escape sequences (ESC with what follows it: CSI, OSC and two-byte sequences) and
//! C1 controls encoded in UTF-8 (U+0080..U+009F). Other UTF-8 passes through. Until
//! 2026-12-04 ESC was kept, so a guest could erase its prefix and print a fake `[hv]` line
//! (found in review).

/// Longest line kept; a longer one is emitted in pieces of this size.
pub const MAX_LINE: usize = 1024;

/// Longest escape sequence followed; a longer one ends there (its bytes are dropped, what
/// follows is text again), so a sequence that never ends cannot swallow a slice's output.
const MAX_ESCAPE: usize = 256;

const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;

/// Where the line buffer is inside an escape sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    /// Text.
    None,
    /// After ESC.
    Start,
    /// After ESC and intermediate bytes (0x20..0x2f): a final byte ends it.
    Intermediate,
    /// After ESC `[`: parameters and intermediates until a final byte (0x40..0x7e).
    Csi,
    /// After ESC `]` (or `P`, `X`, `^`, `_`: strings): until BEL or ESC `\`.
    String,
    /// ESC inside a string: `\` ends it.
    StringTerminator,
}

/// Bytes of the current, unfinished line.
#[derive(Clone, Debug)]
pub struct LineBuffer {
    bytes: [u8; MAX_LINE],
    len: usize,
    escape: Escape,
    /// Bytes of the escape sequence so far.
    escape_len: usize,
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
            escape: Escape::None,
            escape_len: 0,
        }
    }

    /// Adds one byte; returns a complete line (without its newline) when this byte ends one,
    /// either by being `\n` or by filling the buffer.
    pub fn push(&mut self, byte: u8) -> Option<&[u8]> {
        if byte == b'\n' {
            self.escape = Escape::None;
            return Some(self.take());
        }
        if self.escape != Escape::None {
            self.follow_escape(byte);
            return None;
        }
        match byte {
            ESC => {
                self.escape = Escape::Start;
                self.escape_len = 1;
                return None;
            }
            // A C1 control as UTF-8 (0xc2 0x80..0x9f): both bytes go.
            0x80..=0x9f if self.len > 0 && self.bytes[self.len - 1] == 0xc2 => {
                self.len -= 1;
                return None;
            }
            b'\t' | 0x20..=0x7e | 0x80..=0xff => {}
            _ => return None,
        }
        self.bytes[self.len] = byte;
        self.len += 1;
        (self.len == MAX_LINE).then(|| self.take())
    }

    /// One byte of an escape sequence (dropped, like the whole sequence).
    fn follow_escape(&mut self, byte: u8) {
        self.escape_len += 1;
        self.escape = match (self.escape, byte) {
            _ if self.escape_len > MAX_ESCAPE => Escape::None,
            (Escape::Start, b'[') => Escape::Csi,
            (Escape::Start, b']' | b'P' | b'X' | b'^' | b'_') => Escape::String,
            (Escape::Start | Escape::Intermediate, 0x20..=0x2f) => Escape::Intermediate,
            // Any other byte ends a two-byte sequence (ESC 7, ESC c, ...).
            (Escape::Start | Escape::Intermediate, _) => Escape::None,
            (Escape::Csi, 0x40..=0x7e) => Escape::None,
            (Escape::Csi, _) => Escape::Csi,
            (Escape::String, BEL) => Escape::None,
            (Escape::String, ESC) => Escape::StringTerminator,
            (Escape::String, _) => Escape::String,
            (Escape::StringTerminator, b'\\') => Escape::None,
            (Escape::StringTerminator, _) => Escape::String,
            (Escape::None, _) => Escape::None,
        };
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
    fn drops_control_bytes_and_escape_sequences_but_keeps_tab() {
        assert_eq!(lines(b"a\x08\x00b\tc\x1b[0m\n"), [b"ab\tc".to_vec()]);
    }

    #[test]
    fn no_escape_sequence_reaches_the_node_console() {
        // Erasing the prefix and posing as the hypervisor (found in review).
        assert_eq!(
            lines(b"\x1b[2K\x1b[1G[hv] slice web stopped\n"),
            [b"[hv] slice web stopped".to_vec()]
        );
        // Colours, cursor moves and screen clears (GRUB's menu), two-byte sequences (save
        // and restore cursor), a character set selection with an intermediate byte, an OSC
        // title ended by BEL and one ended by ESC \, private modes.
        assert_eq!(
            lines(
                b"\x1b[0;37;40m\x1b[2J\x1b[5;3HGRUB\x1b7\x1b8\x1b(B menu\x1b]0;title\x07 \
                  \x1b]2;x\x1b\\ok\x1b[?25l\n"
            ),
            [b"GRUB menu ok".to_vec()]
        );
        // A newline ends an unfinished sequence; the next line is text.
        assert_eq!(lines(b"a\x1b[12\nb\n"), [b"a".to_vec(), b"b".to_vec()]);
        // A sequence that never ends is given up after MAX_ESCAPE bytes.
        let mut input = b"\x1b]".to_vec();
        input.extend(core::iter::repeat_n(b'x', MAX_ESCAPE));
        input.extend(b"text\n");
        assert_eq!(lines(&input), [b"xtext".to_vec()]);
    }

    #[test]
    fn utf8_passes_but_c1_controls_in_utf8_do_not() {
        // U+2713 and U+00E9 stay; U+009B (CSI) and U+0085 go, both bytes.
        assert_eq!(
            lines("\u{2713} caf\u{e9}\n".as_bytes()),
            ["\u{2713} caf\u{e9}".as_bytes().to_vec()]
        );
        assert_eq!(lines(b"a\xc2\x9b2Jb\xc2\x85c\n"), [b"a2Jbc".to_vec()]);
    }

    #[test]
    fn random_input_never_leaves_a_control_byte() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut buffer = LineBuffer::new();
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let byte = state as u8;
            let line = buffer.push(byte).map(<[u8]>::to_vec).unwrap_or_default();
            for (i, &b) in line.iter().enumerate() {
                assert!(b == b'\t' || b >= 0x20 && b != 0x7f, "control byte {b:#x}");
                assert!(
                    !(b == 0xc2 && line.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n))),
                    "C1 control in UTF-8"
                );
            }
        }
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
