//! The log's Ed25519 signing key (ring) and its exportable public key.
//!
//! The private key is a PKCS#8 document in a file only the owner can read, created on first use.
//! The public key is exported as one line of hex (the 32 raw bytes), which is all `veil audit
//! verify` needs to check a copy of the log offline.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::record::{Checkpoint, sha256};
use crate::{Error, Result};

/// Signs checkpoints.
#[derive(Debug)]
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// Loads the key at `path`, creating it (mode 0600) if there is none.
    ///
    /// # Errors
    /// The file cannot be read or written, or is not an Ed25519 PKCS#8 key.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        if !path.exists() {
            let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| Error::Key { path: path.to_path_buf(), why: "the OS random source failed".into() })?;
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(Error::io("creating", path))?;
            file.write_all(document.as_ref()).map_err(Error::io("writing", path))?;
            file.sync_all().map_err(Error::io("syncing", path))?;
        }
        Self::load(path)
    }

    /// Loads the key at `path`.
    ///
    /// # Errors
    /// The file cannot be read or is not an Ed25519 PKCS#8 key.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).map_err(Error::io("reading", path))?;
        let pair = Ed25519KeyPair::from_pkcs8(&bytes)
            .map_err(|_| Error::Key { path: path.to_path_buf(), why: "not an Ed25519 PKCS#8 key".into() })?;
        Ok(Self { pair })
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(bytes)
    }

    /// A checkpoint over the record `head_seq` with hash `head_hash`.
    pub fn checkpoint(&self, head_seq: u64, head_hash: &[u8; 32]) -> Checkpoint {
        let signature = self.pair.sign(&Checkpoint::message(head_seq, head_hash));
        Checkpoint {
            head_seq,
            head_hash: veil_common::hex::encode(head_hash),
            key_id: self.public_key().id(),
            signature: veil_common::hex::encode(signature.as_ref()),
        }
    }
}

/// An Ed25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Reads an exported public key: 64 hex characters, surrounding white space ignored.
    ///
    /// # Errors
    /// The text is not 32 bytes of hex.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let bytes = veil_common::hex::decode(text.trim()).ok_or("a public key is 64 hexadecimal characters")?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| "a public key is 64 hexadecimal characters".to_owned())?;
        Ok(Self(bytes))
    }

    /// Reads an exported public key from a file.
    ///
    /// # Errors
    /// The file cannot be read or does not hold a key.
    pub fn read(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).map_err(Error::io("reading", path))?;
        Self::parse(&text).map_err(|why| Error::Key { path: path.to_path_buf(), why })
    }

    /// The key as exported: hex.
    pub fn to_hex(&self) -> String {
        veil_common::hex::encode(&self.0)
    }

    /// Short name of the key: the first 8 bytes of its SHA-256, hex.
    pub fn id(&self) -> String {
        veil_common::hex::encode(&sha256(&self.0)[..8])
    }

    /// Whether `checkpoint` is this key's signature over its head.
    pub fn verifies(&self, checkpoint: &Checkpoint) -> bool {
        let Some(hash) = veil_common::hex::decode(&checkpoint.head_hash) else { return false };
        let Some(signature) = veil_common::hex::decode(&checkpoint.signature) else { return false };
        UnparsedPublicKey::new(&ED25519, self.0)
            .verify(&Checkpoint::message(checkpoint.head_seq, &hash), &signature)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_with_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::load_or_create(&dir.path().join("a.key")).unwrap();
        let other = SigningKey::load_or_create(&dir.path().join("b.key")).unwrap();
        let checkpoint = key.checkpoint(41, &[7u8; 32]);
        assert!(key.public_key().verifies(&checkpoint));
        assert!(!other.public_key().verifies(&checkpoint));
        let mut moved = checkpoint.clone();
        moved.head_seq = 42;
        assert!(!key.public_key().verifies(&moved));
    }

    #[test]
    fn the_key_file_is_owner_only_and_reloads_to_the_same_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        let first = SigningKey::load_or_create(&path).unwrap().public_key();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(SigningKey::load_or_create(&path).unwrap().public_key(), first);
        assert_eq!(PublicKey::parse(&format!(" {}\n", first.to_hex())).unwrap(), first);
        assert!(PublicKey::parse("abcd").is_err());
    }
}
