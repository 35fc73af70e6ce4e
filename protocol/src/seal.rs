//! Sealing the credential store's secrets: ChaCha20-Poly1305 (ring's) under a 32-byte key that
//! lives in a file each coordinator is given and never enters the replicated state.
//!
//! - [`Key`]: 32 random bytes, named by a short fingerprint ([`Key::id`]); its `Debug` shows only
//!   the id, and its bytes are wiped when dropped.
//! - [`KeyRing`]: a key file's keys, the newest (what new records are sealed with) last. The file
//!   is text, one key a line: `nexus-credentials-key v1 <id> <64 hex digits>`; blank lines and
//!   `#` comments are skipped. It is written `0600` and never overwritten ([`write_new_key`],
//!   [`append_key`]); a file that others may read is refused ([`read_key_file`]).
//! - [`seal`], [`open`]: a [`Secret`] to a [`Sealed`] and back. The credential's kind, name, scope
//!   and username are the AEAD's associated data ([`associated_data`]), so a ciphertext copied
//!   onto another record (or a record whose scope was changed) does not open.
//!
//! Pure apart from the random source and the key file's own I/O.

use std::io::Write;
use std::path::Path;

use ring::aead::{self, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::credentials::{CredentialSpec, Secret};
use crate::error::InvalidValue;

/// A key file line's first word.
const MAGIC: &str = "nexus-credentials-key";
/// The key file's format version.
const FORMAT: &str = "v1";
/// The most keys a key file may hold.
pub const MAX_KEYS: usize = 64;
/// The largest key file read.
const MAX_KEY_FILE_BYTES: u64 = 64 << 10;
/// Characters of the fingerprint kept as a key's id.
const ID_LEN: usize = 16;

/// One key: 32 secret bytes and their fingerprint.
pub struct Key {
    id: String,
    bytes: [u8; 32],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("bytes", &"<redacted>")
            .finish()
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl Key {
    /// A fresh key from the operating system's secure random source.
    pub fn generate() -> Result<Key, InvalidValue> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes)
            .map_err(|error| InvalidValue(format!("no secure random source: {error}")))?;
        Ok(Key::from_bytes(bytes))
    }

    fn from_bytes(bytes: [u8; 32]) -> Key {
        let mut named = Vec::with_capacity(MAGIC.len() + 32);
        named.extend_from_slice(MAGIC.as_bytes());
        named.extend_from_slice(&bytes);
        let mut id = crate::hash::hex(&crate::hash::sha256(&named));
        named.zeroize();
        id.truncate(ID_LEN);
        Key { id, bytes }
    }

    /// The key's fingerprint: 16 hex digits of a SHA-256 of the key. Safe to show and to store.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key file line that holds it.
    pub fn line(&self) -> String {
        format!(
            "{MAGIC} {FORMAT} {} {}\n",
            self.id,
            crate::hash::hex(&self.bytes)
        )
    }

    /// The AEAD key (32 bytes is ChaCha20-Poly1305's length, so always `Some`).
    fn aead(&self) -> Option<LessSafeKey> {
        UnboundKey::new(&CHACHA20_POLY1305, &self.bytes)
            .ok()
            .map(LessSafeKey::new)
    }
}

/// A key file's keys, oldest first: the last is what new records are sealed with.
#[derive(Debug, Default)]
pub struct KeyRing {
    keys: Vec<Key>,
}

impl KeyRing {
    /// The keys of a key file's text.
    pub fn parse(text: &str) -> Result<KeyRing, InvalidValue> {
        let mut keys: Vec<Key> = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad =
                |why: &str| InvalidValue(format!("line {} of the key file: {why}", number + 1));
            let words: Vec<&str> = line.split_whitespace().collect();
            let [magic, format, id, hex] = words[..] else {
                return Err(bad(&format!(
                    "expected `{MAGIC} {FORMAT} <id> <64 hex digits>`"
                )));
            };
            if magic != MAGIC {
                return Err(bad(&format!(
                    "not a Nexus credentials key (expected {MAGIC:?})"
                )));
            }
            if format != FORMAT {
                return Err(bad(&format!(
                    "unknown key format {format:?} (this Nexus reads {FORMAT})"
                )));
            }
            let bytes = parse_hex32(hex).ok_or_else(|| bad("the key is not 64 hex digits"))?;
            let key = Key::from_bytes(bytes);
            if key.id != id {
                return Err(bad(&format!(
                    "the key's id {id:?} does not match the key (a damaged or edited line)"
                )));
            }
            if keys.iter().any(|held| held.id == key.id) {
                return Err(bad(&format!("key {id} appears twice")));
            }
            if keys.len() == MAX_KEYS {
                return Err(bad(&format!("more than {MAX_KEYS} keys")));
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(InvalidValue("the key file holds no key".into()));
        }
        Ok(KeyRing { keys })
    }

    /// The key new records are sealed with.
    pub fn newest(&self) -> Option<&Key> {
        self.keys.last()
    }

    /// The key with this id.
    pub fn get(&self, id: &str) -> Option<&Key> {
        self.keys.iter().find(|key| key.id == id)
    }

    /// Every key's id, oldest first.
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|key| key.id.clone()).collect()
    }
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let digits = hex.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(bytes)
}

/// Reads a key file. Refused: one that is missing, too large, readable or writable by others
/// (its mode must be `0600` or stricter), or not a key file.
pub fn read_key_file(path: &Path) -> Result<KeyRing, InvalidValue> {
    let bad = |why: String| InvalidValue(format!("the key file {}: {why}", path.display()));
    let metadata = std::fs::metadata(path).map_err(|error| bad(error.to_string()))?;
    if !metadata.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if metadata.len() > MAX_KEY_FILE_BYTES {
        return Err(bad(format!("larger than {MAX_KEY_FILE_BYTES} bytes")));
    }
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "others may read or write it (mode {mode:o}): `chmod 600` it"
            )));
        }
    }
    let mut text = std::fs::read_to_string(path).map_err(|error| bad(error.to_string()))?;
    let keys = KeyRing::parse(&text).map_err(|error| bad(error.0));
    text.zeroize();
    keys
}

/// Writes a new key file holding one fresh key, mode `0600`; refuses when `path` exists.
pub fn write_new_key(path: &Path) -> Result<String, InvalidValue> {
    use std::os::unix::fs::OpenOptionsExt;
    let key = Key::generate()?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| {
            InvalidValue(format!(
                "cannot create the key file {} ({error}); it is never overwritten: use --add to add a key to it",
                path.display()
            ))
        })?;
    write_key_line(&mut file, &key, path)
}

/// Writes `key`'s line to `file` (then synced), wiping the line from memory; returns its id.
fn write_key_line(
    file: &mut std::fs::File,
    key: &Key,
    path: &Path,
) -> Result<String, InvalidValue> {
    let mut line = key.line();
    let written = file
        .write_all(line.as_bytes())
        .and_then(|()| file.sync_all());
    line.zeroize();
    written.map_err(|error| InvalidValue(format!("writing {}: {error}", path.display())))?;
    Ok(key.id().to_string())
}

/// Appends a fresh key to an existing, valid key file (it becomes the newest).
pub fn append_key(path: &Path) -> Result<String, InvalidValue> {
    let held = read_key_file(path)?;
    if held.keys.len() >= MAX_KEYS {
        return Err(InvalidValue(format!(
            "the key file {} already holds {MAX_KEYS} keys: remove old ones first",
            path.display()
        )));
    }
    let key = Key::generate()?;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|error| InvalidValue(format!("opening {}: {error}", path.display())))?;
    write_key_line(&mut file, &key, path)
}

/// A secret as the state keeps it: sealed under the key `key_id`, with its nonce.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// Why a sealed secret did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The record is sealed under a key this key ring lacks.
    #[error("the credential is sealed under key {0}, which this coordinator's key file lacks")]
    KeyMissing(String),
    /// The ciphertext, its nonce or its record was changed, or the key file's key of that id is
    /// not the one it was sealed with.
    #[error("the credential's ciphertext does not open: it was changed or moved to another record")]
    Damaged,
}

/// What binds a ciphertext to its record: kind, name, scope and username.
pub fn associated_data(spec: &CredentialSpec) -> Vec<u8> {
    let mut data = Vec::new();
    for part in [
        "nexus-credential v1",
        spec.kind.as_str(),
        &spec.name,
        &spec.scope,
        &spec.username,
    ] {
        data.extend_from_slice(&(part.len() as u32).to_be_bytes());
        data.extend_from_slice(part.as_bytes());
    }
    data
}

/// Seals `secret` for the record `spec` under `key`, with a fresh random nonce.
pub fn seal(key: &Key, spec: &CredentialSpec, secret: &Secret) -> Result<Sealed, InvalidValue> {
    seal_for(key, &associated_data(spec), secret)
}

/// Opens the record `spec`'s `sealed` secret with the key it names.
pub fn open(keys: &KeyRing, spec: &CredentialSpec, sealed: &Sealed) -> Result<Secret, OpenError> {
    open_for(keys, &associated_data(spec), sealed)
}

/// Seals `secret` under `key` bound to `associated` (what the ciphertext belongs to: it opens
/// only with the same), with a fresh random nonce.
pub fn seal_for(key: &Key, associated: &[u8], secret: &Secret) -> Result<Sealed, InvalidValue> {
    let mut nonce = [0u8; aead::NONCE_LEN];
    getrandom::getrandom(&mut nonce)
        .map_err(|error| InvalidValue(format!("no secure random source: {error}")))?;
    let aead = key
        .aead()
        .ok_or_else(|| InvalidValue("the key is not a ChaCha20-Poly1305 key".into()))?;
    let mut in_out = secret.expose().as_bytes().to_vec();
    let sealed = aead.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(associated),
        &mut in_out,
    );
    if sealed.is_err() {
        in_out.zeroize();
        return Err(InvalidValue("the secret could not be sealed".into()));
    }
    Ok(Sealed {
        key_id: key.id.clone(),
        nonce: nonce.to_vec(),
        ciphertext: in_out,
    })
}

/// Opens `sealed`, bound to `associated`, with the key it names.
pub fn open_for(keys: &KeyRing, associated: &[u8], sealed: &Sealed) -> Result<Secret, OpenError> {
    let key = keys
        .get(&sealed.key_id)
        .ok_or_else(|| OpenError::KeyMissing(sealed.key_id.clone()))?;
    let nonce: [u8; aead::NONCE_LEN] = sealed
        .nonce
        .as_slice()
        .try_into()
        .map_err(|_| OpenError::Damaged)?;
    let aead = key.aead().ok_or(OpenError::Damaged)?;
    let mut in_out = sealed.ciphertext.clone();
    let opened = aead
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(associated),
            &mut in_out,
        )
        .map(|plain| String::from_utf8(plain.to_vec()));
    in_out.zeroize();
    match opened {
        Ok(Ok(text)) => Ok(Secret::new(text)),
        Ok(Err(not_utf8)) => {
            let mut bytes = not_utf8.into_bytes();
            bytes.zeroize();
            Err(OpenError::Damaged)
        }
        Err(_) => Err(OpenError::Damaged),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::CredentialKind;

    fn spec(name: &str, scope: &str) -> CredentialSpec {
        CredentialSpec {
            name: name.into(),
            kind: CredentialKind::Registry,
            scope: scope.into(),
            username: "bot".into(),
        }
    }

    fn ring(keys: &[&Key]) -> KeyRing {
        KeyRing::parse(&keys.iter().map(|key| key.line()).collect::<String>()).unwrap()
    }

    type Case<'a> = (
        &'static str,
        &'a KeyRing,
        CredentialSpec,
        Sealed,
        Result<&'static str, OpenError>,
    );

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_its_record() {
        let old = Key::generate().unwrap();
        let new = Key::generate().unwrap();
        let other = Key::generate().unwrap();
        let both = ring(&[&old, &new]);
        let only_new = ring(&[&new]);
        let only_other = ring(&[&other]);
        let record = spec("reg", "127.0.0.1:5000");
        let secret = Secret::new("hunter2-planted".into());
        let sealed = seal(&old, &record, &secret).unwrap();
        assert_eq!(sealed.key_id, old.id());
        assert!(
            !sealed.ciphertext.windows(7).any(|w| w == b"hunter2"),
            "the ciphertext holds the plaintext"
        );
        let flip = |mut sealed: Sealed, at: usize| {
            sealed.ciphertext[at] ^= 1;
            sealed
        };
        let mut renamed = sealed.clone();
        renamed.key_id = other.id().to_string();
        let cases: Vec<Case<'_>> = vec![
            (
                "round trip",
                &both,
                record.clone(),
                sealed.clone(),
                Ok("hunter2-planted"),
            ),
            (
                "a ring without its key",
                &only_new,
                record.clone(),
                sealed.clone(),
                Err(OpenError::KeyMissing(old.id().into())),
            ),
            (
                "tampered",
                &both,
                record.clone(),
                flip(sealed.clone(), 0),
                Err(OpenError::Damaged),
            ),
            (
                "tampered tag",
                &both,
                record.clone(),
                flip(sealed.clone(), sealed.ciphertext.len() - 1),
                Err(OpenError::Damaged),
            ),
            (
                "moved to another record",
                &both,
                spec("other", "127.0.0.1:5000"),
                sealed.clone(),
                Err(OpenError::Damaged),
            ),
            (
                "its scope changed",
                &both,
                spec("reg", "evil.example.com"),
                sealed.clone(),
                Err(OpenError::Damaged),
            ),
            (
                "a wrong key under its id",
                &only_other,
                record.clone(),
                renamed,
                Err(OpenError::Damaged),
            ),
            (
                "a short nonce",
                &both,
                record.clone(),
                Sealed {
                    nonce: vec![0; 4],
                    ..sealed.clone()
                },
                Err(OpenError::Damaged),
            ),
        ];
        for (what, keys, record, sealed, expected) in cases {
            let opened = open(keys, &record, &sealed);
            assert_eq!(
                opened.as_ref().map(Secret::expose).map_err(Clone::clone),
                expected,
                "{what}"
            );
        }
        // Sealing twice gives different ciphertexts (fresh nonces).
        assert_ne!(seal(&old, &record, &secret).unwrap(), sealed);
    }

    #[test]
    fn keys_never_show_and_name_themselves() {
        let key = Key::generate().unwrap();
        let hex = crate::hash::hex(&key.bytes);
        assert!(!format!("{key:?}").contains(&hex));
        assert!(format!("{key:?}").contains(key.id()));
        assert_eq!(key.id().len(), ID_LEN);
        let keys = ring(&[&key]);
        assert!(!format!("{keys:?}").contains(&hex));
        assert_eq!(keys.ids(), vec![key.id().to_string()]);
        assert_eq!(keys.newest().unwrap().id(), key.id());
    }

    #[test]
    fn bad_key_files_are_refused() {
        let a = Key::generate().unwrap();
        let b = Key::generate().unwrap();
        let good = format!("# made by nexus\n\n{}{}", a.line(), b.line());
        let keys = KeyRing::parse(&good).unwrap();
        assert_eq!(keys.ids(), vec![a.id().to_string(), b.id().to_string()]);
        assert_eq!(keys.newest().unwrap().id(), b.id());
        let hex = crate::hash::hex(&a.bytes);
        let cases = [
            ("", "holds no key"),
            ("# only a comment\n", "holds no key"),
            ("nexus-credentials-key v1 abc\n", "expected"),
            (&format!("other-key v1 {} {hex}\n", a.id()), "not a Nexus"),
            (
                &format!("{MAGIC} v9 {} {hex}\n", a.id()),
                "unknown key format",
            ),
            (&format!("{MAGIC} v1 {} {}\n", a.id(), &hex[..62]), "64 hex"),
            (
                &format!("{MAGIC} v1 {} {}zz\n", a.id(), &hex[..62]),
                "64 hex",
            ),
            (
                &format!("{MAGIC} v1 0000000000000000 {hex}\n"),
                "does not match",
            ),
            (&format!("{}{}", a.line(), a.line()), "twice"),
        ];
        for (text, why) in cases {
            let error = KeyRing::parse(text).unwrap_err();
            assert!(error.0.contains(why), "{text:?}: {error}");
            assert!(!error.0.contains(&hex), "an error shows the key: {error}");
        }
    }

    #[test]
    fn key_files_are_made_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.key");
        let first = write_new_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let error = write_new_key(&path).unwrap_err();
        assert!(error.0.contains("never overwritten"), "{error}");
        let second = append_key(&path).unwrap();
        let keys = read_key_file(&path).unwrap();
        assert_eq!(keys.ids(), vec![first, second.clone()]);
        assert_eq!(keys.newest().unwrap().id(), second);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = read_key_file(&path).unwrap_err();
        assert!(error.0.contains("chmod 600"), "{error}");
        assert!(append_key(&path).is_err());
        assert!(read_key_file(&dir.path().join("missing")).is_err());
        assert!(append_key(&dir.path().join("missing")).is_err());
    }
}
