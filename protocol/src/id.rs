//! Validated identifiers. Each parses on construction, so a value of these types is always
//! valid: network input is checked as it is decoded (serde goes through `TryFrom<String>`).

use std::fmt;
use std::str::FromStr;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct InvalidId {
    pub kind: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// The rules one kind of string identifier follows.
struct Rules {
    kind: &'static str,
    max_len: usize,
    too_long: &'static str,
    /// Characters allowed anywhere.
    allowed: fn(char) -> bool,
    allowed_reason: &'static str,
    /// Characters allowed first and last.
    edge: fn(char) -> bool,
    edge_reason: &'static str,
}

impl Rules {
    fn check(&self, value: String) -> Result<String, InvalidId> {
        let fail = |reason| {
            Err(InvalidId {
                kind: self.kind,
                value: value.clone(),
                reason,
            })
        };
        if value.is_empty() {
            return fail("must not be empty");
        }
        if value.chars().count() > self.max_len {
            return fail(self.too_long);
        }
        if !value.chars().all(self.allowed) {
            return fail(self.allowed_reason);
        }
        let first = value.chars().next();
        let last = value.chars().next_back();
        if !first.is_some_and(self.edge) || !last.is_some_and(self.edge) {
            return fail(self.edge_reason);
        }
        Ok(value)
    }
}

fn lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

const WORKSPACE_NAME: Rules = Rules {
    kind: "workspace name",
    max_len: 63,
    too_long: "must be at most 63 characters",
    allowed: |c| lower_alnum(c) || c == '-',
    allowed_reason: "may hold only lowercase letters, digits and '-'",
    edge: lower_alnum,
    edge_reason: "must start and end with a lowercase letter or digit",
};

const HOST_ID: Rules = Rules {
    kind: "host id",
    max_len: 63,
    too_long: "must be at most 63 characters",
    allowed: |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'),
    allowed_reason: "may hold only letters, digits, '.', '_' and '-'",
    edge: |c| c.is_ascii_alphanumeric(),
    edge_reason: "must start and end with a letter or digit",
};

const USER_NAME: Rules = Rules {
    kind: "user name",
    max_len: 64,
    too_long: "must be at most 64 characters",
    allowed: |c| lower_alnum(c) || matches!(c, '.' | '_' | '-'),
    allowed_reason: "may hold only lowercase letters, digits, '.', '_' and '-'",
    edge: lower_alnum,
    edge_reason: "must start and end with a lowercase letter or digit",
};

/// The boilerplate every validated string id shares: construction through its rules, display,
/// parsing, and serde through `TryFrom<String>` so decoding validates too.
///
/// An id up to 24 bytes (nearly all of them) is kept inline, not on the heap: the state's tables
/// compare ids in every lookup (a table of 900,000 workspaces, about 25 comparisons a lookup), and
/// a key on the heap made each comparison a cache miss of its own (benchmarks.md, "Marking hosts
/// down"). A clone of one that fits is a copy, not an allocation. Same bytes in every encoding,
/// same order, same hash.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $rules:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(CompactString);

        impl $name {
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidId> {
                $rules
                    .check(value.into())
                    .map(|checked| Self(CompactString::from(checked)))
            }

            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(value: &str) -> Result<Self, InvalidId> {
                Self::new(value)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, InvalidId> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.into_string()
            }
        }
    };
}

string_id!(
    /// A workspace's name: DNS-label-like (lowercase letters, digits and '-', at most 63
    /// characters, starting and ending with a letter or digit), so it can name a container, a
    /// network and a hostname as it is.
    WorkspaceName,
    WORKSPACE_NAME
);

string_id!(
    /// A host's id, usually its hostname: letters, digits, '.', '_' and '-', at most 63
    /// characters. It appears in certificates as `nexus://agent/<host-id>`.
    HostId,
    HOST_ID
);

string_id!(
    /// A user's name as it appears in the user's certificate (`nexus://user/<name>`).
    UserName,
    USER_NAME
);

/// A coordinator's Raft node id. Raft reserves 0 for "none", so it is never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct NodeId(u64);

impl NodeId {
    pub fn new(value: u64) -> Result<NodeId, InvalidId> {
        if value == 0 {
            return Err(InvalidId {
                kind: "node id",
                value: "0".into(),
                reason: "must not be 0",
            });
        }
        Ok(NodeId(value))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for NodeId {
    type Err = InvalidId;
    fn from_str(value: &str) -> Result<NodeId, InvalidId> {
        let number = value.parse::<u64>().map_err(|_| InvalidId {
            kind: "node id",
            value: value.into(),
            reason: "must be a positive whole number",
        })?;
        NodeId::new(number)
    }
}

impl TryFrom<u64> for NodeId {
    type Error = InvalidId;
    fn try_from(value: u64) -> Result<NodeId, InvalidId> {
        NodeId::new(value)
    }
}

impl From<NodeId> for u64 {
    fn from(id: NodeId) -> u64 {
        id.0
    }
}

/// A request's id: 128 random bits, shown as 32 hex digits. Every request carries one so that a
/// retried request is answered with its first outcome and can be traced (`nexus admin trace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(u128);

impl RequestId {
    pub const fn from_u128(value: u128) -> RequestId {
        RequestId(value)
    }

    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// A fresh id from the operating system's secure random source.
    pub fn random() -> RequestId {
        RequestId(u128::from_be_bytes(random_bytes()))
    }
}

/// Random bytes from the operating system's secure source. That only fails on a platform with no
/// such source; the bytes are then zero, which no caller relies on for safety.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    let _ = getrandom::getrandom(&mut bytes);
    bytes
}

/// A random number, e.g. for jitter.
pub fn random_u64() -> u64 {
    u64::from_le_bytes(random_bytes())
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl FromStr for RequestId {
    type Err = InvalidId;
    fn from_str(value: &str) -> Result<RequestId, InvalidId> {
        let invalid = |reason| InvalidId {
            kind: "request id",
            value: value.into(),
            reason,
        };
        if value.len() != 32 {
            return Err(invalid("must be 32 hex digits"));
        }
        if !value.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("must be 32 hex digits"));
        }
        u128::from_str_radix(value, 16)
            .map(RequestId)
            .map_err(|_| invalid("must be 32 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_workspace(name: &str, expect: Result<(), &str>) {
        let got = WorkspaceName::new(name).map(|_| ()).map_err(|e| e.reason);
        assert_eq!(got, expect, "workspace name {name:?}");
    }

    #[test]
    fn workspace_names() {
        check_workspace("api", Ok(()));
        check_workspace("a", Ok(()));
        check_workspace("web-2", Ok(()));
        check_workspace("9lives", Ok(()));
        check_workspace(&"a".repeat(63), Ok(()));
        check_workspace(&"a".repeat(64), Err("must be at most 63 characters"));
        check_workspace("", Err("must not be empty"));
        check_workspace(
            "Api",
            Err("may hold only lowercase letters, digits and '-'"),
        );
        check_workspace(
            "a_b",
            Err("may hold only lowercase letters, digits and '-'"),
        );
        check_workspace(
            "a.b",
            Err("may hold only lowercase letters, digits and '-'"),
        );
        check_workspace(
            "../etc",
            Err("may hold only lowercase letters, digits and '-'"),
        );
        check_workspace("é", Err("may hold only lowercase letters, digits and '-'"));
        check_workspace(
            "-api",
            Err("must start and end with a lowercase letter or digit"),
        );
        check_workspace(
            "api-",
            Err("must start and end with a lowercase letter or digit"),
        );
    }

    #[test]
    fn host_ids_and_user_names() {
        assert!(HostId::new("dev-01.example.com").is_ok());
        assert!(HostId::new("Dev_01").is_ok());
        assert!(HostId::new("dev/01").is_err());
        assert!(HostId::new(".dev").is_err());
        assert!(UserName::new("alice").is_ok());
        assert!(UserName::new("alice.smith_2").is_ok());
        assert!(UserName::new("Alice").is_err());
        assert!(UserName::new("a".repeat(65)).is_err());
        assert!(UserName::new("alice?role=admin").is_err());
    }

    #[test]
    fn node_ids_are_positive() {
        assert_eq!("3".parse::<NodeId>().map(NodeId::get), Ok(3));
        assert!("0".parse::<NodeId>().is_err());
        assert!("-1".parse::<NodeId>().is_err());
        assert!("x".parse::<NodeId>().is_err());
    }

    #[test]
    fn request_ids_round_trip_as_hex() {
        let id = RequestId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(id.to_string(), "0123456789abcdef0011223344556677");
        assert_eq!(id.to_string().parse::<RequestId>(), Ok(id));
        assert!("xyz".parse::<RequestId>().is_err());
        assert!(
            "+123456789abcdef0011223344556677"
                .parse::<RequestId>()
                .is_err()
        );
        assert_ne!(RequestId::random(), RequestId::random());
    }

    #[test]
    fn decoding_validates() {
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec("Not A Name", config).unwrap();
        let decoded: Result<(WorkspaceName, usize), _> =
            bincode::serde::decode_from_slice(&bytes, config);
        assert!(decoded.is_err());
        let bytes = bincode::serde::encode_to_vec(0u64, config).unwrap();
        assert!(bincode::serde::decode_from_slice::<NodeId, _>(&bytes, config).is_err());
    }

    /// Kept inline or on the heap, an id encodes, orders, hashes and prints as its string: the
    /// snapshots, the wire and the listings' order do not depend on where it is kept.
    #[test]
    fn an_id_is_its_string_in_every_encoding_order_and_hash() {
        use std::hash::{BuildHasher, RandomState};
        let config = bincode::config::standard();
        let hasher = RandomState::new();
        let short = "w000123".to_string();
        let long = format!("a-{}-z", "x".repeat(50));
        let mut names = Vec::new();
        for text in [&short, &long] {
            let name = WorkspaceName::new(text.as_str()).unwrap();
            assert_eq!(
                bincode::serde::encode_to_vec(&name, config).unwrap(),
                bincode::serde::encode_to_vec(text, config).unwrap()
            );
            assert_eq!(
                serde_json::to_string(&name).unwrap(),
                serde_json::to_string(text).unwrap()
            );
            assert_eq!(format!("{name:?}"), format!("WorkspaceName({text:?})"));
            assert_eq!(hasher.hash_one(&name), hasher.hash_one(text));
            assert_eq!(String::from(name.clone()), *text);
            names.push(name);
        }
        assert_eq!(names[0].cmp(&names[1]), short.cmp(&long));
        let read: WorkspaceName =
            serde_json::from_str(&serde_json::to_string(&long).unwrap()).unwrap();
        assert_eq!(read, names[1]);
    }
}
