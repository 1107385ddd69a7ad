//! Paths inside the data directory, and creating a new one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use veil_common::{DepartmentId, Role, UserId};

use crate::{Catalog, Error, Result, schema};

/// The paths of one data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// A data directory that `init` has created.
    ///
    /// # Errors
    /// [`Error::NotInitialized`] when `root` has no catalogue.
    pub fn existing(root: &Path) -> Result<Self> {
        let dir = Self { root: root.to_path_buf() };
        if !dir.catalog_db().is_file() || !dir.token_key().is_file() {
            return Err(Error::NotInitialized(root.to_path_buf()));
        }
        Ok(dir)
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The SQLite catalogue.
    pub fn catalog_db(&self) -> PathBuf {
        self.root.join("catalog.db")
    }

    /// The HMAC key for token tags.
    pub fn token_key(&self) -> PathBuf {
        self.root.join("keys").join("token.key")
    }

    /// The pseudonym key: the broker secret that de-identified results' pseudonyms are keyed by.
    pub fn pseudonym_key(&self) -> PathBuf {
        self.root.join("keys").join("pseudonym.key")
    }

    /// The audit log's segments.
    pub fn audit(&self) -> PathBuf {
        self.root.join("audit")
    }

    /// The audit log's Ed25519 signing key (PKCS#8, owner-only).
    pub fn audit_key(&self) -> PathBuf {
        self.root.join("keys").join("audit-signing.key")
    }

    /// Where dataset versions live.
    pub fn datasets(&self) -> PathBuf {
        self.root.join("datasets")
    }

    /// Scratch space for uploads and half-written versions, emptied at every open.
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// A fresh path in `tmp/` for an upload or a version being written.
    pub fn tmp_file(&self, extension: &str) -> PathBuf {
        self.tmp().join(format!("{}.{extension}", uuid::Uuid::new_v4()))
    }
}

/// Creates the directories of a data directory under `root`, owner-only.
fn create_layout(root: &Path) -> Result<DataDir> {
    let mut builder = fs::DirBuilder::new();
    builder.mode(0o700);
    let dir = DataDir { root: root.to_path_buf() };
    for path in [dir.root.clone(), dir.root.join("keys"), dir.datasets(), dir.tmp()] {
        builder.create(&path).map_err(Error::io("creating directory", &path))?;
    }
    Ok(dir)
}

/// Writes `bytes` to a new file readable by the owner only; never overwrites.
pub(crate) fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file =
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(Error::io("creating", path))?;
    file.write_all(bytes).map_err(Error::io("writing", path))?;
    file.sync_all().map_err(Error::io("syncing", path))?;
    Ok(())
}

pub(crate) fn read_key(path: &Path) -> Result<ring::hmac::Key> {
    let bytes = fs::read(path).map_err(Error::io("reading key", path))?;
    if bytes.len() != 32 {
        return Err(Error::Io {
            action: "reading key",
            path: path.to_path_buf(),
            source: std::io::Error::other("the key file is not 32 bytes"),
        });
    }
    Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes))
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    SystemRandom::new().fill(&mut out).map_err(|_| Error::Io {
        action: "drawing randomness",
        path: PathBuf::from("(system random)"),
        source: std::io::Error::other("the OS random source failed"),
    })?;
    Ok(out)
}

/// Makes a rename durable by syncing the directory that holds the new name.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io("syncing directory", dir))
}

/// Creates a new data directory at `root` with one admin user, and writes that admin's token to
/// `admin_token_file` (mode 0600). `files` are further files to place in it (relative path,
/// contents), such as the starting policy.
///
/// Everything is built in a staging directory beside `root` and renamed into place last, so a
/// failure leaves no half-made data directory. `root` may exist only as an empty directory;
/// an existing `admin_token_file` is never overwritten.
///
/// # Errors
/// [`Error::DirectoryNotEmpty`], [`Error::TokenFileExists`], or an I/O or SQLite failure; in
/// every case nothing is left behind.
pub fn init(root: &Path, admin_token_file: &Path, admin: &UserId, files: &[(&str, &str)]) -> Result<()> {
    if root.exists() {
        let empty = fs::read_dir(root).map_err(Error::io("reading", root))?.next().is_none();
        if !root.is_dir() || !empty {
            return Err(Error::DirectoryNotEmpty(root.to_path_buf()));
        }
    }
    if admin_token_file.exists() {
        return Err(Error::TokenFileExists(admin_token_file.to_path_buf()));
    }
    let parent = match root.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(Error::io("creating directory", &parent))?;
    let staging = parent.join(format!(".veil-init-{}", uuid::Uuid::new_v4()));
    let result = build_and_place(&staging, root, admin_token_file, admin, files);
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

fn build_and_place(
    staging: &Path,
    root: &Path,
    token_file: &Path,
    admin: &UserId,
    files: &[(&str, &str)],
) -> Result<()> {
    let dir = create_layout(staging)?;
    for (relative, contents) in files {
        let path = staging.join(relative);
        if let Some(parent) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(Error::io("creating directory", parent))?;
        }
        fs::write(&path, contents).map_err(Error::io("writing", &path))?;
    }
    write_secret_file(&dir.token_key(), &random_bytes::<32>()?)?;
    write_secret_file(&dir.pseudonym_key(), &random_bytes::<32>()?)?;
    {
        let mut conn = schema::connect(&dir.catalog_db())?;
        schema::migrate(&mut conn)?;
    }
    let token = {
        let catalog = Catalog::open(staging)?;
        catalog.create_user(admin, None::<&DepartmentId>, &[Role::Admin])?;
        catalog.issue_token(admin)?
    };
    write_secret_file(token_file, format!("{}\n", token.token).as_bytes())?;
    if let Err(e) = fs::rename(staging, root) {
        let _ = fs::remove_file(token_file);
        return Err(Error::Io { action: "moving the new data directory to", path: root.to_path_buf(), source: e });
    }
    Ok(())
}
