//! Test-only: deterministic near-misses of valid input, for the parsers'
//! robustness tests. Every parser that reads bytes from an agent or an
//! origin must answer (accept or refuse) without panicking, and must give
//! sluice and the peer one reading of the message; these helpers make the
//! inputs that probe that, reproducibly (a failure names its input).

/// Deterministic xorshift64*: reproducible without extra crates.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-enough in `0..n`; `n` must be non-zero.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn byte(&mut self) -> u8 {
        self.next().to_be_bytes()[0]
    }

    /// One of `items`, which must not be empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Bytes that steer text protocols (delimiters, digits, hex, signs, the
/// characters of IP literals and percent-encoding) and bytes that must
/// never pass (NUL, DEL, high bytes).
const STEERING: &[u8] = b"\r\n\t :;,=\"/?#@[]%.-+_0123456789abcdefxABCDEFX\0\x7f\x80\xff";

/// Header names and tokens whose presence changes how a message is read.
const WORDS: &[&[u8]] = &[
    b"Content-Length",
    b"Transfer-Encoding",
    b"chunked",
    b"Connection",
    b"close",
    b"keep-alive",
    b"content-length",
    b"transfer-encoding",
    b"Host",
    b"Proxy-Authorization",
    b"Upgrade",
    b"HTTP/1.0",
    b"HTTP/1.1",
    b"\r\n",
    b"\r\n\r\n",
    b": ",
    b", ",
    b"0",
    b"18446744073709551616",
    b"xn--",
    b"::ffff:",
];

/// Header names a header line may get, and the values it may carry (which
/// name headers too, as `Connection` values do).
const NAMES: &[&[u8]] = &[
    b"Connection",
    b"Content-Length",
    b"Transfer-Encoding",
    b"Host",
    b"Proxy-Connection",
    b"Keep-Alive",
    b"Trailer",
    b"X-A",
];
const VALUES: &[&[u8]] = &[
    b"close",
    b"keep-alive",
    b"chunked",
    b"gzip, chunked",
    b"5",
    b"0",
    b"content-length",
    b"Transfer-Encoding",
    b"host",
    b"x-a",
    b"api.example.com",
    b"api.example.com:8080",
];

/// One random edit of `input`: a byte changed, inserted or removed, a run
/// removed or copied elsewhere, a steering word or a whole header line
/// inserted, or a truncation.
pub fn mutate_text(input: &mut Vec<u8>, rng: &mut Rng) {
    let at = rng.below(input.len() + 1);
    let len = input.len();
    match rng.below(9) {
        6 => {
            // After a line break, so it often lands as a header of its own.
            let after = input[at..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(at, |i| at + i + 2);
            let value = *rng.pick(VALUES);
            let mut line = rng.pick(NAMES).to_vec();
            line.extend_from_slice(b": ");
            line.extend_from_slice(value);
            line.extend_from_slice(b"\r\n");
            input.splice(after..after, line);
        }
        0 if at < len => input[at] = *rng.pick(STEERING),
        1 if at < len => input[at] = rng.byte(),
        2 => input.insert(at, *rng.pick(STEERING)),
        3 if at < len => drop(input.drain(at..(at + 1 + rng.below(8)).min(len))),
        4 => input.truncate(at),
        5 => {
            let word = rng.pick(WORDS).to_vec();
            input.splice(at..at, word);
        }
        _ => {
            let from = rng.below(len.max(1));
            let run: Vec<u8> = input
                .iter()
                .skip(from)
                .take(1 + rng.below(32))
                .copied()
                .collect();
            input.splice(at..at, run);
        }
    }
}

/// `rounds` variants of the `seeds`, each one to four edits away from a
/// seed, after every seed as it is.
pub fn variants(seeds: &[&[u8]], rounds: usize, seed: u64) -> impl Iterator<Item = Vec<u8>> {
    let mut rng = Rng(seed);
    let seeds: Vec<Vec<u8>> = seeds.iter().map(|s| s.to_vec()).collect();
    let originals = seeds.clone().into_iter();
    let edited = (0..rounds).map(move |_| {
        let mut input = rng.pick(&seeds).clone();
        for _ in 0..1 + rng.below(4) {
            mutate_text(&mut input, &mut rng);
        }
        input
    });
    originals.chain(edited)
}
