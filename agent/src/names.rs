//! The names this agent is reached at (pure): what it advertises to users for their logs, exec
//! and sync, decided against the names its certificate holds, and the names it asks the cluster
//! to put in a certificate when it enrols or renews.
//!
//! A user's client dials the advertised address and checks the agent's certificate for that name,
//! so an address the certificate lacks fails every session with a TLS name error. The agent
//! therefore advertises only what its certificate holds: listening on every interface, its
//! hostname if the certificate names it, else an address or name the certificate does; an
//! address the user chose (`--advertise`, or a `--listen` on one address) that the certificate
//! lacks refuses the start, saying which names it holds and which flag fixes it.
//! Not here: reading the certificate (`transport::Credentials::own_names`) or binding.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::join::MAX_CERT_NAMES;

/// An address the user chose that the agent's certificate does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The host (name or IP) the agent would advertise.
    pub host: String,
    /// Where it came from: the flag that set it.
    pub flag: &'static str,
    /// The names the certificate holds.
    pub names: Vec<String>,
}

impl Mismatch {
    pub fn to_wire(&self) -> WireError {
        WireError::new(ErrorCode::CertificateMismatch, self.to_string())
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = if self.names.is_empty() {
            "no names at all".to_string()
        } else {
            self.names.join(", ")
        };
        write!(
            f,
            "this agent's certificate does not hold {host} ({flag}), where users would reach it: \
             it holds {held}. Set --advertise HOST:PORT to one of those names, or give the agent \
             a certificate that holds {host} (`nexus pki issue agent --host-id H --ip IP --dns NAME`, \
             or enrol it afresh with a join token)",
            host = self.host,
            flag = self.flag,
        )
    }
}

/// What to advertise as HOST:PORT for an endpoint bound at `bound`: `explicit` (`--advertise`)
/// when the certificate's `names` hold its host; the bound address when bound to one address
/// (which the user chose, since the default listens on every interface) and the certificate
/// holds it; bound to every interface, the first of these the certificate holds: `host_name`,
/// a routable address, another DNS name, a loopback address, `localhost`.
pub fn advertise(
    bound: SocketAddr,
    explicit: Option<&str>,
    host_name: &str,
    names: &[String],
) -> Result<String, Mismatch> {
    let mismatch = |host: &str, flag: &'static str| Mismatch {
        host: host.to_string(),
        flag,
        names: names.to_vec(),
    };
    if let Some(address) = explicit {
        let host = host_of(address);
        return if holds(names, host) {
            Ok(address.to_string())
        } else {
            Err(mismatch(host, "--advertise"))
        };
    }
    let ip = bound.ip();
    if !ip.is_unspecified() {
        return if holds(names, &ip.to_string()) {
            Ok(bound.to_string())
        } else {
            Err(mismatch(&ip.to_string(), "--listen"))
        };
    }
    let port = bound.port();
    // An IPv4 wildcard serves IPv4 only; an IPv6 one usually both.
    let reachable = |candidate: &IpAddr| ip.is_ipv6() || candidate.is_ipv4();
    let ips: Vec<IpAddr> = names
        .iter()
        .filter_map(|name| name.parse::<IpAddr>().ok())
        .filter(|candidate| reachable(candidate) && !candidate.is_unspecified())
        .collect();
    let dns = || {
        names.iter().filter(|name| {
            name.parse::<IpAddr>().is_err()
                && !name.starts_with("*.")
                && !name.eq_ignore_ascii_case("localhost")
        })
    };
    if !host_name.is_empty() && holds(names, host_name) {
        return Ok(format!("{host_name}:{port}"));
    }
    if let Some(routable) = ips.iter().find(|candidate| !candidate.is_loopback()) {
        return Ok(SocketAddr::new(*routable, port).to_string());
    }
    if let Some(name) = dns().next() {
        return Ok(format!("{name}:{port}"));
    }
    if let Some(loopback) = ips.first() {
        return Ok(SocketAddr::new(*loopback, port).to_string());
    }
    if names
        .iter()
        .any(|name| name.eq_ignore_ascii_case("localhost"))
    {
        return Ok(format!("localhost:{port}"));
    }
    Err(mismatch(
        host_name,
        "--listen on every interface advertises this machine's hostname",
    ))
}

/// The names to ask for in a certificate: where this agent is reached (`--advertise`'s host,
/// the one address it listens on, or, listening on every interface, `host_name`), then loopback.
pub fn wanted(
    listen: Option<SocketAddr>,
    explicit: Option<&str>,
    host_name: Option<&str>,
) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(address) = explicit {
        names.push(host_of(address).to_string());
    }
    match listen {
        Some(bound) if !bound.ip().is_unspecified() => names.push(bound.ip().to_string()),
        _ => names.extend(host_name.map(str::to_string)),
    }
    names.extend(["127.0.0.1", "::1", "localhost"].map(String::from));
    merged(&names, &[])
}

/// `first`'s names and then `second`'s, each once (DNS names compared without case), at most
/// [`MAX_CERT_NAMES`].
pub fn merged(first: &[String], second: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in first.iter().chain(second) {
        if !name.is_empty() && !holds(&names, name) {
            names.push(name.clone());
        }
    }
    names.truncate(MAX_CERT_NAMES);
    names
}

/// The host of `HOST:PORT`, without an IPv6 address's brackets.
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Whether `names` hold `host`: an address equal to it, or a DNS name equal to it without case
/// (or a `*.` wildcard matching its first label).
pub fn holds(names: &[String], host: &str) -> bool {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return names.iter().any(|name| name.parse::<IpAddr>() == Ok(ip));
    }
    names.iter().any(|name| {
        if name.eq_ignore_ascii_case(host) {
            return true;
        }
        match (name.strip_prefix("*."), host.split_once('.')) {
            (Some(suffix), Some((label, rest))) => {
                !label.is_empty() && rest.eq_ignore_ascii_case(suffix)
            }
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    /// What `advertise` decides, as text: the address, or the error's host and flag.
    fn check(bound: &str, explicit: Option<&str>, host_name: &str, held: &[&str]) -> String {
        match advertise(bound.parse().unwrap(), explicit, host_name, &names(held)) {
            Ok(address) => address,
            Err(mismatch) => format!("refused {} ({})", mismatch.host, mismatch.flag),
        }
    }

    #[test]
    fn every_interface_advertises_a_name_the_certificate_holds() {
        let loopback = ["127.0.0.1", "::1", "localhost"];
        // Issue 25's new user: `nexus pki issue agent --ip 127.0.0.1` and the default --listen.
        assert_eq!(
            check("0.0.0.0:7401", None, "box", &["127.0.0.1"]),
            "127.0.0.1:7401"
        );
        assert_eq!(
            check("0.0.0.0:7401", None, "box", &loopback),
            "127.0.0.1:7401"
        );
        // The hostname first, when held (without regard to case).
        assert_eq!(
            check(
                "0.0.0.0:7401",
                None,
                "Box",
                &["10.0.0.5", "box", "127.0.0.1"]
            ),
            "Box:7401"
        );
        // Else a routable address, then another name, before loopback.
        assert_eq!(
            check("0.0.0.0:7401", None, "box", &["127.0.0.1", "10.0.0.5"]),
            "10.0.0.5:7401"
        );
        assert_eq!(
            check("0.0.0.0:7401", None, "box", &["127.0.0.1", "dev-01.lan"]),
            "dev-01.lan:7401"
        );
        assert_eq!(
            check("0.0.0.0:7401", None, "box", &["localhost"]),
            "localhost:7401"
        );
        // An IPv4 wildcard does not advertise an IPv6 address; an IPv6 one may.
        assert_eq!(
            check(
                "0.0.0.0:7401",
                None,
                "box",
                &["fd00::5", "::1", "127.0.0.1"]
            ),
            "127.0.0.1:7401"
        );
        assert_eq!(
            check("[::]:7401", None, "box", &["fd00::5", "127.0.0.1"]),
            "[fd00::5]:7401"
        );
        // A wildcard DNS name is no address to dial.
        assert_eq!(
            check("0.0.0.0:7401", None, "box", &["*.lan"]),
            "refused box (--listen on every interface advertises this machine's hostname)"
        );
        assert_eq!(
            check("0.0.0.0:7401", None, "box", &[]),
            "refused box (--listen on every interface advertises this machine's hostname)"
        );
    }

    #[test]
    fn an_address_the_user_chose_must_be_in_the_certificate() {
        assert_eq!(
            check("127.0.0.1:7401", None, "box", &["127.0.0.1"]),
            "127.0.0.1:7401"
        );
        assert_eq!(
            check("10.0.0.9:7401", None, "box", &["127.0.0.1", "box"]),
            "refused 10.0.0.9 (--listen)"
        );
        assert_eq!(
            check("0.0.0.0:7401", Some("dev-01:7401"), "box", &["DEV-01"]),
            "dev-01:7401"
        );
        assert_eq!(
            check("0.0.0.0:7401", Some("a.lan:7401"), "box", &["*.lan"]),
            "a.lan:7401"
        );
        assert_eq!(
            check("0.0.0.0:7401", Some("[::1]:7401"), "box", &["::1"]),
            "[::1]:7401"
        );
        assert_eq!(
            check("127.0.0.1:7401", Some("dev-01:7401"), "box", &["127.0.0.1"]),
            "refused dev-01 (--advertise)"
        );
        let error = advertise(
            "0.0.0.0:7401".parse().unwrap(),
            Some("dev-01:7401"),
            "box",
            &names(&["127.0.0.1", "localhost"]),
        )
        .unwrap_err();
        let wire = error.to_wire();
        assert_eq!(wire.code, ErrorCode::CertificateMismatch);
        for part in ["dev-01", "127.0.0.1, localhost", "--advertise HOST:PORT"] {
            assert!(wire.message.contains(part), "{part}: {}", wire.message);
        }
    }

    #[test]
    fn a_certificate_is_asked_for_where_the_agent_is_reached_and_loopback() {
        let listen = |text: &str| Some(text.parse::<SocketAddr>().unwrap());
        assert_eq!(
            wanted(listen("0.0.0.0:7401"), None, Some("box")),
            ["box", "127.0.0.1", "::1", "localhost"]
        );
        assert_eq!(
            wanted(listen("10.0.0.5:7401"), None, Some("box")),
            ["10.0.0.5", "127.0.0.1", "::1", "localhost"]
        );
        assert_eq!(
            wanted(listen("127.0.0.1:0"), Some("dev-01.lan:7401"), Some("box")),
            ["dev-01.lan", "127.0.0.1", "::1", "localhost"]
        );
        assert_eq!(wanted(None, None, None), ["127.0.0.1", "::1", "localhost"]);
        // A renewal keeps what the old certificate held, each name once, within the limit.
        let old = names(&["LOCALHOST", "10.0.0.5"]);
        assert_eq!(
            merged(&old, &names(&["localhost", "box"])),
            ["LOCALHOST", "10.0.0.5", "box"]
        );
        let many: Vec<String> = (0..40).map(|i| format!("n{i}")).collect();
        assert_eq!(merged(&many, &[]).len(), MAX_CERT_NAMES);
    }
}
