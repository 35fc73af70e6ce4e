//! A list of byte strings, each as one run of bytes (`#[serde(with = "byte_runs")]` in
//! [`super`]): serde would take each `Vec<u8>` a byte at a time.

use serde::{Deserialize, Deserializer, Serializer};

pub(super) fn serialize<S: Serializer>(runs: &[Vec<u8>], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(runs.iter().map(|run| serde_bytes::Bytes::new(run)))
}

pub(super) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Vec<u8>>, D::Error> {
    let runs = Vec::<serde_bytes::ByteBuf>::deserialize(deserializer)?;
    Ok(runs
        .into_iter()
        .map(serde_bytes::ByteBuf::into_vec)
        .collect())
}
