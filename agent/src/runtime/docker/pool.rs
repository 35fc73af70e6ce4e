//! The address range workspace networks take their /24 subnets from (`--network-pool`), so a
//! host holds 50 workspace networks where Docker's default pools run out at 31. Pure: no engine.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use nexus_protocol::error::InvalidValue;

/// A range of IPv4 addresses that workspace networks take /24 subnets from, e.g. `10.213.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkPool {
    base: Ipv4Addr,
    prefix: u8,
}

/// One /24 of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet(Ipv4Addr);

impl Subnet {
    /// The bridge's own address: the first of the subnet.
    pub fn gateway(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.0) + 1)
    }
}

impl Subnet {
    /// Whether a kernel route to `destination`/`prefix` lies within this /24 (a /24 or narrower
    /// route into it). A wider route (a VPN's 10.0.0.0/8, the default route) does not count: it
    /// does not hold the subnet, and a more specific bridge route wins over it.
    pub fn is_routed_by(self, destination: Ipv4Addr, prefix: u8) -> bool {
        (24..=32).contains(&prefix) && u32::from(destination) & 0xffff_ff00 == u32::from(self.0)
    }
}

/// The routes of the kernel's IPv4 table, as `/proc/net/route` lists them: (destination,
/// prefix length) of each line it can read. Its addresses are hexadecimal in the host's byte
/// order of the network-order bytes.
pub(super) fn routes(table: &str) -> Vec<(Ipv4Addr, u8)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let destination = u32::from_str_radix(fields.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(fields.get(7)?, 16).ok()?;
            let destination = Ipv4Addr::from(destination.to_ne_bytes());
            let mask = u32::from(Ipv4Addr::from(mask.to_ne_bytes()));
            // A mask is contiguous ones; anything else is not a route we can judge.
            (mask.leading_ones() + mask.trailing_zeros() == 32)
                .then(|| (destination, mask.leading_ones() as u8))
        })
        .collect()
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/24", self.0)
    }
}

impl NetworkPool {
    /// The default: 256 subnets, from a range Docker's own pools (172.17–31, 192.168) avoid.
    pub const DEFAULT: NetworkPool = NetworkPool {
        base: Ipv4Addr::new(10, 213, 0, 0),
        prefix: 16,
    };

    /// How many /24 subnets the pool holds.
    pub fn subnets(self) -> u32 {
        1 << (24 - u32::from(self.prefix))
    }

    /// The `index`th /24 of the pool.
    pub fn subnet(self, index: u32) -> Subnet {
        Subnet(Ipv4Addr::from(
            u32::from(self.base) + ((index % self.subnets()) << 8),
        ))
    }
}

impl fmt::Display for NetworkPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl FromStr for NetworkPool {
    type Err = InvalidValue;

    fn from_str(value: &str) -> Result<NetworkPool, InvalidValue> {
        let bad = |why: &str| {
            InvalidValue(format!(
                "invalid network pool {value:?}: {why}, e.g. 10.213.0.0/16"
            ))
        };
        let (address, prefix) = value.split_once('/').ok_or_else(|| bad("no /PREFIX"))?;
        let address: Ipv4Addr = address.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("not a prefix length"))?;
        if !(8..=24).contains(&prefix) {
            return Err(bad(
                "the prefix must be between 8 and 24 (it is cut into /24s)",
            ));
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        if u32::from(address) & !mask != 0 {
            return Err(bad("host bits are set"));
        }
        Ok(NetworkPool {
            base: address,
            prefix,
        })
    }
}

#[cfg(test)]
mod tests {
    use nexus_protocol::hash::fnv1a_32;

    use super::*;

    #[test]
    fn kernel_routes_are_read_and_only_narrow_ones_hold_a_subnet() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
br-dead\t0003D50A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
tun0\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n\
junk\n";
        let routes = routes(table);
        let pool = NetworkPool::DEFAULT;
        let routed = |index| {
            routes
                .iter()
                .any(|(destination, prefix)| pool.subnet(index).is_routed_by(*destination, *prefix))
        };
        if cfg!(target_endian = "little") {
            assert_eq!(
                routes,
                [
                    (Ipv4Addr::UNSPECIFIED, 0),
                    (Ipv4Addr::new(10, 213, 3, 0), 24),
                    (Ipv4Addr::new(10, 0, 0, 0), 8),
                ]
            );
            assert!(routed(3));
        }
        assert!(!routed(2) && !routed(4));
        let subnet = pool.subnet(7);
        assert!(subnet.is_routed_by(Ipv4Addr::new(10, 213, 7, 128), 25));
        assert!(!subnet.is_routed_by(Ipv4Addr::new(10, 213, 0, 0), 16));
    }

    #[test]
    fn network_pools_parse_and_cut_into_24s() {
        let pool: NetworkPool = "10.213.0.0/16".parse().unwrap();
        assert_eq!(pool, NetworkPool::DEFAULT);
        assert_eq!(pool.subnets(), 256);
        assert_eq!(pool.subnet(0).to_string(), "10.213.0.0/24");
        assert_eq!(pool.subnet(255).to_string(), "10.213.255.0/24");
        assert_eq!(pool.subnet(256), pool.subnet(0));
        assert_eq!(pool.subnet(7).gateway(), Ipv4Addr::new(10, 213, 7, 1));
        let small: NetworkPool = "192.168.64.0/22".parse().unwrap();
        assert_eq!(small.subnets(), 4);
        assert_eq!(small.subnet(3).to_string(), "192.168.67.0/24");
        for bad in [
            "10.0.0.0",
            "10.0.0.0/25",
            "10.0.0.0/4",
            "10.0.0.1/16",
            "x/16",
            "10.0.0.0/x",
        ] {
            assert!(bad.parse::<NetworkPool>().is_err(), "{bad}");
        }
        assert_eq!(fnv1a_32(b"nexus.h.w"), fnv1a_32(b"nexus.h.w"));
    }
}
