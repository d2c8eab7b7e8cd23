//! Durable file operations shared by the dataset and checkpoint writers: checksums, atomic
//! replace (temp file + fsync + rename + fsync of the directory).

use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// SHA-256 (hex) and size of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    sha256_io(path).map_err(|e| Error::io(path, e))
}

/// [`sha256_file`] with the bare I/O error (for callers that report the path themselves).
pub fn sha256_io(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((h.finalize().iter().map(|b| format!("{b:02x}")).collect(), n))
}

/// Flushes a file's data to disk.
pub fn fsync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Flushes a directory entry (after a rename inside it).
pub fn fsync_dir(dir: &Path) -> Result<()> {
    sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// `fsync` of a directory (an empty path is the current directory), as an `io::Result`.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` atomically: readers see the old or the complete new content, and
/// a failure removes the temporary file (a crash may leave a `.NAME.tmp-PID` beside it).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    // Something that is not a file (`--json /dev/null`, a FIFO) is written to, never replaced:
    // a rename over /dev/null would turn it into a regular file.
    if std::fs::metadata(path).is_ok_and(|m| !m.file_type().is_file()) {
        return std::fs::write(path, bytes).map_err(|e| Error::io(path, e));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique among the processes (of every host on a shared file system) and threads that may
    // write the same file at once; the last rename wins whole.
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{nonce}-{n}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_hash_matches_known_vector() {
        let dir = std::env::temp_dir().join(format!("convtt-fsutil-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.txt");
        write_atomic(&p, b"old").unwrap();
        write_atomic(&p, b"abc").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"abc");
        let (hash, n) = sha256_file(&p).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temp file left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A device (or FIFO) is written to in place: `eval --json /dev/null` as root once turned
    /// /dev/null into a regular file by renaming over it.
    #[test]
    fn a_device_is_written_to_not_replaced() {
        write_atomic(Path::new("/dev/null"), b"x").unwrap();
        let m = std::fs::metadata("/dev/null").unwrap();
        assert!(!m.file_type().is_file(), "/dev/null is still a device");
        let left = std::fs::read_dir("/dev")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".null.tmp"))
            .count();
        assert_eq!(left, 0);
    }
}
