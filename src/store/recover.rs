//! Recovery at open: empty `tmp/`, finish or undo whatever a crash
//! interrupted, and list what the store holds.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::Path;

use crate::error::{Error, Result};
use crate::id::FileId;

use super::layout::{Layout, is_temp_name};
use super::records::{FileRecord, Mode, PartRecord, UploadRecord, load_json};
use super::staging::bury;
use super::{remove_any, settle_staged};

/// An open upload as found on disk.
pub(crate) struct Recovered {
    /// Its id.
    pub(crate) id: FileId,
    /// Its record.
    pub(crate) record: UploadRecord,
    /// Its acknowledged parts.
    pub(crate) parts: BTreeMap<u32, PartRecord>,
}

/// Empties `tmp/`, removes leftovers of interrupted work at the top of the
/// store, and returns the ids of the open uploads. Each upload is recovered
/// on its own when it is first used ([`load_upload`]), so opening a store
/// costs a directory listing, not a parse of every record.
pub(crate) fn recover(layout: &Layout) -> Result<Vec<FileId>> {
    layout.create_dirs()?;
    clear_dir(&layout.tmp_dir())?;
    layout.fsync_dir(&layout.tmp_dir())?;

    // Committed files: a leftover temporary inside one is removed; a directory
    // without its record cannot come from the commit protocol and is left for
    // an operator rather than deleted.
    for entry in read_dir(&layout.files_dir())? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_temp_name(&name) {
            remove_any(&entry.path())?;
        }
    }

    let mut out = Vec::new();
    let mut removed = false;
    for entry in read_dir(&layout.uploads_dir())? {
        let name = entry.file_name().to_string_lossy().into_owned();
        match name.parse::<FileId>() {
            Ok(id) => out.push(id),
            Err(_) if is_temp_name(&name) => {
                remove_any(&entry.path())?;
                removed = true;
            }
            Err(_) => {}
        }
    }
    if removed {
        layout.fsync_dir(&layout.uploads_dir())?;
    }
    Ok(out)
}

/// Recovers one open upload found by [`recover`]: finishes the cleanup of an
/// upload that was committed before a crash (and answers `None`), removes
/// unacknowledged bytes, redoes interrupted part replacements, and returns
/// its records.
pub(crate) fn load_upload(layout: &Layout, id: &FileId) -> Result<Option<Recovered>> {
    if layout.file_record(id).exists() {
        // Committed before the crash; only the cleanup was missing. The
        // commit's rename may not be durable yet: make it so before its
        // upload, the only other copy of the bytes, goes.
        layout.fsync_dir(&layout.files_dir())?;
        remove_any(&layout.upload_dir(id))?;
        layout.fsync_dir(&layout.uploads_dir())?;
        return Ok(None);
    }
    match recover_upload(layout, id.clone()) {
        Ok(r) => Ok(Some(r)),
        // A creation that never became durable (it is made durable before
        // its first part or plan is acknowledged): nothing acknowledged is
        // lost by removing it.
        Err(e) => {
            if never_durable(layout, id)? {
                let grave = bury(layout, &layout.upload_dir(id), &layout.uploads_dir())?;
                remove_any(&grave)?;
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

/// Whether the upload is a creation that never became durable: its record
/// is missing or does not parse (a crash lost it), and it has no part
/// records (a part is acknowledged only after the creation was flushed).
/// Anything that cannot be read for another reason is not taken for one.
fn never_durable(layout: &Layout, id: &FileId) -> Result<bool> {
    match fs::read(layout.upload_record(id)) {
        Ok(bytes) if serde_json::from_slice::<UploadRecord>(&bytes).is_ok() => return Ok(false),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("upload record")(e)),
    }
    for entry in read_dir(&layout.parts_dir(id))? {
        if entry.file_name().to_string_lossy().ends_with(".json") {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The committed files in the store with their records.
pub(crate) fn committed(layout: &Layout) -> Result<Vec<(FileId, FileRecord)>> {
    let mut out = Vec::new();
    for entry in read_dir(&layout.files_dir())? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Ok(id) = name.parse::<FileId>() {
            let path = layout.file_record(&id);
            if path.exists() {
                out.push((id, load_json(&path, "file record")?));
            }
        }
    }
    Ok(out)
}

fn recover_upload(layout: &Layout, id: FileId) -> Result<Recovered> {
    let mut record: UploadRecord = load_json(&layout.upload_record(&id), "upload record")?;
    let dir = layout.upload_dir(&id);
    for entry in read_dir(&dir)? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_temp_name(&name) {
            remove_any(&entry.path())?;
        }
    }
    let parts_dir = layout.parts_dir(&id);
    let mut parts = BTreeMap::new();
    let mut data_files = Vec::new();
    for entry in read_dir(&parts_dir)? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_temp_name(&name) {
            remove_any(&entry.path())?;
        } else if let Some(n) = name
            .strip_suffix(".json")
            .and_then(|n| n.parse::<u32>().ok())
        {
            let rec: PartRecord = load_json(&entry.path(), "part record")?;
            parts.insert(n, rec);
        } else {
            data_files.push(name);
        }
    }
    // Bytes of a part whose record was never written were never acknowledged.
    let referenced: BTreeSet<&str> = parts.values().filter_map(|p| p.data.as_deref()).collect();
    for name in &data_files {
        if !referenced.contains(name.as_str()) {
            remove_any(&parts_dir.join(name))?;
        }
    }
    layout.fsync_dir(&parts_dir)?;
    if record.mode == Mode::Chain {
        for (n, rec) in parts.iter_mut() {
            if rec.data.is_some() {
                let offset = record.plan.get(n).and_then(|p| p.offset).ok_or_else(|| {
                    Error::io("part record")(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a staged part has no planned offset",
                    ))
                })?;
                *rec = settle_staged(layout, &id, *n, offset, rec)?;
            }
        }
    }
    // The first part without a plan is acknowledged before the mode switch
    // is recorded; a crash between the two leaves an unset upload with parts.
    if record.mode == Mode::Unset && !parts.is_empty() {
        record.mode = Mode::Stream;
    }
    Ok(Recovered { id, record, parts })
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    match fs::read_dir(dir) {
        Ok(rd) => rd
            .collect::<io::Result<Vec<_>>>()
            .map_err(Error::io("store directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("store directory")(e)),
    }
}

fn clear_dir(dir: &Path) -> Result<()> {
    for entry in read_dir(dir)? {
        remove_any(&entry.path())?;
    }
    Ok(())
}
