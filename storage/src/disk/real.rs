//! `RealDisk`: the `Disk` contract on the host file system. The only code in the workspace that
//! names `std::fs`. Reads and writes go to the page cache inline (microseconds); `sync` and
//! `sync_dir` run on tokio's blocking pool so an fsync never stalls the reactor.

use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::{Disk, DiskError, OpenMode};

/// Files under `root`.
#[derive(Clone, Debug)]
pub struct RealDisk {
    root: Arc<PathBuf>,
}

/// An open file; cheap to clone.
#[derive(Clone, Debug)]
pub struct RealFile {
    file: Arc<std::fs::File>,
}

impl RealDisk {
    /// Uses (and creates if needed) `root` as the top directory.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, DiskError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(map_err)?;
        Ok(RealDisk {
            root: Arc::new(root),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn resolve(&self, path: &str) -> Result<PathBuf, DiskError> {
        let rel = Path::new(path);
        let safe = rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !safe {
            return Err(DiskError::Io(format!(
                "path escapes the data dir: {path:?}"
            )));
        }
        Ok(self.root.join(rel))
    }
}

fn map_err(e: std::io::Error) -> DiskError {
    match e.kind() {
        ErrorKind::NotFound => DiskError::NotFound,
        ErrorKind::AlreadyExists => DiskError::AlreadyExists,
        ErrorKind::StorageFull => DiskError::NoSpace,
        _ if e.raw_os_error() == Some(28) => DiskError::NoSpace,
        _ => DiskError::Io(e.to_string()),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, DiskError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(map_err),
        Err(join) => Err(DiskError::Io(format!("blocking task failed: {join}"))),
    }
}

impl Disk for RealDisk {
    type File = RealFile;

    async fn open(&self, path: &str, mode: OpenMode) -> Result<RealFile, DiskError> {
        let full = self.resolve(path)?;
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true);
        match mode {
            OpenMode::Existing => {}
            OpenMode::CreateOrOpen => {
                options.create(true);
            }
            OpenMode::CreateNew => {
                options.create_new(true);
            }
        }
        let file = options.open(full).map_err(map_err)?;
        Ok(RealFile {
            file: Arc::new(file),
        })
    }

    async fn read_at(
        &self,
        file: &RealFile,
        position_bytes: u64,
        buf: &mut [u8],
    ) -> Result<usize, DiskError> {
        let mut done = 0;
        while done < buf.len() {
            match file
                .file
                .read_at(&mut buf[done..], position_bytes + done as u64)
            {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(map_err(e)),
            }
        }
        Ok(done)
    }

    async fn write_at(
        &self,
        file: &RealFile,
        position_bytes: u64,
        bytes: &[u8],
    ) -> Result<(), DiskError> {
        file.file
            .write_all_at(bytes, position_bytes)
            .map_err(map_err)
    }

    async fn sync(&self, file: &RealFile) -> Result<(), DiskError> {
        let file = file.file.clone();
        blocking(move || file.sync_data()).await
    }

    async fn len(&self, file: &RealFile) -> Result<u64, DiskError> {
        Ok(file.file.metadata().map_err(map_err)?.len())
    }

    async fn set_len(&self, file: &RealFile, len_bytes: u64) -> Result<(), DiskError> {
        file.file.set_len(len_bytes).map_err(map_err)
    }

    async fn create_dir_all(&self, path: &str) -> Result<(), DiskError> {
        std::fs::create_dir_all(self.resolve(path)?).map_err(map_err)
    }

    async fn list(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(self.resolve(dir)?).map_err(map_err)? {
            let entry = entry.map_err(map_err)?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        std::fs::rename(self.resolve(from)?, self.resolve(to)?).map_err(map_err)
    }

    async fn remove(&self, path: &str) -> Result<(), DiskError> {
        let full = self.resolve(path)?;
        match std::fs::remove_file(&full) {
            Ok(()) => Ok(()),
            Err(e) if full.is_dir() => std::fs::remove_dir(&full).map_err(|_| map_err(e)),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn sync_dir(&self, dir: &str) -> Result<(), DiskError> {
        let full = self.resolve(dir)?;
        blocking(move || std::fs::File::open(full)?.sync_all()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn write_sync_read_round_trip_and_directory_ops() {
        let dir = tempfile::tempdir().unwrap();
        let disk = RealDisk::new(dir.path()).unwrap();
        disk.create_dir_all("t-0").await.unwrap();
        let f = disk.open("t-0/a.log", OpenMode::CreateNew).await.unwrap();
        disk.write_at(&f, 0, b"hello").await.unwrap();
        disk.write_at(&f, 5, b" world").await.unwrap();
        disk.sync(&f).await.unwrap();
        disk.sync_dir("t-0").await.unwrap();
        let mut buf = [0u8; 32];
        let n = disk.read_at(&f, 0, &mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello world");
        assert_eq!(disk.len(&f).await.unwrap(), 11);
        assert_eq!(
            disk.open("t-0/a.log", OpenMode::CreateNew).await.err(),
            Some(DiskError::AlreadyExists)
        );
        disk.rename("t-0/a.log", "t-0/b.log").await.unwrap();
        assert_eq!(disk.list("t-0").await.unwrap(), vec!["b.log".to_string()]);
        disk.remove("t-0/b.log").await.unwrap();
        assert!(disk.list("t-0").await.unwrap().is_empty());
        assert_eq!(
            disk.open("t-0/zzz", OpenMode::Existing).await.err(),
            Some(DiskError::NotFound)
        );
        assert!(matches!(
            disk.open("../escape", OpenMode::CreateOrOpen).await,
            Err(DiskError::Io(_))
        ));
    }
}
