//! The HAProxy PROXY protocol, v1 (text) and v2 (binary): a pure, incremental header parser
//! and the trusted-proxy address ranges.
//!
//! A load balancer in front of poplar opens the TCP connection itself and starts it with one
//! header naming the real client. The parser never asks for a byte past the header, so the
//! POP3 stream that follows is untouched.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// The twelve bytes that open every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Longest v1 header, CRLF included (the specification's limit).
pub const V1_MAX: usize = 107;

/// Longest v2 header accepted, the 16 fixed bytes included. The specification allows 64 KiB of
/// TLVs; real proxies send a few hundred bytes, and a bound keeps a hostile peer cheap.
pub const V2_MAX: usize = 16 + 4096;

/// The shortest header of either version (`PROXY UNKNOWN\r\n`).
const MIN_HEADER: usize = 15;

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The real client, or `None` when the proxy speaks for itself (v2 LOCAL, v1 UNKNOWN,
    /// or an address family other than TCP over IPv4/IPv6): the socket's peer then stands.
    pub source: Option<SocketAddr>,
    /// Octets the header took on the wire.
    pub len: usize,
}

/// Where parsing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// At least this many more bytes are needed; reading exactly this many never reads past
    /// the header.
    Need(usize),
    /// The header is complete.
    Done(Header),
}

/// Why a header was refused; the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// The bytes start neither a v1 nor a v2 header.
    NotProxy,
    /// A v1 line longer than 107 octets.
    V1TooLong,
    /// A v1 line that does not follow the grammar.
    V1Malformed,
    /// A v2 header with a version other than 2 or an unknown command.
    V2BadVersion,
    /// A v2 address block shorter than its family needs, or a datagram family.
    V2BadAddress,
    /// A v2 header longer than `V2_MAX`.
    V2TooLong,
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyError::NotProxy => "no PROXY header",
            ProxyError::V1TooLong => "PROXY v1 line too long",
            ProxyError::V1Malformed => "malformed PROXY v1 line",
            ProxyError::V2BadVersion => "PROXY v2 header with a bad version or command",
            ProxyError::V2BadAddress => "PROXY v2 header with a bad address block",
            ProxyError::V2TooLong => "PROXY v2 header too long",
        })
    }
}

impl std::error::Error for ProxyError {}

/// Parses the bytes received so far (all of them, from the connection's first byte).
pub fn parse(buf: &[u8]) -> Result<Progress, ProxyError> {
    let v1_prefix = b"PROXY ";
    let could_be = |prefix: &[u8]| {
        let n = buf.len().min(prefix.len());
        buf[..n] == prefix[..n]
    };
    if buf.len() < MIN_HEADER && (could_be(&V2_SIGNATURE) || could_be(v1_prefix)) {
        // Both versions are at least this long: reading up to it cannot overshoot.
        return Ok(Progress::Need(MIN_HEADER - buf.len()));
    }
    let sig_part = buf.len().min(V2_SIGNATURE.len());
    if buf[..sig_part] == V2_SIGNATURE[..sig_part] {
        return parse_v2(buf);
    }
    let v1_part = buf.len().min(v1_prefix.len());
    if buf[..v1_part] == v1_prefix[..v1_part] {
        return parse_v1(buf);
    }
    Err(ProxyError::NotProxy)
}

fn parse_v1(buf: &[u8]) -> Result<Progress, ProxyError> {
    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::V1TooLong)
        } else {
            // The line ends somewhere ahead; a byte at a time never overshoots it.
            Ok(Progress::Need(1))
        };
    };
    if lf + 1 > V1_MAX {
        return Err(ProxyError::V1TooLong);
    }
    let line = buf[..lf]
        .strip_suffix(b"\r")
        .ok_or(ProxyError::V1Malformed)?;
    let line = std::str::from_utf8(line).map_err(|_| ProxyError::V1Malformed)?;
    let source = v1_source(line).ok_or(ProxyError::V1Malformed)?;
    Ok(Progress::Done(Header {
        source,
        len: lf + 1,
    }))
}

/// The source of a v1 line (without CRLF); `Some(None)` for UNKNOWN.
fn v1_source(line: &str) -> Option<Option<SocketAddr>> {
    let rest = line.strip_prefix("PROXY ")?;
    if rest == "UNKNOWN" || rest.starts_with("UNKNOWN ") {
        return Some(None);
    }
    let fields: Vec<&str> = rest.split(' ').collect();
    let [proto, src, dst, sport, dport] = fields[..] else {
        return None;
    };
    // The destination is checked for form only: the local socket already names it.
    let src: IpAddr = match proto {
        "TCP4" => {
            Ipv4Addr::from_str(dst).ok()?;
            Ipv4Addr::from_str(src).ok()?.into()
        }
        "TCP6" => {
            Ipv6Addr::from_str(dst).ok()?;
            Ipv6Addr::from_str(src).ok()?.into()
        }
        _ => return None,
    };
    let sport = v1_port(sport)?;
    v1_port(dport)?;
    Some(Some(SocketAddr::new(src, sport)))
}

/// A decimal port, 0 to 65535, without sign or leading zeros.
fn v1_port(s: &str) -> Option<u16> {
    let plain = !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    plain.then(|| s.parse().ok()).flatten()
}

fn parse_v2(buf: &[u8]) -> Result<Progress, ProxyError> {
    if buf.len() < 16 {
        return Ok(Progress::Need(16 - buf.len()));
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 || ver_cmd & 0x0f > 1 {
        return Err(ProxyError::V2BadVersion);
    }
    let total = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if total > V2_MAX {
        return Err(ProxyError::V2TooLong);
    }
    if buf.len() < total {
        return Ok(Progress::Need(total - buf.len()));
    }
    let local = ver_cmd & 0x0f == 0;
    let body = &buf[16..total];
    let family = buf[13];
    let source = match family {
        // TCP over IPv4, TCP over IPv6: source address, destination, then the two ports.
        0x11 => {
            let a: [u8; 12] = body
                .get(..12)
                .and_then(|b| b.try_into().ok())
                .ok_or(ProxyError::V2BadAddress)?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        0x21 => {
            let a: [u8; 36] = body
                .get(..36)
                .and_then(|b| b.try_into().ok())
                .ok_or(ProxyError::V2BadAddress)?;
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&a[..16]);
            Some(SocketAddr::new(
                Ipv6Addr::from(ip).into(),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        // UNSPEC, and stream over AF_UNIX: no client address to take over.
        0x00 | 0x31 => None,
        // Datagram families cannot describe a TCP connection to a POP3 server.
        _ if !local => return Err(ProxyError::V2BadAddress),
        _ => None,
    };
    Ok(Progress::Done(Header {
        // LOCAL: the proxy's own connection (a health check); its addresses are ignored.
        source: if local { None } else { source },
        len: total,
    }))
}

/// An address range in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in the range. IPv4-mapped IPv6 addresses (from a dual-stack socket)
    /// count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let bits = usize::from(bits);
    let (whole, rest) = (bits / 8, bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad = || format!("'{s}' is not an address or range such as 10.0.0.0/8 or ::1/128");
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr = IpAddr::from_str(ip).map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(bad)?
            }
            Some(_) => return Err(bad()),
        };
        Ok(Cidr {
            addr: addr.to_canonical(),
            prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` as the reader does, asking for exactly what `parse` needs.
    fn drive(bytes: &[u8]) -> Result<Header, ProxyError> {
        let mut buf = Vec::new();
        loop {
            match parse(&buf)? {
                Progress::Done(h) => return Ok(h),
                Progress::Need(n) => {
                    assert!(n > 0);
                    assert!(
                        buf.len() + n <= bytes.len(),
                        "asked past the input: have {}, need {n} of {}",
                        buf.len(),
                        bytes.len()
                    );
                    buf.extend_from_slice(&bytes[buf.len()..buf.len() + n]);
                }
            }
        }
    }

    fn v2(ver_cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(ver_cmd);
        h.push(family);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn v1_tcp4_and_tcp6_give_the_client_and_stop_at_the_line_end() {
        let mut input = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 110\r\n".to_vec();
        let header_len = input.len();
        input.extend_from_slice(b"USER alice\r\n");
        let h = drive(&input).unwrap();
        assert_eq!(h.source, Some("192.0.2.7:56324".parse().unwrap()));
        assert_eq!(h.len, header_len);
        let h = drive(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 995\r\nrest").unwrap();
        assert_eq!(h.source, Some("[2001:db8::1]:4000".parse().unwrap()));
    }

    #[test]
    fn v1_unknown_keeps_the_socket_peer() {
        assert_eq!(drive(b"PROXY UNKNOWN\r\n").unwrap().source, None);
        let h = drive(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").unwrap();
        assert_eq!(h.source, None);
    }

    #[test]
    fn v1_malformed_lines_are_refused() {
        for bad in [
            &b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 110\n"[..],
            b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",
            b"PROXY TCP4 192.0.2.7  198.51.100.1 56324 110\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.1 56324 110\r\n",
            b"PROXY TCP6 192.0.2.7 198.51.100.1 56324 110\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 110\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 0110 110\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 +1 110\r\n",
            b"PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n",
            b"PROXY tcp4 192.0.2.7 198.51.100.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.\xff 198.51.100.1 1 2\r\n",
        ] {
            assert_eq!(
                drive(bad),
                Err(ProxyError::V1Malformed),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn v1_without_a_line_end_within_107_octets_is_refused() {
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(200, b'x');
        assert_eq!(drive(&long), Err(ProxyError::V1TooLong));
        let mut exact = b"PROXY UNKNOWN ".to_vec();
        exact.resize(V1_MAX - 2, b'x');
        exact.extend_from_slice(b"\r\n");
        assert_eq!(drive(&exact).unwrap().len, V1_MAX);
    }

    #[test]
    fn anything_else_is_not_a_proxy_header() {
        for bad in [
            &b"USER alice\r\n"[..],
            b"X",
            b"PROXY\r\n",
            b"\r\n\r\n\0\r\nQUIX",
        ] {
            assert_eq!(parse(bad), Err(ProxyError::NotProxy), "{bad:?}");
        }
    }

    #[test]
    fn truncated_headers_ask_for_more_and_never_past_the_header() {
        assert_eq!(parse(b""), Ok(Progress::Need(MIN_HEADER)));
        assert_eq!(parse(b"PRO"), Ok(Progress::Need(MIN_HEADER - 3)));
        assert_eq!(parse(b"PROXY TCP4 192.0.2.7 19"), Ok(Progress::Need(1)));
        let full = v2(
            0x21,
            0x11,
            &[192, 0, 2, 7, 198, 51, 100, 1, 0x1f, 0x90, 0, 110],
        );
        assert_eq!(parse(&full[..5]), Ok(Progress::Need(MIN_HEADER - 5)));
        assert_eq!(parse(&full[..15]), Ok(Progress::Need(1)));
        assert_eq!(parse(&full[..16]), Ok(Progress::Need(12)));
        assert_eq!(parse(&full[..20]), Ok(Progress::Need(8)));
    }

    #[test]
    fn v2_proxy_over_tcp4_and_tcp6_give_the_client() {
        let mut body = vec![192, 0, 2, 7, 198, 51, 100, 1, 0x1f, 0x90, 0, 110];
        // A TLV after the addresses (PP2_TYPE_AUTHORITY) is skipped.
        body.extend_from_slice(&[0x02, 0, 3, b'a', b'.', b'b']);
        let mut input = v2(0x21, 0x11, &body);
        let header_len = input.len();
        input.extend_from_slice(b"USER x\r\n");
        let h = drive(&input).unwrap();
        assert_eq!(h.source, Some("192.0.2.7:8080".parse().unwrap()));
        assert_eq!(h.len, header_len);
        let mut body = vec![0u8; 36];
        body[0] = 0x20;
        body[1] = 0x01;
        body[15] = 9;
        body[32..34].copy_from_slice(&443u16.to_be_bytes());
        let h = drive(&v2(0x21, 0x21, &body)).unwrap();
        assert_eq!(h.source, Some("[2001::9]:443".parse().unwrap()));
    }

    #[test]
    fn v2_local_and_unspec_keep_the_socket_peer() {
        let body = [192, 0, 2, 7, 198, 51, 100, 1, 0x1f, 0x90, 0, 110];
        assert_eq!(drive(&v2(0x20, 0x11, &body)).unwrap().source, None);
        assert_eq!(drive(&v2(0x20, 0x00, &[])).unwrap().source, None);
        assert_eq!(drive(&v2(0x21, 0x00, &[])).unwrap().source, None);
        assert_eq!(drive(&v2(0x21, 0x31, &[0; 216])).unwrap().source, None);
    }

    #[test]
    fn v2_bad_headers_are_refused() {
        let body = [192, 0, 2, 7, 198, 51, 100, 1, 0x1f, 0x90, 0, 110];
        assert_eq!(drive(&v2(0x11, 0x11, &body)), Err(ProxyError::V2BadVersion));
        assert_eq!(drive(&v2(0x22, 0x11, &body)), Err(ProxyError::V2BadVersion));
        assert_eq!(
            drive(&v2(0x21, 0x11, &body[..11])),
            Err(ProxyError::V2BadAddress)
        );
        assert_eq!(drive(&v2(0x21, 0x12, &body)), Err(ProxyError::V2BadAddress));
        assert_eq!(
            drive(&v2(0x21, 0x21, &[0; 35])),
            Err(ProxyError::V2BadAddress)
        );
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&huge), Err(ProxyError::V2TooLong));
    }

    #[test]
    fn cidr_ranges() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.200.1.2".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let odd: Cidr = "192.168.4.0/22".parse().unwrap();
        assert!(odd.contains("192.168.7.255".parse().unwrap()));
        assert!(!odd.contains("192.168.8.0".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert_eq!(v6.to_string(), "2001:db8::/32");
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "host/8",
            "10/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
