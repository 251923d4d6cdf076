//! Fixed-capacity byte strings, for copying strings out of the device tree
//! before the memory test overwrites it.

/// A byte string of at most `N` bytes; longer input is truncated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Text<const N: usize> {
    buf: [u8; N],
    len: usize,
    truncated: bool,
}

impl<const N: usize> Text<N> {
    /// The empty string.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
            truncated: false,
        }
    }

    /// A copy of `bytes`, truncated to `N` bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut text = Self::new();
        let len = bytes.len().min(N);
        text.buf[..len].copy_from_slice(&bytes[..len]);
        text.len = len;
        text.truncated = bytes.len() > N;
        text
    }

    /// The stored bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The stored bytes as UTF-8, if they are valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        core::str::from_utf8(self.as_bytes()).ok()
    }

    /// Whether the input was longer than `N` bytes.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
}

/// Appending formatted text; what does not fit is dropped and marks the text
/// truncated (writing never fails).
impl<const N: usize> core::fmt::Write for Text<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = N - self.len;
        let take = s.len().min(room);
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        self.truncated |= take < s.len();
        Ok(())
    }
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> core::fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", crate::json::Escaped(self.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_kept_whole() {
        let t = Text::<8>::from_bytes(b"web-0");
        assert_eq!(t.as_str(), Some("web-0"));
        assert!(!t.is_truncated());
    }

    #[test]
    fn long_input_is_truncated() {
        let t = Text::<4>::from_bytes(b"abcdef");
        assert_eq!(t.as_bytes(), b"abcd");
        assert!(t.is_truncated());
    }

    #[test]
    fn formatting_appends_and_truncates() {
        use core::fmt::Write;
        let mut t = Text::<6>::new();
        write!(t, "ab{}", 12).unwrap();
        assert_eq!(t.as_str(), Some("ab12"));
        assert!(!t.is_truncated());
        write!(t, "xyz").unwrap();
        assert_eq!(t.as_str(), Some("ab12xy"));
        assert!(t.is_truncated());
    }

    #[test]
    fn invalid_utf8_has_no_str() {
        assert_eq!(Text::<4>::from_bytes(&[0xff, 0x41]).as_str(), None);
    }
}
