//! The data dir and its database know each other: `DATA_DIR/store-id` records the id made
//! when the database was created. Start-up refuses a database that is missing or empty
//! next to a data dir that had one (it would start an empty store that no credential
//! fits), and a database that belongs to another data dir, unless told to start fresh.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// File name of the database in the data dir.
pub const DATABASE: &str = "berth.sqlite3";
const STORE_ID: &str = "store-id";

/// What the data dir says before its database is opened.
pub struct DataDir {
    dir: PathBuf,
    recorded_id: Option<String>,
}

impl DataDir {
    /// Checks the data dir before its database is opened (opening creates a missing one).
    /// With `start_fresh`, a missing or empty database is allowed: the old credentials are
    /// moved aside so that new ones are written.
    ///
    /// # Errors
    /// A data dir that had a database, whose database is now missing or empty, unless
    /// `start_fresh`; files that cannot be read or moved.
    pub fn check(dir: &Path, start_fresh: bool) -> anyhow::Result<DataDir> {
        let recorded_id = Self::recorded(dir)?;
        let credentials = dir.join("credentials");
        let database = dir.join(DATABASE);
        let empty = std::fs::metadata(&database).map(|m| m.len() == 0).unwrap_or(true);
        if !empty || (recorded_id.is_none() && !credentials.exists()) {
            return Ok(DataDir { dir: dir.to_owned(), recorded_id });
        }
        let state = if database.exists() { "is empty" } else { "is missing" };
        if !start_fresh {
            anyhow::bail!(
                "{} {state}, but this data dir had a database ({}): starting would serve an empty store \
                 that none of its credentials fit. Restore the database, or start with --start-fresh \
                 to begin a new, empty store (the old credentials are then moved aside)",
                database.display(),
                match &recorded_id {
                    Some(id) => format!("store {id}"),
                    None => "its credentials are still there".into(),
                }
            );
        }
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        if credentials.exists() {
            let aside = dir.join(format!("credentials.before-{stamp}"));
            std::fs::rename(&credentials, &aside)
                .with_context(|| format!("cannot move {} aside", credentials.display()))?;
            tracing::warn!(moved_to = %aside.display(), "--start-fresh: a new, empty store; old credentials moved aside");
        }
        // A WAL left from the old database must not be replayed into the new one.
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(dir.join(format!("{DATABASE}{suffix}")));
        }
        Ok(DataDir { dir: dir.to_owned(), recorded_id: None })
    }

    /// A data dir whose store is a database elsewhere (PostgreSQL): it holds the
    /// credentials, and is paired with that database all the same.
    ///
    /// # Errors
    /// A data dir that cannot be made, or an id file that cannot be read.
    pub fn beside_external(dir: &Path) -> anyhow::Result<DataDir> {
        Ok(DataDir { dir: dir.to_owned(), recorded_id: Self::recorded(dir)? })
    }

    /// Makes the data dir if missing; the store id it records, if any.
    fn recorded(dir: &Path) -> anyhow::Result<Option<String>> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create data dir {}", dir.display()))?;
        let id_path = dir.join(STORE_ID);
        match std::fs::read_to_string(&id_path) {
            Ok(text) => Ok(Some(text.trim().to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", id_path.display())),
        }
    }

    /// The database's path.
    pub fn database(&self) -> PathBuf {
        self.dir.join(DATABASE)
    }

    /// Pairs the opened database (named `database` in errors) with the data dir: records
    /// its id if none was, and refuses a database made for another data dir.
    ///
    /// # Errors
    /// Another store's database, or an id file that cannot be written.
    pub fn pair(&self, store_id: &str, database: &str) -> anyhow::Result<()> {
        match &self.recorded_id {
            Some(recorded) if recorded == store_id => Ok(()),
            Some(recorded) => anyhow::bail!(
                "{database} is store {store_id}, but data dir {} belongs to store {recorded}: the database was \
                 copied from, swapped with or made anew beside another data dir, whose credentials it lacks. \
                 Put the right database back, or use a new data dir for this one",
                self.dir.display()
            ),
            None => {
                let path = self.dir.join(STORE_ID);
                std::fs::write(&path, format!("{store_id}\n"))
                    .with_context(|| format!("cannot write {}", path.display()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_data_dir_records_its_store_and_then_refuses_another() {
        let dir = tempfile::tempdir().unwrap();
        DataDir::check(dir.path(), false).unwrap().pair("aaa", "db").unwrap();
        std::fs::write(dir.path().join(DATABASE), b"not empty").unwrap();
        DataDir::check(dir.path(), false).unwrap().pair("aaa", "db").unwrap();
        let err = DataDir::check(dir.path(), false).unwrap().pair("bbb", "db").unwrap_err().to_string();
        assert!(err.contains("belongs to store aaa"), "{err}");
    }

    #[test]
    fn a_missing_or_empty_database_next_to_credentials_is_refused_unless_starting_fresh() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("credentials")).unwrap();
        let err = DataDir::check(dir.path(), false).err().unwrap().to_string();
        assert!(err.contains("is missing") && err.contains("--start-fresh"), "{err}");
        std::fs::write(dir.path().join(DATABASE), b"").unwrap();
        let err = DataDir::check(dir.path(), false).err().unwrap().to_string();
        assert!(err.contains("is empty"), "{err}");

        let fresh = DataDir::check(dir.path(), true).unwrap();
        assert!(!dir.path().join("credentials").exists(), "moved aside");
        fresh.pair("ccc", "db").unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join(STORE_ID)).unwrap(), "ccc\n");
    }
}
