//! Blobs on this node's disk: one file per blob, named by its blake3 digest, written to a
//! temporary file, synced and renamed into place, so a blob is either whole or absent.
//! Bytes are hashed as they are written; a blob whose bytes do not match its digest is never
//! renamed into place.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::id::Digest;

/// Why a blob could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The file system failed.
    #[error("blob storage in {dir}: {source}")]
    Io {
        /// The blob directory.
        dir: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The bytes do not hash to the digest they were stored or asked for under.
    #[error("blob {expected} is corrupt: its bytes hash to {actual}")]
    Mismatch {
        /// The digest asked for.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// Not stored here.
    #[error("blob {0} is not stored on this node")]
    Missing(Digest),
}

/// The blob directory of a node.
#[derive(Clone, Debug)]
pub struct BlobDir {
    root: PathBuf,
    /// Test only: take bytes without checking them against their digest, to show that the
    /// blob tests catch a store that does so.
    #[cfg(feature = "test-switches")]
    trust: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl BlobDir {
    /// Opens (creating) the directory, and removes temporary files a crash left behind.
    pub fn open(root: &Path) -> Result<BlobDir, DiskError> {
        let dir = BlobDir {
            root: root.to_path_buf(),
            #[cfg(feature = "test-switches")]
            trust: Default::default(),
        };
        let tmp = dir.root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| dir.io(e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| dir.io(e))?;
        Ok(dir)
    }

    /// Test only: while set, bytes are taken and read back without checking their digest.
    #[cfg(feature = "test-switches")]
    pub fn trust_blobs_for_tests(&self, on: bool) {
        self.trust.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether `actual` may stand for `expected` (only when they are equal, outside tests).
    fn matches(&self, expected: Digest, actual: Digest) -> bool {
        #[cfg(feature = "test-switches")]
        if self.trust.load(std::sync::atomic::Ordering::SeqCst) {
            return true;
        }
        expected == actual
    }

    fn io(&self, source: std::io::Error) -> DiskError {
        DiskError::Io {
            dir: self.root.clone(),
            source,
        }
    }

    fn path(&self, digest: Digest) -> PathBuf {
        let hex = digest.to_string();
        self.root.join(&hex[..2]).join(hex)
    }

    /// The size of a stored blob (its bytes unverified), `None` when it is not stored.
    pub fn size(&self, digest: Digest) -> Result<Option<u64>, DiskError> {
        match std::fs::metadata(self.path(digest)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }

    /// A stored blob's bytes, verified against its digest.
    pub fn read(&self, digest: Digest) -> Result<Vec<u8>, DiskError> {
        let bytes = match std::fs::read(self.path(digest)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DiskError::Missing(digest));
            }
            Err(e) => return Err(self.io(e)),
        };
        let actual = Digest::of(&bytes);
        if !self.matches(digest, actual) {
            return Err(DiskError::Mismatch {
                expected: digest,
                actual,
            });
        }
        Ok(bytes)
    }

    /// Whether a stored blob's bytes match its digest (read in pieces, without holding the
    /// whole in memory).
    pub fn verify(&self, digest: Digest) -> Result<(), DiskError> {
        let mut file = match std::fs::File::open(self.path(digest)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DiskError::Missing(digest));
            }
            Err(e) => return Err(self.io(e)),
        };
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(|e| self.io(e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let actual = Digest::from(hasher.finalize());
        if !self.matches(digest, actual) {
            return Err(DiskError::Mismatch {
                expected: digest,
                actual,
            });
        }
        Ok(())
    }

    /// Opens a stored blob for reading from `offset` (unverified: the reader verifies the
    /// whole), `None` when it is not stored.
    pub fn open_at(&self, digest: Digest, offset: u64) -> Result<Option<std::fs::File>, DiskError> {
        let mut file = match std::fs::File::open(self.path(digest)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        file.seek(SeekFrom::Start(offset)).map_err(|e| self.io(e))?;
        Ok(Some(file))
    }

    /// Stores `bytes` and returns their digest; idempotent.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, DiskError> {
        let digest = Digest::of(bytes);
        if self.size(digest)? == Some(bytes.len() as u64) && self.verify(digest).is_ok() {
            return Ok(digest);
        }
        let mut w = self.writer()?;
        w.write(bytes)?;
        w.finish(digest)?;
        Ok(digest)
    }

    /// Starts writing a blob that arrives in pieces.
    pub fn writer(&self) -> Result<BlobWriter, DiskError> {
        let path = self
            .root
            .join("tmp")
            .join(format!("{:016x}", rand::random::<u64>()));
        let file = std::fs::File::create(&path).map_err(|e| self.io(e))?;
        Ok(BlobWriter {
            dir: self.clone(),
            path,
            file,
            hasher: blake3::Hasher::new(),
            len: 0,
        })
    }

    /// Removes a stored blob (a corrupt copy); removing one that is absent is no error.
    pub fn remove(&self, digest: Digest) -> Result<(), DiskError> {
        match std::fs::remove_file(self.path(digest)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Test only: overwrites a stored blob with other bytes, as disk corruption would.
    #[cfg(feature = "test-switches")]
    pub fn corrupt_for_tests(&self, digest: Digest, bytes: &[u8]) -> Result<(), DiskError> {
        std::fs::write(self.path(digest), bytes).map_err(|e| self.io(e))
    }
}

/// A blob being written; dropped unfinished, its temporary file is removed.
pub struct BlobWriter {
    dir: BlobDir,
    path: PathBuf,
    file: std::fs::File,
    hasher: blake3::Hasher,
    len: u64,
}

impl BlobWriter {
    /// Appends a piece.
    pub fn write(&mut self, piece: &[u8]) -> Result<(), DiskError> {
        self.hasher.update(piece);
        self.len += piece.len() as u64;
        self.file.write_all(piece).map_err(|e| self.dir.io(e))
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Checks the bytes against `expected`, syncs them and puts the blob in place.
    pub fn finish(self, expected: Digest) -> Result<(), DiskError> {
        let actual = Digest::from(self.hasher.finalize());
        if !self.dir.matches(expected, actual) {
            return Err(DiskError::Mismatch { expected, actual });
        }
        let dir = self.dir.clone();
        self.file.sync_all().map_err(|e| dir.io(e))?;
        let to = dir.path(expected);
        let parent = to.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(parent).map_err(|e| dir.io(e))?;
        std::fs::rename(&self.path, &to).map_err(|e| dir.io(e))?;
        // The rename is durable once the directory is synced.
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| dir.io(e))?;
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // After `finish` the file was renamed away and this finds nothing.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_is_stored_whole_and_checked_on_read() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = BlobDir::open(tmp.path()).unwrap();
        let d = dir.put(b"bytes").unwrap();
        assert_eq!(d, Digest::of(b"bytes"));
        assert_eq!(dir.read(d).unwrap(), b"bytes");
        assert_eq!(dir.size(d).unwrap(), Some(5));
        std::fs::write(dir.path(d), b"other").unwrap();
        assert!(matches!(dir.read(d), Err(DiskError::Mismatch { expected, .. }) if expected == d));
        assert!(matches!(dir.verify(d), Err(DiskError::Mismatch { .. })));
        // Putting it again replaces the corrupt copy.
        dir.put(b"bytes").unwrap();
        assert_eq!(dir.read(d).unwrap(), b"bytes");
        let absent = Digest::of(b"absent");
        assert!(matches!(dir.read(absent), Err(DiskError::Missing(x)) if x == absent));
        assert_eq!(dir.size(absent).unwrap(), None);
    }

    #[test]
    fn a_writer_with_the_wrong_bytes_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = BlobDir::open(tmp.path()).unwrap();
        let mut w = dir.writer().unwrap();
        w.write(b"piece one, ").unwrap();
        w.write(b"piece two").unwrap();
        assert_eq!(w.len(), 20);
        let wanted = Digest::of(b"something else");
        assert!(matches!(w.finish(wanted), Err(DiskError::Mismatch { .. })));
        assert_eq!(dir.size(wanted).unwrap(), None);
        assert_eq!(
            std::fs::read_dir(tmp.path().join("tmp")).unwrap().count(),
            0,
            "the temporary file is removed"
        );
        let mut w = dir.writer().unwrap();
        w.write(b"piece one, ").unwrap();
        w.write(b"piece two").unwrap();
        let d = Digest::of(b"piece one, piece two");
        w.finish(d).unwrap();
        assert_eq!(dir.read(d).unwrap(), b"piece one, piece two");
    }
}
