//! A chunked transfer-coding scanner (RFC 9112 §7.1). Forwarded bodies are
//! passed through byte for byte; the scanner only finds where the body ends,
//! strictly, so that sluice and the peer agree on message boundaries (a
//! lenient parser here is how request smuggling starts).

/// Longest chunk-size line (size, extensions) and trailer section accepted.
const MAX_LINE: usize = 4096;

/// Where the scanner is within the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size { value: u64, digits: u8 },
    Ext { value: u64, len: usize },
    SizeLf { value: u64 },
    Data(u64),
    DataCr,
    DataLf,
    Trailer { len: usize, total: usize },
    TrailerLf { len: usize, total: usize },
    Done,
}

/// Tracks one chunked body.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: State::Size {
                value: 0,
                digits: 0,
            },
        }
    }
}

impl Chunked {
    /// Consumes body bytes from the front of `buf`; returns how many belong
    /// to the body (all of them unless the body ends inside `buf`).
    pub fn scan(&mut self, buf: &[u8]) -> Result<usize, &'static str> {
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            self.state = match self.state {
                State::Done => return Ok(i),
                State::Data(n) => {
                    let take = n.min((buf.len() - i) as u64);
                    i += take as usize;
                    self.state = if take == n {
                        State::DataCr
                    } else {
                        State::Data(n - take)
                    };
                    continue;
                }
                State::Size { value, digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if digits >= 15 {
                            return Err("chunk size too large");
                        }
                        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                        State::Size {
                            value: value * 16 + d,
                            digits: digits + 1,
                        }
                    }
                    b';' if digits > 0 => State::Ext { value, len: 0 },
                    b'\r' if digits > 0 => State::SizeLf { value },
                    _ => return Err("invalid chunk size"),
                },
                State::Ext { value, len } => match b {
                    b'\r' => State::SizeLf { value },
                    b'\n' => return Err("bare LF in chunk extension"),
                    _ if len >= MAX_LINE => return Err("chunk extension too long"),
                    _ => State::Ext {
                        value,
                        len: len + 1,
                    },
                },
                State::SizeLf { value } => match b {
                    b'\n' if value == 0 => State::Trailer { len: 0, total: 0 },
                    b'\n' => State::Data(value),
                    _ => return Err("chunk size line not ended by CRLF"),
                },
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    _ => return Err("chunk data not followed by CRLF"),
                },
                State::DataLf => match b {
                    b'\n' => State::Size {
                        value: 0,
                        digits: 0,
                    },
                    _ => return Err("chunk data not followed by CRLF"),
                },
                State::Trailer { len, total } => match b {
                    b'\r' => State::TrailerLf { len, total },
                    b'\n' => return Err("bare LF in trailer"),
                    _ if total >= MAX_LINE => return Err("trailer section too long"),
                    _ => State::Trailer {
                        len: len + 1,
                        total: total + 1,
                    },
                },
                State::TrailerLf { len, total } => match b {
                    b'\n' if len == 0 => State::Done,
                    b'\n' => State::Trailer { len: 0, total },
                    _ => return Err("trailer line not ended by CRLF"),
                },
            };
            i += 1;
        }
        Ok(i)
    }

    /// Whether the last chunk and trailer section have been seen.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(input: &[u8]) -> Result<(usize, bool), &'static str> {
        let mut c = Chunked::default();
        let n = c.scan(input)?;
        Ok((n, c.done()))
    }

    #[test]
    fn finds_the_end() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        assert_eq!(scan_all(body), Ok((body.len() - 4, true)));
        assert_eq!(scan_all(b"0\r\n\r\n"), Ok((5, true)));
    }

    #[test]
    fn any_split_gives_the_same_answer() {
        let body = b"a\r\n0123456789\r\n0\r\n\r\n";
        for cut in 0..body.len() {
            let mut c = Chunked::default();
            let a = c.scan(&body[..cut]).unwrap();
            assert_eq!(a, cut);
            let b = c.scan(&body[cut..]).unwrap();
            assert_eq!(a + b, body.len());
            assert!(c.done());
        }
    }

    #[test]
    fn rejects_ambiguous_shapes() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5 \r\nhello\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloXX",
            b"fffffffffffffffff\r\n",
            b"-1\r\n",
            b"0\r\nX: y\n\r\n",
        ] {
            assert!(scan_all(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// The outcome of scanning `input` in the pieces `cuts` makes: bytes
    /// of body and whether it ended, or the first error.
    fn scan_pieces(input: &[u8], cuts: &[usize]) -> Result<(usize, bool), &'static str> {
        let mut c = Chunked::default();
        let mut taken = 0;
        let mut from = 0;
        for &cut in cuts.iter().chain([&input.len()]) {
            taken += c.scan(&input[from..cut])?;
            from = cut;
        }
        Ok((taken, c.done()))
    }

    /// Mangled bodies never panic the scanner, and however the bytes arrive
    /// (as reads split them) the answer is the same: where the body ends
    /// must not depend on packet boundaries.
    #[test]
    fn mangled_bodies_get_one_answer_however_they_are_split() {
        let seeds: [&[u8]; 3] = [
            b"5\r\nhello\r\n1;ext=\"a b\"\r\n!\r\n0\r\nX-T: 1\r\n\r\nNEXT",
            b"10\r\n0123456789abcdef\r\n0\r\n\r\n",
            b"fffffffffffffff\r\nab\r\n",
        ];
        let mut rng = crate::mangle::Rng(0xc4a2_e0d5_0000_0001);
        let mut ended = 0;
        for input in crate::mangle::variants(&seeds, 20_000, 0xc4a2_e0d5_0000_0002) {
            let whole = scan_all(&input);
            let mut cuts = [rng.below(input.len() + 1), rng.below(input.len() + 1)];
            cuts.sort_unstable();
            assert_eq!(
                scan_pieces(&input, &cuts),
                whole,
                "{:?} cut at {cuts:?}",
                String::from_utf8_lossy(&input)
            );
            if let Ok((n, true)) = whole {
                assert!(n <= input.len());
                ended += 1;
            }
        }
        assert!(ended > 1_000, "only {ended} variants ended");
    }
}
