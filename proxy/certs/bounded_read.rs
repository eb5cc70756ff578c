//! Reading a whole file with a size cap: every file popgate reads (config, certificates, keys,
//! PKCS#12, token files) has a limit, so a path pointing at something else by mistake (a log, a
//! device) costs at most the limit in memory. Here because `certs` is the lowest layer: every
//! other layer may call it.
//!
//! The buffer is [`Zeroizing`] (the file may hold a key or a token) and sized from the file's
//! length up front, so it does not reallocate and leave copies behind.

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Why a bounded read failed. Callers put their own words (and the file name) around it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BoundedReadError {
    /// The file cannot be opened or read; displays as the I/O error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file holds more than the limit.
    #[error("is larger than {max} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        max: u64,
    },
}

/// Reads the file at `path`, refusing one larger than `max` bytes.
pub(crate) fn read_bounded(path: &Path, max: u64) -> Result<Zeroizing<Vec<u8>>, BoundedReadError> {
    read_open_file(File::open(path)?, max)
}

/// Like [`read_bounded`] for a file already opened (so a caller can look at its metadata, e.g. a
/// key file's mode, on the very file that is read).
pub(crate) fn read_open_file(file: File, max: u64) -> Result<Zeroizing<Vec<u8>>, BoundedReadError> {
    // One byte over the limit tells "exactly at the limit" from "larger". The length is a hint
    // only (the file may grow meanwhile), which `take` makes harmless.
    let hint = file.metadata().map_or(0, |m| m.len()).min(max);
    let capacity = usize::try_from(hint.saturating_add(1)).unwrap_or(0);
    let mut buf = Zeroizing::new(Vec::with_capacity(capacity));
    file.take(max.saturating_add(1)).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(BoundedReadError::TooLarge { max });
    }
    Ok(buf)
}

/// [`read_bounded`] for async callers, on tokio's blocking pool (which is what `tokio::fs` does
/// under the hood).
pub(crate) async fn read_bounded_async(
    path: PathBuf,
    max: u64,
) -> Result<Zeroizing<Vec<u8>>, BoundedReadError> {
    tokio::task::spawn_blocking(move || read_bounded(&path, max))
        .await
        .map_err(|e| BoundedReadError::Io(std::io::Error::other(e)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_up_to_the_limit_and_refuses_one_byte_more() {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("at");
        std::fs::write(&at, [7u8; 16]).unwrap();
        assert_eq!(read_bounded(&at, 16).unwrap().as_slice(), &[7u8; 16]);
        assert!(matches!(
            read_bounded(&at, 15),
            Err(BoundedReadError::TooLarge { max: 15 })
        ));
        assert_eq!(
            read_bounded(&at, 15).unwrap_err().to_string(),
            "is larger than 15 bytes"
        );
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(read_bounded(&empty, 0).unwrap().is_empty());
    }

    #[test]
    fn a_missing_file_is_the_io_error() {
        let err = read_bounded(Path::new("/nonexistent/popgate"), 1).unwrap_err();
        assert!(
            matches!(&err, BoundedReadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
        );
    }

    #[tokio::test]
    async fn the_async_form_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            read_bounded_async(p.clone(), 3).await.unwrap().as_slice(),
            b"abc"
        );
        assert!(matches!(
            read_bounded_async(p, 2).await,
            Err(BoundedReadError::TooLarge { max: 2 })
        ));
    }
}
