//! Tests for host normalisation: case, trailing dots, IDNA, the numeric
//! forms of IPv4 and IPv6, and the errors a user sees.

use super::*;

/// What a host string should parse to.
#[derive(Debug)]
enum Want {
    N(&'static str),
    V4(&'static str),
    V6(&'static str),
    E(HostError),
}
use Want::*;

fn check_host(input: &str, want: &Want) {
    let got = Host::parse(input);
    match (want, &got) {
        (N(n), Ok(Host::Name(name))) => assert_eq!(name.as_str(), *n, "{input:?}"),
        (V4(a), Ok(Host::Ip(ip @ IpAddr::V4(_)))) => {
            assert_eq!(ip, &a.parse::<IpAddr>().unwrap(), "{input:?}");
        }
        (V6(a), Ok(Host::Ip(ip @ IpAddr::V6(_)))) => {
            assert_eq!(ip, &a.parse::<IpAddr>().unwrap(), "{input:?}");
        }
        (E(e), Err(got)) => assert_eq!(got, e, "{input:?}"),
        _ => panic!("{input:?}: want {want:?}, got {got:?}"),
    }
}

fn repeat(c: char, n: usize) -> String {
    std::iter::repeat_n(c, n).collect()
}

#[test]
fn names() {
    let table: &[(&str, Want)] = &[
        ("example.com", N("example.com")),
        ("api.openai.com", N("api.openai.com")),
        ("localhost", N("localhost")),
        ("a", N("a")),
        ("a-b--c.example", N("a-b--c.example")),
        // Hyphen positions are not restricted (CheckHyphens=false, as in
        // browsers): real CDN and user-page names have them.
        ("-a.example", N("-a.example")),
        ("a-.example", N("a-.example")),
        // Case.
        ("Example.COM", N("example.com")),
        ("API.OpenAI.com", N("api.openai.com")),
        // Exactly one trailing dot is stripped.
        ("example.com.", N("example.com")),
        ("EXAMPLE.com.", N("example.com")),
        ("example.com..", E(HostError::EmptyLabel)),
        // Names containing numbers are names as long as the last label isn't numeric.
        ("127.0.0.1.nip.io", N("127.0.0.1.nip.io")),
        ("1.2.3.4a", N("1.2.3.4a")),
        ("0xg.example", N("0xg.example")),
        ("example.0xg", N("example.0xg")),
        ("123abc", N("123abc")),
        ("1e3", N("1e3")),
    ];
    for (input, want) in table {
        check_host(input, want);
    }
}

#[test]
fn idna() {
    let table: &[(&str, Want)] = &[
        ("Bücher.example", N("xn--bcher-kva.example")),
        ("bücher.example", N("xn--bcher-kva.example")),
        ("BÜCHER.EXAMPLE.", N("xn--bcher-kva.example")),
        ("xn--bcher-kva.example", N("xn--bcher-kva.example")),
        ("XN--BCHER-KVA.example", N("xn--bcher-kva.example")),
        ("例え.テスト", N("xn--r8jz45g.xn--zckzah")),
        ("münchen.de", N("xn--mnchen-3ya.de")),
        // Non-transitional processing: 'ß' is kept, not mapped to "ss".
        ("faß.de", N("xn--fa-hia.de")),
        // Full-width letters and ideographic / full-width dots map to ASCII.
        ("ＥＸＡＭＰＬＥ.com", N("example.com")),
        ("example。com", N("example.com")),
        ("example．com．", N("example.com")),
        // Soft hyphen is ignored by UTS 46, so both spellings are one host.
        ("exa\u{ad}mple.com", N("example.com")),
        // Broken punycode and disallowed code points.
        ("xn--a.example", E(HostError::Idna)),
        ("xn--bcher-kva1.example", E(HostError::Idna)),
        ("a\u{fffd}b.example", E(HostError::Idna)),
        // Code points that UTS 46 maps onto forbidden ASCII are caught after mapping.
        ("a＿b.example", E(HostError::InvalidChar('_'))),
        ("a／b.example", E(HostError::InvalidChar('/'))),
        // A label that only becomes too long in punycode.
        (
            &format!("{}.example", repeat('ü', 60)),
            E(HostError::LabelTooLong),
        ),
    ];
    for (input, want) in table {
        check_host(input, want);
    }
}

#[test]
fn invalid_names() {
    let table: &[(&str, Want)] = &[
        ("", E(HostError::Empty)),
        (".", E(HostError::Empty)),
        ("..", E(HostError::EmptyLabel)),
        ("a..b", E(HostError::EmptyLabel)),
        (".example.com", E(HostError::EmptyLabel)),
        ("a_b.example", E(HostError::InvalidChar('_'))),
        ("_dmarc.example", E(HostError::InvalidChar('_'))),
        ("*.example.com", E(HostError::InvalidChar('*'))),
        ("a b.example", E(HostError::InvalidChar(' '))),
        (" example.com", E(HostError::InvalidChar(' '))),
        ("example.com\t", E(HostError::InvalidChar('\t'))),
        ("exa\0mple.com", E(HostError::InvalidChar('\0'))),
        ("example.com\r\nx", E(HostError::InvalidChar('\r'))),
        ("%65xample.com", E(HostError::InvalidChar('%'))),
        ("user@example.com", E(HostError::InvalidChar('@'))),
        ("example.com/path", E(HostError::InvalidChar('/'))),
        ("example.com:443", E(HostError::InvalidChar(':'))),
        ("example.com\\", E(HostError::InvalidChar('\\'))),
        ("[example.com]", E(HostError::InvalidIpv6)),
    ];
    for (input, want) in table {
        check_host(input, want);
    }
}

#[test]
fn length_limits() {
    let l63 = repeat('a', 63);
    let l64 = repeat('a', 64);
    // 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253 bytes.
    let n253 = format!("{l63}.{l63}.{l63}.{}", repeat('b', 61));
    let n254 = format!("{l63}.{l63}.{l63}.{}", repeat('b', 62));
    assert_eq!(n253.len(), 253);
    assert_eq!(n254.len(), 254);
    // Ok: the name comes back unchanged (lower-cased, root dot stripped).
    let table: Vec<(String, Result<(), HostError>)> = vec![
        (format!("{l63}.example"), Ok(())),
        (format!("{l64}.example"), Err(HostError::LabelTooLong)),
        (l63.clone(), Ok(())),
        (l64.clone(), Err(HostError::LabelTooLong)),
        (l63.to_uppercase(), Ok(())),
        (l64.to_uppercase(), Err(HostError::LabelTooLong)),
        (format!("{l63}."), Ok(())),
        (n253.clone(), Ok(())),
        (n253.to_uppercase(), Ok(())),
        // The root dot does not count.
        (format!("{n253}."), Ok(())),
        (n254.clone(), Err(HostError::NameTooLong)),
        (format!("{n254}."), Err(HostError::NameTooLong)),
        (n254.to_uppercase(), Err(HostError::NameTooLong)),
    ];
    for (input, want) in &table {
        let got = Name::parse(input);
        let got = got.as_ref().map(Name::as_str).map_err(|e| *e);
        let lower = input.to_lowercase();
        let want = want.map(|()| lower.strip_suffix('.').unwrap_or(&lower));
        assert_eq!(got, want, "{input:?}");
    }
}

#[test]
fn ipv4_literals_and_numeric_forms() {
    let table: &[(&str, Want)] = &[
        ("1.2.3.4", V4("1.2.3.4")),
        ("0.0.0.0", V4("0.0.0.0")),
        ("127.0.0.1", V4("127.0.0.1")),
        ("255.255.255.255", V4("255.255.255.255")),
        ("169.254.169.254", V4("169.254.169.254")),
        // The trailing dot is stripped before the number check (as in WHATWG URL).
        ("1.2.3.4.", V4("1.2.3.4")),
        // Full-width digits and dots map to ASCII under UTS 46: the result
        // is the address (what a browser would dial), never a name.
        ("１２７．０．０．１", V4("127.0.0.1")),
        ("127。0。0。1", V4("127.0.0.1")),
        ("０ｘ７ｆ．１", E(HostError::MalformedIpv4)),
        ("１２７．１", E(HostError::MalformedIpv4)),
        // Everything inet_aton would accept but a strict dotted quad would not.
        ("01.2.3.4", E(HostError::MalformedIpv4)),
        ("1.2.3.04", E(HostError::MalformedIpv4)),
        ("00.0.0.0", E(HostError::MalformedIpv4)),
        ("0177.0.0.1", E(HostError::MalformedIpv4)),
        ("127.1", E(HostError::MalformedIpv4)),
        ("127.0.1", E(HostError::MalformedIpv4)),
        ("2130706433", E(HostError::MalformedIpv4)),
        ("0", E(HostError::MalformedIpv4)),
        ("0x7f.1", E(HostError::MalformedIpv4)),
        ("0X7F.1", E(HostError::MalformedIpv4)),
        ("0x7f000001", E(HostError::MalformedIpv4)),
        ("0x7f.0x0.0x0.0x1", E(HostError::MalformedIpv4)),
        ("127.0.0.0x1", E(HostError::MalformedIpv4)),
        ("1.2.3.4.5", E(HostError::MalformedIpv4)),
        ("256.1.1.1", E(HostError::MalformedIpv4)),
        ("1.2.3.256", E(HostError::MalformedIpv4)),
        ("1.2.3.1000", E(HostError::MalformedIpv4)),
        ("example.123", E(HostError::MalformedIpv4)),
        ("example.0x", E(HostError::MalformedIpv4)),
        ("example.0x1f", E(HostError::MalformedIpv4)),
        ("foo.1.2.3.4", E(HostError::MalformedIpv4)),
        ("1.2.3.4..", E(HostError::EmptyLabel)),
        ("1..2.3", E(HostError::EmptyLabel)),
        ("+1.2.3.4", E(HostError::InvalidChar('+'))),
    ];
    for (input, want) in table {
        check_host(input, want);
    }
}

#[test]
fn ipv6_literals() {
    let table: &[(&str, Want)] = &[
        ("[::1]", V6("::1")),
        ("[::]", V6("::")),
        ("[2606:4700::1111]", V6("2606:4700::1111")),
        (
            "[2606:4700:0000:0000:0000:0000:0000:1111]",
            V6("2606:4700::1111"),
        ),
        ("[FE80::1]", V6("fe80::1")),
        ("[::ffff:10.0.0.1]", V6("::ffff:10.0.0.1")),
        ("[64:ff9b::169.254.169.254]", V6("64:ff9b::a9fe:a9fe")),
        ("[fe80::1%eth0]", E(HostError::Ipv6Zone)),
        ("[fe80::1%25eth0]", E(HostError::Ipv6Zone)),
        ("[]", E(HostError::InvalidIpv6)),
        ("[::1", E(HostError::InvalidIpv6)),
        ("[1.2.3.4]", E(HostError::InvalidIpv6)),
        ("[::1::2]", E(HostError::InvalidIpv6)),
        ("[ ::1]", E(HostError::InvalidIpv6)),
        ("[::1]]", E(HostError::InvalidIpv6)),
        ("::1", E(HostError::UnbracketedIpv6)),
        ("2606:4700::1111", E(HostError::UnbracketedIpv6)),
        ("::ffff:127.0.0.1", E(HostError::UnbracketedIpv6)),
    ];
    for (input, want) in table {
        check_host(input, want);
    }
}

#[test]
fn name_parse_rejects_addresses() {
    let table: &[(&str, Result<&str, HostError>)] = &[
        ("Example.com.", Ok("example.com")),
        ("bücher.example", Ok("xn--bcher-kva.example")),
        ("1.2.3.4", Err(HostError::NotAName)),
        ("１２７．０．０．１", Err(HostError::NotAName)),
        ("[::1]", Err(HostError::NotAName)),
        ("::1", Err(HostError::NotAName)),
        ("127.1", Err(HostError::MalformedIpv4)),
        ("0x7f000001", Err(HostError::MalformedIpv4)),
        ("", Err(HostError::Empty)),
        ("a_b", Err(HostError::InvalidChar('_'))),
    ];
    for (input, want) in table {
        let got = Name::parse(input);
        assert_eq!(
            got.as_ref().map(Name::as_str),
            want.as_ref().copied(),
            "{input:?}"
        );
    }
}

#[test]
fn authorities() {
    type Row = (
        &'static str,
        Option<u16>,
        Result<(&'static str, u16), HostError>,
    );
    let table: &[Row] = &[
        ("example.com:443", None, Ok(("example.com", 443))),
        ("Example.COM.:8443", None, Ok(("example.com", 8443))),
        ("example.com", Some(80), Ok(("example.com", 80))),
        ("example.com", None, Err(HostError::MissingPort)),
        ("1.2.3.4:80", None, Ok(("1.2.3.4", 80))),
        ("1.2.3.4", Some(443), Ok(("1.2.3.4", 443))),
        ("[::1]:8080", None, Ok(("[::1]", 8080))),
        ("[::1]", Some(443), Ok(("[::1]", 443))),
        ("[::1]", None, Err(HostError::MissingPort)),
        (
            "[::ffff:10.0.0.1]:443",
            None,
            Ok(("[::ffff:10.0.0.1]", 443)),
        ),
        (
            "bücher.example:443",
            None,
            Ok(("xn--bcher-kva.example", 443)),
        ),
        ("example.com:1", None, Ok(("example.com", 1))),
        ("example.com:65535", None, Ok(("example.com", 65535))),
        ("example.com:0443", None, Ok(("example.com", 443))),
        // Ports.
        ("example.com:0", None, Err(HostError::InvalidPort)),
        ("example.com:65536", None, Err(HostError::InvalidPort)),
        ("example.com:99999999999", None, Err(HostError::InvalidPort)),
        ("example.com:", Some(80), Err(HostError::InvalidPort)),
        ("example.com:+443", None, Err(HostError::InvalidPort)),
        ("example.com:-1", None, Err(HostError::InvalidPort)),
        ("example.com:44 3", None, Err(HostError::InvalidPort)),
        ("example.com:0x1bb", None, Err(HostError::InvalidPort)),
        ("example.com: 443", None, Err(HostError::InvalidPort)),
        ("[::1]:", Some(80), Err(HostError::InvalidPort)),
        ("[::1]:0", None, Err(HostError::InvalidPort)),
        // Hosts.
        (":443", None, Err(HostError::Empty)),
        ("", Some(80), Err(HostError::Empty)),
        ("127.1:80", None, Err(HostError::MalformedIpv4)),
        ("0x7f.1:443", None, Err(HostError::MalformedIpv4)),
        (
            "user@example.com:443",
            None,
            Err(HostError::InvalidChar('@')),
        ),
        (
            "user:pw@example.com:443",
            None,
            Err(HostError::InvalidChar(':')),
        ),
        ("a_b.example:443", None, Err(HostError::InvalidChar('_'))),
        ("::1", Some(80), Err(HostError::UnbracketedIpv6)),
        ("::1:443", None, Err(HostError::UnbracketedIpv6)),
        ("2606:4700::1111:443", None, Err(HostError::UnbracketedIpv6)),
        ("[::1]x", None, Err(HostError::TrailingAfterIpv6)),
        ("[::1]443", None, Err(HostError::TrailingAfterIpv6)),
        ("[::1]:443]", None, Err(HostError::InvalidPort)),
        ("[fe80::1%eth0]:443", None, Err(HostError::Ipv6Zone)),
        ("[::1:443", None, Err(HostError::InvalidIpv6)),
        ("[example.com]:443", None, Err(HostError::InvalidIpv6)),
    ];
    for (input, default, want) in table {
        let got = parse_authority(input, *default);
        let got = got.map(|(h, p)| (h.to_string(), p));
        let want = want.map(|(h, p)| (h.to_string(), p));
        assert_eq!(got, want, "{input:?}");
    }
}

#[test]
fn display() {
    let table = [
        ("Example.COM.", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("10.0.0.1", "10.0.0.1"),
        ("[::1]", "[::1]"),
        ("[0:0:0:0:0:ffff:a00:1]", "[::ffff:10.0.0.1]"),
    ];
    for (input, want) in table {
        let host = Host::parse(input).unwrap();
        assert_eq!(host.to_string(), want, "{input:?}");
        // Display is an input form that parses back to the same host.
        assert_eq!(Host::parse(&host.to_string()).unwrap(), host, "{input:?}");
    }
    let name = Name::parse("Example.com").unwrap();
    assert_eq!(name.to_string(), "example.com");
    assert_eq!(Host::Name(name.clone()).name(), Some(&name));
    assert_eq!(Host::parse("1.2.3.4").unwrap().name(), None);
}

#[test]
fn error_messages() {
    let table = [
        (HostError::LabelTooLong, "label longer than 63 bytes"),
        (HostError::NameTooLong, "name longer than 253 bytes"),
        (
            HostError::MalformedIpv4,
            "numeric host form is not a valid IPv4 address",
        ),
        (HostError::InvalidChar('_'), "invalid character '_' in host"),
        // Control characters are escaped, so a reason can't break a log line.
        (
            HostError::InvalidChar('\n'),
            "invalid character '\\n' in host",
        ),
        (HostError::MissingPort, "missing port"),
    ];
    for (err, want) in table {
        assert_eq!(err.to_string(), want);
    }
}

/// The fast path must agree with IDNA: whatever it accepts unchanged,
/// UTS 46 processing would also have returned unchanged.
#[test]
fn fast_path_matches_idna() {
    let inputs = [
        "example.com",
        "a-b--c.example",
        "-a-.example",
        "ab--cd.example",
        "127.0.0.1.nip.io",
        "0xg.example",
        "1.2.3.4",
        "a..b",
        "example.com.",
        &repeat('a', 64),
    ];
    for input in inputs {
        assert!(is_canonical_ascii(input), "{input:?}");
        let idna = idna::domain_to_ascii_cow(input.as_bytes(), AsciiDenyList::EMPTY).unwrap();
        assert!(matches!(idna, Cow::Borrowed(s) if s == input), "{input:?}");
    }
    for input in [
        "Example.com",
        "xn--bcher-kva.example",
        "a_b",
        "bücher.example",
        "a b",
    ] {
        assert!(!is_canonical_ascii(input), "{input:?}");
    }
}

/// Whatever an agent writes as a destination, what sluice makes of it is a
/// fixed point: the normal form, parsed again, is itself. The policy, the
/// log and the resolver all see that one form, so a spelling cannot match
/// differently in one place than in another.
#[test]
fn mangled_authorities_normalise_to_a_fixed_point() {
    let seeds: [&[u8]; 8] = [
        b"api.example.com:443",
        "Bücher.Example.:8443".as_bytes(),
        b"xn--bcher-kva.example",
        b"[2001:db8::1]:443",
        b"[::ffff:127.0.0.1]:80",
        b"127.0.0.1:80",
        "１２７．０．０．１:443".as_bytes(),
        b"a_b.example.com.:1",
    ];
    let mut accepted = 0;
    for input in crate::mangle::variants(&seeds, 20_000, 0x4057_0000_0000_0001) {
        let input = String::from_utf8_lossy(&input);
        let Ok((host, port)) = parse_authority(&input, Some(443)) else {
            continue;
        };
        accepted += 1;
        let shown = host.to_string();
        assert_eq!(
            parse_authority(&format!("{shown}:{port}"), None),
            Ok((host.clone(), port)),
            "{input:?} became {shown:?}"
        );
        if let Host::Name(name) = &host {
            let s = name.as_str();
            assert!(s.is_ascii() && !s.ends_with('.'), "{input:?} became {s:?}");
            assert_eq!(s, s.to_ascii_lowercase(), "{input:?}");
            assert_eq!(Name::parse(s).as_ref(), Ok(name), "{input:?} became {s:?}");
        }
    }
    assert!(accepted > 2_000, "only {accepted} variants were accepted");
}
