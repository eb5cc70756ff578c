//! A private scratch directory for the tokens `popgate dev` mints (the workload identity's
//! federated token, static identities' bound tokens), removed when dropped.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::PathBuf;

/// Owner-only: the directory holds bearer credentials for the local authority.
const DIR_MODE: u32 = 0o700;
/// Owner-only token files.
const FILE_MODE: u32 = 0o600;

/// Why a token file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct TokenFileError {
    path: String,
    source: std::io::Error,
}

/// The scratch directory; removed (with its files) on drop.
#[derive(Debug)]
pub(crate) struct TokenFiles {
    dir: PathBuf,
}

impl TokenFiles {
    /// Creates a fresh, owner-only directory under the system temp directory.
    pub(crate) fn create() -> Result<TokenFiles, TokenFileError> {
        let dir = std::env::temp_dir().join(format!(
            "popgate-dev-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        DirBuilder::new()
            .mode(DIR_MODE)
            .create(&dir)
            .map_err(|source| TokenFileError {
                path: dir.display().to_string(),
                source,
            })?;
        Ok(TokenFiles { dir })
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Writes `contents` to `{dir}/{name}` (owner-only) and returns the path.
    pub(crate) fn write(&self, name: &str, contents: &str) -> Result<PathBuf, TokenFileError> {
        let path = self.dir.join(name);
        let err = |source| TokenFileError {
            path: path.display().to_string(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(err)?;
        file.write_all(contents.as_bytes()).map_err(err)?;
        Ok(path)
    }
}

impl Drop for TokenFiles {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove the dev token directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn files_are_owner_only_and_removed_with_the_directory() {
        let files = TokenFiles::create().unwrap();
        let path = files.write("t.jwt", "x.y.z").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "x.y.z");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(files.write("t.jwt", "again").is_err(), "never overwrites");
        let dir = path.parent().unwrap().to_path_buf();
        drop(files);
        assert!(!dir.exists());
    }
}
