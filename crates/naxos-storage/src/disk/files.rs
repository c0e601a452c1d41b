//! The data directory's own files and names: `format.json` (what the
//! directory was created with, checked at every open), `meta.json` (the
//! store's [`Meta`] and the manifest of the segment files the directory
//! must hold), and the names of the segment and index files.

use super::{fs, Options, SEGMENT_POSITIONS_MAX};
use crate::{Error, Meta, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;

const FORMAT_VERSION: u32 = 1;
const FORMAT_FILE: &str = "format.json";
pub(super) const META_FILE: &str = "meta.json";

/// `format.json`: what a directory was created with.
#[derive(Debug, Serialize, Deserialize)]
struct Format {
    format_version: u32,
    segment_positions: u64,
}

/// `meta.json`: the store's metadata and its manifest.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct MetaFile {
    #[serde(flatten)]
    pub(super) meta: Meta,
    /// The first positions of the segment files the directory must hold
    /// (those not wholly below the trim mark): a segment file that goes
    /// missing is reported, never served as holes. Absent in directories
    /// written before the manifest; the next open builds it from the files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) segments: Option<BTreeSet<u64>>,
}

/// A segment's record file.
pub(super) fn log_name(first: u64) -> String {
    format!("seg-{first:020}.log")
}

/// A segment's index file.
pub(super) fn idx_name(first: u64) -> String {
    format!("seg-{first:020}.idx")
}

/// The first position of a segment file name with `suffix`, if it is one.
pub(super) fn parse_name(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn directory_error(dir: &Path, reason: String) -> Error {
    Error::Directory { path: dir.display().to_string(), reason }
}

/// Reads `format.json` (or writes it for a new directory) and returns the
/// directory's segment size.
pub(super) fn load_format(dir: &Path, options: &Options, has_segments: bool) -> Result<u64> {
    let Some(bytes) = fs::read(options.fs.as_ref(), dir, FORMAT_FILE)? else {
        if has_segments && fs::read(options.fs.as_ref(), dir, META_FILE)?.is_some_and(|m| lists_segments(&m)) {
            // Written by a version that writes format.json: it was deleted,
            // and the positions each segment file holds are unknown.
            return Err(directory_error(
                dir,
                format!(
                    "{FORMAT_FILE} is missing next to segment files: the number of positions per segment file \
                     this directory was written with is unknown, and guessing it would serve entries as never \
                     written. Restore it from a backup, or move this directory away and start the node empty so \
                     that its replicas re-copy the log"
                ),
            ));
        }
        if has_segments {
            tracing::warn!(dir = %dir.display(), "segment files without format.json; assuming segment_positions {}", options.segment_positions);
        }
        let format = Format { format_version: FORMAT_VERSION, segment_positions: options.segment_positions };
        let bytes = crate::checked::encode(&format).expect("Format has only plain fields and always serializes");
        fs::write_atomic(options.fs.as_ref(), dir, FORMAT_FILE, &bytes)?;
        return Ok(options.segment_positions);
    };
    let format: Format = crate::checked::decode(&bytes).map_err(|e| {
        directory_error(dir, format!("{FORMAT_FILE} is unreadable ({e}); is this a Naxos data directory?"))
    })?;
    if format.format_version != FORMAT_VERSION {
        return Err(directory_error(
            dir,
            format!(
                "format version {} is not {FORMAT_VERSION}; open it with the version of Naxos that wrote it",
                format.format_version
            ),
        ));
    }
    if format.segment_positions == 0 || format.segment_positions > SEGMENT_POSITIONS_MAX {
        return Err(directory_error(
            dir,
            format!("{FORMAT_FILE} has an impossible segment_positions {}", format.segment_positions),
        ));
    }
    if format.segment_positions != options.segment_positions {
        tracing::warn!(
            dir = %dir.display(),
            directory = format.segment_positions,
            options = options.segment_positions,
            "segment_positions is fixed when a directory is created; using the directory's"
        );
    }
    Ok(format.segment_positions)
}

/// Reads `meta.json`, or creates it with `options.node_id` (or a random
/// one) for a directory that holds no segment file yet. One missing next
/// to segment files is refused: the trim mark and sealed epoch it kept are
/// unknown, and serving without them brings trimmed entries back and takes
/// a stale epoch's writes.
pub(super) fn load_meta(dir: &Path, options: &Options, segments: &BTreeSet<u64>) -> Result<MetaFile> {
    let files = options.fs.as_ref();
    match fs::read(files, dir, META_FILE)? {
        Some(bytes) => crate::checked::decode(&bytes).map_err(|e| {
            directory_error(
                dir,
                format!("{META_FILE} is unreadable ({e}); restore it from a backup or start from an empty directory"),
            )
        }),
        None if !segments.is_empty() => Err(directory_error(
            dir,
            format!(
                "{META_FILE} is missing next to {} segment file(s) ({} to {}): the trim mark and the sealed epoch it \
                 kept are unknown, and serving without them would bring trimmed entries back and take a stale \
                 epoch's writes. Restore it from a backup, or move this directory away and start the node empty so \
                 that its replicas re-copy the log",
                segments.len(),
                segments.first().map(|f| log_name(*f)).unwrap_or_default(),
                segments.last().map(|f| log_name(*f)).unwrap_or_default(),
            ),
        )),
        None => {
            let node_id = options.node_id.unwrap_or_else(crate::meta::random_node_id);
            let file = MetaFile { meta: Meta { node_id, ..Meta::default() }, segments: Some(Default::default()) };
            let bytes = crate::checked::encode(&file).expect("MetaFile has only plain fields and always serializes");
            fs::write_atomic(files, dir, META_FILE, &bytes)?;
            Ok(file)
        }
    }
}

/// The manifest to keep: the segment files present that no trim deleted.
/// Refuses a directory missing a segment file that `meta.json` lists (and
/// no trim deleted): it would be served as holes.
pub(super) fn check_manifest(
    dir: &Path,
    loaded: &MetaFile,
    logs: &BTreeSet<u64>,
    segment_positions: u64,
) -> Result<BTreeSet<u64>> {
    let s = segment_positions;
    let live = |first: u64| first.saturating_add(s) > loaded.meta.trim_mark.0;
    if let Some(listed) = &loaded.segments {
        let missing: Vec<String> = listed
            .iter()
            .filter(|f| live(**f) && !logs.contains(f))
            .map(|f| format!("{} (positions {f}..{})", log_name(*f), f + s))
            .collect();
        if !missing.is_empty() {
            return Err(directory_error(
                dir,
                format!(
                    "segment file(s) that {META_FILE} lists are missing: {}; serving without them would \
                     answer their entries as never written. Restore them from a backup, or move this \
                     directory away and start the node empty so that its replicas re-copy the log",
                    missing.join(", ")
                ),
            ));
        }
    }
    Ok(logs.iter().copied().filter(|f| live(*f)).collect())
}

/// Refuses a segment whose data file is shorter than its sound index file
/// says was synced: the records past the cut were durable, so possibly
/// acknowledged, and scanning what is left would serve them as never written.
pub(super) fn check_not_truncated(dir: &Path, first: u64, index: &[u8], file_len: u64) -> Result<()> {
    match super::index::covered_len(index, first) {
        Some(covered) if covered > file_len => Err(directory_error(
            dir,
            format!(
                "{} was truncated: it is {file_len} bytes, but its index file says {covered} bytes were \
                 synced; the records past byte {file_len} are lost. Restore it from a backup, or move this \
                 directory away and start the node empty so that its replicas re-copy the log",
                log_name(first)
            ),
        )),
        _ => Ok(()),
    }
}

/// Refuses a segment whose data file is shorter than its sync header says
/// was synced (see `sync_header`): the records past the cut were durable,
/// so possibly acknowledged.
pub(super) fn check_synced_len(dir: &Path, first: u64, synced: u64, file_len: u64) -> Result<()> {
    if synced <= file_len {
        return Ok(());
    }
    Err(directory_error(
        dir,
        format!(
            "{} was truncated: it is {file_len} bytes, but its header says {synced} bytes were synced; \
             the records past byte {file_len} are lost. Restore it from a backup, or move this directory \
             away and start the node empty so that its replicas re-copy the log",
            log_name(first)
        ),
    ))
}

/// Whether `meta.json`'s bytes hold a manifest (written by a version that
/// also writes `format.json`).
fn lists_segments(meta: &[u8]) -> bool {
    crate::checked::decode::<MetaFile>(meta).is_ok_and(|m| m.segments.is_some())
}
