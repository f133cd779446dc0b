//! Tests for the forbidden-address table: every range and its edges, the
//! IPv6 forms that embed an IPv4 address, operator exceptions, and the
//! table's own consistency.

use super::*;
use Forbidden::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn run(table: &[(&str, Option<Forbidden>)]) {
    for &(addr, want) in table {
        assert_eq!(classify(ip(addr)), want, "{addr}");
    }
}

#[test]
fn ipv4() {
    run(&[
        // Public.
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("93.184.216.34", None),
        ("104.18.7.192", None),
        ("223.255.255.255", None),
        // Unspecified, with both edges and both neighbours.
        ("0.0.0.0", Some(Unspecified)),
        ("0.255.255.255", Some(Unspecified)),
        ("1.0.0.0", None),
        // Loopback.
        ("126.255.255.255", None),
        ("127.0.0.0", Some(Loopback)),
        ("127.0.0.1", Some(Loopback)),
        ("127.0.0.2", Some(Loopback)),
        ("127.255.255.255", Some(Loopback)),
        ("128.0.0.0", None),
        // RFC 1918.
        ("9.255.255.255", None),
        ("10.0.0.0", Some(Private)),
        ("10.255.255.255", Some(Private)),
        ("11.0.0.0", None),
        ("172.15.255.255", None),
        ("172.16.0.0", Some(Private)),
        ("172.31.255.255", Some(Private)),
        ("172.32.0.0", None),
        ("192.167.255.255", None),
        ("192.168.0.0", Some(Private)),
        ("192.168.255.255", Some(Private)),
        ("192.169.0.0", None),
        // CGNAT.
        ("100.63.255.255", None),
        ("100.64.0.0", Some(SharedAddressSpace)),
        ("100.127.255.255", Some(SharedAddressSpace)),
        ("100.128.0.0", None),
        // Link-local and cloud metadata.
        ("169.253.255.255", None),
        ("169.254.0.0", Some(LinkLocal)),
        ("169.254.169.254", Some(LinkLocal)),
        ("169.254.255.255", Some(LinkLocal)),
        ("169.255.0.0", None),
        // IETF protocol assignments.
        ("191.255.255.255", None),
        ("192.0.0.0", Some(ProtocolAssignment)),
        ("192.0.0.9", Some(ProtocolAssignment)),
        ("192.0.0.170", Some(ProtocolAssignment)),
        ("192.0.0.255", Some(ProtocolAssignment)),
        ("192.0.1.0", None),
        // Documentation.
        ("192.0.2.0", Some(Documentation)),
        ("192.0.2.255", Some(Documentation)),
        ("192.0.3.0", None),
        ("198.51.99.255", None),
        ("198.51.100.7", Some(Documentation)),
        ("198.51.101.0", None),
        ("203.0.112.255", None),
        ("203.0.113.0", Some(Documentation)),
        ("203.0.113.255", Some(Documentation)),
        ("203.0.114.0", None),
        // 6to4 relay anycast.
        ("192.88.98.255", None),
        ("192.88.99.1", Some(Relay6to4)),
        ("192.88.100.0", None),
        // Benchmarking.
        ("198.17.255.255", None),
        ("198.18.0.0", Some(Benchmarking)),
        ("198.19.255.255", Some(Benchmarking)),
        ("198.20.0.0", None),
        // Multicast, reserved, broadcast.
        ("224.0.0.0", Some(Multicast)),
        ("224.0.0.251", Some(Multicast)),
        ("239.255.255.255", Some(Multicast)),
        ("240.0.0.0", Some(Reserved)),
        ("255.255.255.254", Some(Reserved)),
        ("255.255.255.255", Some(Broadcast)),
    ]);
}

#[test]
fn ipv6() {
    run(&[
        // Public.
        ("2606:4700::1111", None),
        ("2001:4860:4860::8888", None),
        ("2a00:1450:4001:80b::200e", None),
        ("2001:200::1", None),
        ("2001:db9::1", None),
        ("3fff:1000::1", None),
        ("2620:4f:8000::1", None),
        ("3ffe::1", None),
        // Unspecified and loopback.
        ("::", Some(Unspecified)),
        ("::1", Some(Loopback)),
        // Link-local, site-local, unique local, multicast.
        ("fe80::1", Some(LinkLocal)),
        ("febf:ffff::1", Some(LinkLocal)),
        ("fec0::1", Some(SiteLocal)),
        ("feff:ffff::1", Some(SiteLocal)),
        ("fc00::1", Some(UniqueLocal)),
        ("fd00:ec2::254", Some(UniqueLocal)),
        ("fdff:ffff::1", Some(UniqueLocal)),
        ("ff02::1", Some(Multicast)),
        ("ff05::1:3", Some(Multicast)),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(Multicast)),
        // Documentation.
        ("2001:db8::1", Some(Documentation)),
        ("2001:db8:ffff:ffff::1", Some(Documentation)),
        ("3fff::1", Some(Documentation)),
        ("3fff:fff:ffff::1", Some(Documentation)),
        // Benchmarking, Teredo, the rest of 2001::/23.
        ("2001:2::1", Some(Benchmarking)),
        ("2001:2:0:ffff::1", Some(Benchmarking)),
        ("2001:3::1", Some(ProtocolAssignment)),
        ("2001:1::1", Some(ProtocolAssignment)),
        ("2001:20::1", Some(ProtocolAssignment)),
        ("2001:1ff:ffff::1", Some(ProtocolAssignment)),
        ("2001::1", Some(Teredo)),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Some(Teredo)),
        ("2001:0:ffff:ffff:ffff:ffff:ffff:ffff", Some(Teredo)),
        // Discard-only.
        ("100::1", Some(DiscardOnly)),
        ("100::ffff:ffff:ffff:ffff", Some(DiscardOnly)),
        ("100:0:0:1::1", Some(Reserved)),
        // Local-use NAT64.
        ("64:ff9b:1::1", Some(LocalNat64)),
        ("64:ff9b:1:ffff::808:808", Some(LocalNat64)),
        ("64:ff9b:2::1", Some(Reserved)),
        // Outside global unicast 2000::/3.
        ("1fff:ffff::1", Some(Reserved)),
        ("4000::1", Some(Reserved)),
        ("5f00::1", Some(Reserved)),
        ("::1:0:0:1", Some(Reserved)),
    ]);
}

#[test]
fn ipv6_forms_carrying_ipv4() {
    run(&[
        // IPv4-mapped.
        ("::ffff:8.8.8.8", None),
        ("::ffff:127.0.0.1", Some(Loopback)),
        ("::ffff:169.254.169.254", Some(LinkLocal)),
        ("::ffff:10.0.0.1", Some(Private)),
        ("::ffff:100.64.0.1", Some(SharedAddressSpace)),
        ("::ffff:0.0.0.0", Some(Unspecified)),
        ("::ffff:255.255.255.255", Some(Broadcast)),
        // IPv4-compatible.
        ("::8.8.8.8", None),
        ("::127.0.0.1", Some(Loopback)),
        ("::169.254.169.254", Some(LinkLocal)),
        ("::2", Some(Unspecified)),
        ("::1.0.0.0", None),
        // IPv4-translated.
        ("::ffff:0:8.8.8.8", None),
        ("::ffff:0:10.0.0.1", Some(Private)),
        ("::ffff:0:169.254.169.254", Some(LinkLocal)),
        // NAT64 well-known prefix.
        ("64:ff9b::808:808", None),
        ("64:ff9b::a9fe:a9fe", Some(LinkLocal)),
        ("64:ff9b::7f00:1", Some(Loopback)),
        ("64:ff9b::192.168.1.1", Some(Private)),
        ("64:ff9b::1:7f00:1", Some(Reserved)),
        // 6to4.
        ("2002:0808:0808::1", None),
        ("2002:a9fe:a9fe::1", Some(LinkLocal)),
        ("2002:7f00:1::1", Some(Loopback)),
        ("2002:a00:1:ffff::1", Some(Private)),
        ("2002:c058:6301::1", Some(Relay6to4)),
        ("2002::", Some(Unspecified)),
    ]);
}

#[test]
fn check_with_exceptions() {
    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }
    type Row = (&'static [&'static str], &'static str, Result<(), Forbidden>);
    let table: &[Row] = &[
        // No exceptions: public passes, the rest is refused.
        (&[], "8.8.8.8", Ok(())),
        (&[], "2606:4700::1111", Ok(())),
        (&[], "10.1.2.3", Err(Private)),
        (&[], "169.254.169.254", Err(LinkLocal)),
        (&[], "::ffff:127.0.0.1", Err(Loopback)),
        // An exception covers the address and the forms carrying it.
        (&["10.0.0.0/8"], "10.1.2.3", Ok(())),
        (&["10.0.0.0/8"], "::ffff:10.1.2.3", Ok(())),
        (&["10.0.0.0/8"], "::ffff:0:10.1.2.3", Ok(())),
        (&["10.0.0.0/8"], "64:ff9b::a01:203", Ok(())),
        (&["10.0.0.0/8"], "2002:a01:203::1", Ok(())),
        (&["10.0.0.0/8"], "8.8.8.8", Ok(())),
        // ... and nothing else.
        (&["10.0.0.0/8"], "11.0.0.1", Ok(())),
        (&["10.0.0.0/8"], "192.168.1.1", Err(Private)),
        (&["10.0.0.0/8"], "::ffff:192.168.1.1", Err(Private)),
        (&["10.0.0.0/8"], "169.254.169.254", Err(LinkLocal)),
        (&["10.0.0.0/8"], "fd00::1", Err(UniqueLocal)),
        (&["127.0.0.0/8"], "127.0.0.2", Ok(())),
        (&["127.0.0.0/8"], "::ffff:127.0.0.2", Ok(())),
        (&["127.0.0.0/8"], "::1", Err(Loopback)),
        (&["::1/128"], "::1", Ok(())),
        (&["::1/128"], "127.0.0.1", Err(Loopback)),
        (&["169.254.169.254/32"], "169.254.169.254", Ok(())),
        (&["169.254.169.254/32"], "169.254.169.253", Err(LinkLocal)),
        (&["fd00::/8"], "fd12::1", Ok(())),
        (&["fd00::/8"], "fc00::1", Err(UniqueLocal)),
        // An IPv6 exception written in mapped form covers the mapped form.
        (&["::ffff:10.0.0.0/104"], "::ffff:10.1.2.3", Ok(())),
        // Several exceptions: any one suffices.
        (&["10.0.0.0/8", "100.64.0.0/10"], "100.100.100.100", Ok(())),
        (&["10.0.0.0/8", "100.64.0.0/10"], "172.16.0.1", Err(Private)),
        // Teredo carries no decodable address: only an IPv6 exception helps.
        (&["0.0.0.0/0"], "2001::1", Err(Teredo)),
        (&["2001::/32"], "2001::1", Ok(())),
    ];
    for &(allow, addr, want) in table {
        assert_eq!(
            check(ip(addr), &nets(allow)),
            want,
            "{addr} allow {allow:?}"
        );
    }
}

#[test]
fn tokens() {
    let all = [
        (Unspecified, "unspecified"),
        (Loopback, "loopback"),
        (Private, "private"),
        (SharedAddressSpace, "shared_address_space"),
        (LinkLocal, "link_local"),
        (UniqueLocal, "unique_local"),
        (SiteLocal, "site_local"),
        (Multicast, "multicast"),
        (Broadcast, "broadcast"),
        (Reserved, "reserved"),
        (Documentation, "documentation"),
        (Benchmarking, "benchmarking"),
        (ProtocolAssignment, "protocol_assignment"),
        (Relay6to4, "relay_6to4"),
        (Teredo, "teredo"),
        (DiscardOnly, "discard_only"),
        (LocalNat64, "local_nat64"),
    ];
    for (why, token) in all {
        assert_eq!(why.as_str(), token);
        assert_eq!(why.to_string(), token);
    }
}

/// The tables are well-formed: no host bits set below the prefix length.
#[test]
fn ranges_are_canonical() {
    for &(net, len, why) in V4_RANGES {
        assert_eq!(
            net & mask32(len),
            net,
            "{} /{len} {why:?}",
            Ipv4Addr::from(net)
        );
    }
    for &(net, len, why) in V6_RANGES.iter().chain([&GLOBAL_UNICAST]) {
        assert_eq!(
            net & mask128(len),
            net,
            "{} /{len} {why:?}",
            Ipv6Addr::from(net)
        );
    }
}

/// Every IPv6 form that carries an IPv4 address is judged as that address,
/// with and without exceptions, for addresses all over the IPv4 space (the
/// edges of every forbidden range included): no form is a way around the
/// table, and no exception reaches further through one.
#[test]
fn every_form_carrying_an_ipv4_address_is_judged_as_that_address() {
    let mut rng = crate::mangle::Rng(0xadd2_0000_0000_0001);
    let edges = V4_RANGES.iter().flat_map(|&(net, len, _)| {
        let last = net | (u32::MAX.checked_shr(u32::from(len)).unwrap_or(0));
        [net.wrapping_sub(1), net, last, last.wrapping_add(1)]
    });
    let random: Vec<u32> = (0..20_000).map(|_| rng.next() as u32).collect();
    let allow: Vec<IpNet> = ["10.0.0.0/8", "169.254.169.254/32", "100.64.0.0/10"]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
    for bits in edges.chain(random) {
        let v4 = Ipv4Addr::from(bits);
        let low = u128::from(bits);
        let forms = [
            0xffff_u128 << 32 | low,              // ::ffff:a.b.c.d (mapped)
            0xffff_0000_u128 << 32 | low,         // ::ffff:0:a.b.c.d (translated)
            0x0064_ff9b_u128 << 96 | low,         // 64:ff9b::a.b.c.d (NAT64)
            0x2002_u128 << 112 | low << 80 | 0x1, // 2002:AABB:CCDD::1 (6to4)
        ];
        let mut all = forms.to_vec();
        if bits > 1 {
            all.push(low); // ::a.b.c.d (compatible)
        }
        for form in all {
            let v6 = IpAddr::V6(Ipv6Addr::from(form));
            assert_eq!(classify(v6), classify(IpAddr::V4(v4)), "{v6} vs {v4}");
            assert_eq!(
                check(v6, &allow),
                check(IpAddr::V4(v4), &allow),
                "{v6} vs {v4} with exceptions"
            );
        }
    }
}
