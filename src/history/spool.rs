//! The history spool: an append-only file of JSON lines where history rows wait, fsynced,
//! while the database cannot take them. Rows are replayed into the database once it is back
//! (the unique `acquisition_id` makes a replay of an already stored row add nothing), and at
//! start after a crash. A line that cannot be read (a torn last write) is skipped and logged,
//! never fatal.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::db::models::NewHistory;
use crate::error::{Error, Result};

#[derive(Clone)]
pub struct Spool {
    path: PathBuf,
}

impl Spool {
    pub fn new(path: impl Into<PathBuf>) -> Spool {
        Spool { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends rows and waits until they are on disk. After a torn last write (a crash),
    /// the new rows start on a line of their own.
    pub fn append(&self, rows: &[NewHistory]) -> Result<()> {
        let mut text = String::new();
        let torn = last_byte(&self.path).is_some_and(|b| b != b'\n');
        if torn {
            text.push('\n');
        }
        for row in rows {
            let line = serde_json::to_string(row).map_err(|e| Error::Internal(e.to_string()))?;
            text.push_str(&line);
            text.push('\n');
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::io(&self.path, e))?;
        file.write_all(text.as_bytes())
            .and_then(|_| file.sync_data())
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Every readable row in the spool (none when there is no spool). Lines are read as bytes,
    /// so one torn in the middle of a character costs only that line.
    pub fn load(&self) -> Result<Vec<NewHistory>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.path, e)),
        };
        let mut rows = Vec::new();
        for (number, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice(line) {
                Ok(row) => rows.push(row),
                Err(e) => log::warn!(
                    "event=spool_line_unreadable path={} line={} error=\"{e}\"",
                    self.path.display(),
                    number + 1
                ),
            }
        }
        Ok(rows)
    }

    pub fn is_empty(&self) -> bool {
        std::fs::metadata(&self.path).map_or(true, |m| m.len() == 0)
    }

    /// Empties the spool once its rows are in the database.
    pub fn clear(&self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&self.path, e)),
        }
    }
}

/// Where history rows the database refused for their content are kept, next to the spool:
/// `{spool_file}.dead-letter`. One JSON line per row: `{"error": …, "row": {…}}`.
pub fn dead_letter_path(spool: &Path) -> PathBuf {
    let mut name = spool.as_os_str().to_owned();
    name.push(".dead-letter");
    PathBuf::from(name)
}

/// The dead-letter file: rows that no retry can write (the database refuses their content),
/// kept, fsynced, for an operator to look at, instead of blocking the spool for ever.
#[derive(Clone)]
pub struct DeadLetter {
    path: PathBuf,
}

impl DeadLetter {
    pub fn new(path: impl Into<PathBuf>) -> DeadLetter {
        DeadLetter { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn append(&self, row: &NewHistory, error: &str) -> Result<()> {
        let line = serde_json::to_string(&serde_json::json!({"error": error, "row": row}))
            .map_err(|e| Error::Internal(e.to_string()))?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::io(&self.path, e))?;
        file.write_all(format!("{line}\n").as_bytes())
            .and_then(|_| file.sync_data())
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Rows in the file (0 when there is none).
    pub fn rows(&self) -> usize {
        std::fs::read(&self.path).map_or(0, |bytes| {
            bytes
                .split(|b| *b == b'\n')
                .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
                .count()
        })
    }
}

/// The last byte of a file, if it has one.
fn last_byte(path: &Path) -> Option<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    file.seek(SeekFrom::End(-1)).ok()?;
    let mut byte = [0u8; 1];
    file.read_exact(&mut byte).ok()?;
    Some(byte[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str) -> NewHistory {
        let now = chrono::Utc::now().naive_utc();
        NewHistory {
            total_duration: 1.5,
            login_duration: Some(1.2),
            ..NewHistory::login(id, "court_zxfw", ("alice", 1), now)
        }
    }

    #[test]
    fn append_load_clear_and_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path().join("h.spool"));
        assert!(spool.is_empty());
        assert!(spool.load().unwrap().is_empty());
        spool.append(&[row("a"), row("b")]).unwrap();
        spool.append(&[row("c")]).unwrap();
        // A crash in the middle of a write leaves a torn last line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(spool.path())
            .unwrap()
            .write_all(b"{\"acquisition_id\":\"d\",\"si")
            .unwrap();
        let ids: Vec<String> = spool
            .load()
            .unwrap()
            .into_iter()
            .map(|r| r.acquisition_id)
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
        spool.clear().unwrap();
        assert!(spool.is_empty());
    }
}
