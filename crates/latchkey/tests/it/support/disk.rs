//! A small tmpfs to fill: the full-disk fault tests' data directory.
//!
//! Mounting needs root (`mount -t tmpfs`). Without it a test skips with a
//! message — except under CI (`CI` set), where the fault must be exercised
//! and a missing privilege fails the test.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// A tmpfs of a fixed size mounted on a fresh directory; unmounted on drop.
pub struct SmallDisk {
    dir: tempfile::TempDir,
    filler: PathBuf,
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn skip_or_fail(why: &str) -> Option<SmallDisk> {
    if std::env::var_os("CI").is_some() {
        panic!("{why}: required under CI (CI is set)");
    }
    eprintln!("SKIPPED: {why} (run as root, or under CI, to exercise a full disk)");
    None
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (e.g. `"8m"`); `None` (with a message) when
    /// this is not root, outside CI.
    pub fn mount(size: &str) -> Option<SmallDisk> {
        if !is_root() {
            return skip_or_fail("mounting a tmpfs needs root");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status();
        match status {
            Ok(s) if s.success() => {}
            other => return skip_or_fail(&format!("mount -t tmpfs failed: {other:?}")),
        }
        let filler = dir.path().join("filler");
        Some(SmallDisk { dir, filler })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills what is left of the disk with one file (until "no space").
    pub fn fill(&self) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.filler)
            .expect("open the filler");
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        // Byte by byte for the last partial chunk.
        while let Ok(1) = file.write(&[0u8]) {}
    }

    /// Gives the space back.
    pub fn free(&self) {
        std::fs::remove_file(&self.filler).expect("remove the filler");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
