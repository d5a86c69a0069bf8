//! Tenancies, users, the receipt secret and the store's id.

use berth_core::model::{Tenancy, User};
use rusqlite::{params, Connection, OptionalExtension, Row};

/// Creates the receipt secret on first open; it lives in the database so every
/// process using this store signs receipts alike.
pub(crate) fn ensure_receipt_secret(conn: &Connection) -> rusqlite::Result<()> {
    let mut secret = [0u8; 32];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut secret[..]);
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('receipt_secret', ?1)", params![&secret[..]])?;
    Ok(())
}

/// Creates the store's id on first open and returns it: a random name for this database,
/// which the data dir records so that neither is paired with another by mistake.
pub(crate) fn ensure_store_id(conn: &Connection) -> rusqlite::Result<String> {
    let id = format!("{:032x}", rand::Rng::gen::<u128>(&mut rand::rngs::OsRng));
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', ?1)", params![id])?;
    conn.query_row("SELECT value FROM meta WHERE key = 'store_id'", [], |row| row.get(0))
}

pub(crate) fn receipt_secret(conn: &Connection) -> rusqlite::Result<Vec<u8>> {
    conn.query_row("SELECT value FROM meta WHERE key = 'receipt_secret'", [], |row| row.get(0))
}

pub(crate) fn ensure_tenancy(conn: &Connection, name: &str, new_id: &str) -> rusqlite::Result<Tenancy> {
    conn.execute("INSERT OR IGNORE INTO tenancies (id, name) VALUES (?1, ?2)", params![new_id, name])?;
    tenancy_by_name(conn, name).map(|t| t.expect("just inserted"))
}

pub(crate) fn tenancy_by_name(conn: &Connection, name: &str) -> rusqlite::Result<Option<Tenancy>> {
    conn.prepare_cached("SELECT id, name FROM tenancies WHERE name = ?1")?
        .query_row(params![name], |row| Ok(Tenancy { id: row.get(0)?, name: row.get(1)? }))
        .optional()
}

pub(crate) fn insert_user(conn: &Connection, user: &User) -> rusqlite::Result<bool> {
    let inserted = conn.execute(
        "INSERT INTO users (id, tenancy_id, name, fingerprint, public_key, stomp_passcode_sha256)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (tenancy_id, name) DO NOTHING",
        params![user.id, user.tenancy_id, user.name, user.fingerprint, user.public_key_der, user.stomp_passcode_sha256],
    )?;
    Ok(inserted == 1)
}

const USER_COLUMNS: &str = "u.id, u.tenancy_id, u.name, u.fingerprint, u.public_key, u.stomp_passcode_sha256";

fn user(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        tenancy_id: row.get(1)?,
        name: row.get(2)?,
        fingerprint: row.get(3)?,
        public_key_der: row.get(4)?,
        stomp_passcode_sha256: row.get(5)?,
    })
}

pub(crate) fn user_by_key(
    conn: &Connection,
    tenancy_id: &str,
    user_id: &str,
    fingerprint: &str,
) -> rusqlite::Result<Option<User>> {
    let sql =
        format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?1 AND u.tenancy_id = ?2 AND u.fingerprint = ?3");
    conn.prepare_cached(&sql)?.query_row(params![user_id, tenancy_id, fingerprint], user).optional()
}

pub(crate) fn user_by_name(conn: &Connection, tenancy_name: &str, user_name: &str) -> rusqlite::Result<Option<User>> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM users u JOIN tenancies t ON t.id = u.tenancy_id WHERE t.name = ?1 AND u.name = ?2"
    );
    conn.prepare_cached(&sql)?.query_row(params![tenancy_name, user_name], user).optional()
}

pub(crate) fn tenancies(conn: &Connection) -> rusqlite::Result<Vec<Tenancy>> {
    let mut statement = conn.prepare_cached("SELECT id, name FROM tenancies ORDER BY name")?;
    let rows = statement.query_map([], |row| Ok(Tenancy { id: row.get(0)?, name: row.get(1)? }))?;
    rows.collect()
}

pub(crate) fn users(conn: &Connection) -> rusqlite::Result<Vec<User>> {
    let mut statement =
        conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users u ORDER BY u.tenancy_id, u.name"))?;
    let rows = statement.query_map([], user)?;
    rows.collect()
}
