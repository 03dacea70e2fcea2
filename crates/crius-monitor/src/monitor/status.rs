//! `containers/<id>/status.json`: written with write-temp, fsync, rename, so a reader
//! (a restarted criusd) sees the previous status or the new one, never half of one.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crius_monitor::protocol::ContainerStatus;
use crius_monitor::{Error, Result};

pub(crate) fn write(dir: &Path, status: &ContainerStatus) -> Result<()> {
    let path = dir.join("status.json");
    let tmp = dir.join("status.json.tmp");
    let err = |message: String| Error::State {
        path: path.clone(),
        message,
    };
    let data = serde_json::to_vec(status).map_err(|e| err(e.to_string()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(|e| err(e.to_string()))?;
    f.write_all(&data)
        .and_then(|()| f.sync_all())
        .map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, &path).map_err(|e| err(e.to_string()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
