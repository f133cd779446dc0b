//! Forbidden destination addresses (SPEC "Forbidden addresses"): what sluice
//! never dials, whatever the rules say, unless `egress.allow_cidrs` makes an
//! exception. Applied to the address actually dialled, after resolution.
//!
//! Owns the range table and the decoding of IPv6 forms that carry an IPv4
//! address. Not here: resolution (`dns`), host syntax (`host`), host
//! patterns (`policy::rules`). Pure integer checks: no IO, no allocation.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why an address is forbidden.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Forbidden {
    /// 0.0.0.0/8, `::`.
    Unspecified,
    /// 127.0.0.0/8, `::1`.
    Loopback,
    /// RFC 1918: 10/8, 172.16/12, 192.168/16.
    Private,
    /// 100.64.0.0/10, carrier-grade NAT (RFC 6598).
    SharedAddressSpace,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// fc00::/7 (RFC 4193).
    UniqueLocal,
    /// fec0::/10, deprecated site-local (RFC 3879).
    SiteLocal,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 240.0.0.0/4, and IPv6 outside 2000::/3 that no other row names.
    Reserved,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20.
    Documentation,
    /// 198.18.0.0/15, 2001:2::/48.
    Benchmarking,
    /// 192.0.0.0/24, 2001::/23 (IETF protocol assignments).
    ProtocolAssignment,
    /// 192.88.99.0/24, the deprecated 6to4 relay anycast (RFC 7526).
    Relay6to4,
    /// 2001::/32, Teredo (RFC 4380).
    Teredo,
    /// 100::/64, discard-only (RFC 6666).
    DiscardOnly,
    /// 64:ff9b:1::/48, local-use NAT64 (RFC 8215).
    LocalNat64,
}

impl Forbidden {
    /// The snake_case token for logs, `explain` and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Forbidden::Unspecified => "unspecified",
            Forbidden::Loopback => "loopback",
            Forbidden::Private => "private",
            Forbidden::SharedAddressSpace => "shared_address_space",
            Forbidden::LinkLocal => "link_local",
            Forbidden::UniqueLocal => "unique_local",
            Forbidden::SiteLocal => "site_local",
            Forbidden::Multicast => "multicast",
            Forbidden::Broadcast => "broadcast",
            Forbidden::Reserved => "reserved",
            Forbidden::Documentation => "documentation",
            Forbidden::Benchmarking => "benchmarking",
            Forbidden::ProtocolAssignment => "protocol_assignment",
            Forbidden::Relay6to4 => "relay_6to4",
            Forbidden::Teredo => "teredo",
            Forbidden::DiscardOnly => "discard_only",
            Forbidden::LocalNat64 => "local_nat64",
        }
    }
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies an address. `None`: a public address that may be dialled.
/// `Some(why)`: never dial it (unless an `allow_cidrs` exception applies,
/// see [`check`]). IPv6 forms that carry an IPv4 address (mapped,
/// compatible, translated, NAT64, 6to4) are classified by that address.
pub fn classify(ip: IpAddr) -> Option<Forbidden> {
    match ip {
        IpAddr::V4(ip) => classify_v4(ip),
        IpAddr::V6(ip) => classify_v6(ip),
    }
}

/// The decision on an address actually dialled: `Ok` if it is public, or if
/// it (or the IPv4 address it embeds) lies in `allow` (`egress.allow_cidrs`);
/// else `Err(why)`.
///
/// # Errors
/// The [`Forbidden`] reason from [`classify`] when no exception applies.
pub fn check(ip: IpAddr, allow: &[IpNet]) -> Result<(), Forbidden> {
    let Some(why) = classify(ip) else {
        return Ok(());
    };
    // The exception follows the classification: a form judged by the IPv4
    // address it carries is also allowed by that address, so allowing
    // 10.0.0.0/8 also covers ::ffff:10.1.2.3 and a DNS64-synthesised
    // 64:ff9b::a01:203.
    let embedded = match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    let allowed = allow
        .iter()
        .any(|net| net.contains(&ip) || embedded.is_some_and(|v4| net.contains(&v4)));
    if allowed { Ok(()) } else { Err(why) }
}

// === IPv4 ===

/// An IPv4 prefix: network address, prefix length, reason. First match wins.
type Range4 = (u32, u8, Forbidden);

const fn v4(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_be_bytes([a, b, c, d])
}

const V4_RANGES: &[Range4] = &[
    // "This network": Linux delivers a connect to 0.0.0.0 (and others here)
    // to the proxy's own host.
    (v4(0, 0, 0, 0), 8, Forbidden::Unspecified),
    // The proxy's own services (admin listener, sidecars) listen here.
    (v4(127, 0, 0, 0), 8, Forbidden::Loopback),
    // RFC 1918: the cluster and the corporate network behind the proxy.
    (v4(10, 0, 0, 0), 8, Forbidden::Private),
    (v4(172, 16, 0, 0), 12, Forbidden::Private),
    (v4(192, 168, 0, 0), 16, Forbidden::Private),
    // CGNAT space: used internally by clouds, VPN meshes (Tailscale) and
    // some Kubernetes networks; never a public destination.
    (v4(100, 64, 0, 0), 10, Forbidden::SharedAddressSpace),
    // Link-local: cloud metadata (169.254.169.254) hands out credentials.
    (v4(169, 254, 0, 0), 16, Forbidden::LinkLocal),
    // IETF protocol assignments (DS-Lite, NAT64 discovery, PCP/TURN
    // anycast): middlebox and host-local addresses, not web servers.
    (v4(192, 0, 0, 0), 24, Forbidden::ProtocolAssignment),
    // Documentation (TEST-NET-1/2/3): no real host, so an answer pointing
    // here is a mistake or a sinkhole on the local network.
    (v4(192, 0, 2, 0), 24, Forbidden::Documentation),
    (v4(198, 51, 100, 0), 24, Forbidden::Documentation),
    (v4(203, 0, 113, 0), 24, Forbidden::Documentation),
    // Deprecated 6to4 relay anycast: whichever relay answers decapsulates
    // to an IPv4 address we never vetted.
    (v4(192, 88, 99, 0), 24, Forbidden::Relay6to4),
    // Benchmarking: lab networks, and the "fake IP" range of local DNS
    // proxies (Clash, Surge) that hand traffic to a local agent.
    (v4(198, 18, 0, 0), 15, Forbidden::Benchmarking),
    // Multicast: not a peer at all; only the local segment would hear it.
    (v4(224, 0, 0, 0), 4, Forbidden::Multicast),
    // Limited broadcast: every host on the proxy's segment. Before 240/4,
    // which contains it.
    (v4(255, 255, 255, 255), 32, Forbidden::Broadcast),
    // Reserved class E: unrouted on the internet, used privately by some
    // networks.
    (v4(240, 0, 0, 0), 4, Forbidden::Reserved),
];

fn classify_v4(ip: Ipv4Addr) -> Option<Forbidden> {
    let bits = u32::from(ip);
    V4_RANGES
        .iter()
        .find(|&&(net, len, _)| bits & mask32(len) == net)
        .map(|&(_, _, why)| why)
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

// === IPv6 ===

/// An IPv6 prefix: network address, prefix length, reason. First match wins.
type Range6 = (u128, u8, Forbidden);

const fn v6(segments: [u16; 8]) -> u128 {
    let mut bits = 0u128;
    let mut i = 0;
    while i < 8 {
        bits = (bits << 16) | segments[i] as u128;
        i += 1;
    }
    bits
}

/// Consulted after the IPv4-carrying forms (see [`embedded_v4`]).
const V6_RANGES: &[Range6] = &[
    // `::`: a connect to it reaches the proxy's own host.
    (0, 128, Forbidden::Unspecified),
    // The proxy's own services.
    (1, 128, Forbidden::Loopback),
    // Local-use NAT64: the translator maps it to IPv4 addresses by a local
    // scheme we cannot decode, so we cannot vet where it leads.
    (
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0]),
        48,
        Forbidden::LocalNat64,
    ),
    // Discard-only: routed to a blackhole or a sinkhole, never a real host.
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0]), 64, Forbidden::DiscardOnly),
    // Teredo tunnels to an IPv4 address hidden (XOR-obfuscated) in the low
    // bits, which may be private: forbidden whole, never decoded.
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0]), 32, Forbidden::Teredo),
    // Benchmarking: lab networks. Before 2001::/23, which contains it.
    (
        v6([0x2001, 2, 0, 0, 0, 0, 0, 0]),
        48,
        Forbidden::Benchmarking,
    ),
    // IETF protocol assignments (ORCHID identifiers, anycast services):
    // not web servers, as for 192.0.0.0/24.
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0]),
        23,
        Forbidden::ProtocolAssignment,
    ),
    // Documentation: no real host, so an answer here is a mistake or a
    // local sinkhole.
    (
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0]),
        32,
        Forbidden::Documentation,
    ),
    (
        v6([0x3fff, 0, 0, 0, 0, 0, 0, 0]),
        20,
        Forbidden::Documentation,
    ),
    // Unique local: the IPv6 counterpart of RFC 1918 (and AWS's IPv6
    // metadata endpoint, fd00:ec2::254).
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0]), 7, Forbidden::UniqueLocal),
    // Link-local: on-link neighbours and routers of the proxy's own
    // segment, like 169.254/16.
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0]), 10, Forbidden::LinkLocal),
    // Deprecated site-local: still the internal network where it is used.
    (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0]), 10, Forbidden::SiteLocal),
    // Multicast: not a peer; only local scopes would hear it.
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0]), 8, Forbidden::Multicast),
];

/// Global unicast, the only IPv6 space IANA allocates to the internet.
/// Anything else that no row names (e.g. 4000::/3, SRv6 5f00::/16) is
/// unallocated or special-purpose: refuse it rather than trust it.
const GLOBAL_UNICAST: Range6 = (v6([0x2000, 0, 0, 0, 0, 0, 0, 0]), 3, Forbidden::Reserved);

fn classify_v6(ip: Ipv6Addr) -> Option<Forbidden> {
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    let bits = u128::from(ip);
    let (net, len, why) = GLOBAL_UNICAST;
    V6_RANGES
        .iter()
        .find(|&&(net, len, _)| bits & mask128(len) == net)
        .map(|&(_, _, why)| why)
        .or_else(|| (bits & mask128(len) != net).then_some(why))
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// The IPv4 address an IPv6 address carries, for the forms whose traffic
/// ends up at that IPv4 address: `::ffff:169.254.169.254` reaches the
/// metadata service as surely as 169.254.169.254 does.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    // Truncation intended: the low 32 bits are the IPv4 address.
    let low = Ipv4Addr::from(bits as u32);
    match bits >> 32 {
        // IPv4-mapped ::ffff:0:0/96: a dual-stack socket sends it as IPv4.
        0xffff => Some(low),
        // IPv4-compatible ::/96 (deprecated; `::` and `::1` are themselves):
        // some stacks still route it as IPv4.
        0 if bits > 1 => Some(low),
        // IPv4-translated ::ffff:0:0:0/96 (SIIT, RFC 2765).
        0xffff_0000 => Some(low),
        // NAT64 well-known prefix 64:ff9b::/96: the translator dials the
        // IPv4 address (DNS64 synthesises these for any A record).
        0x0064_ff9b_0000_0000_0000_0000 => Some(low),
        // 6to4 2002::/16: a relay decapsulates to the IPv4 address in bits
        // 16..48.
        _ if bits >> 112 == 0x2002 => Some(Ipv4Addr::from((bits >> 80) as u32)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
