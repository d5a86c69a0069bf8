//! Tenancies, users and the receipt secret.

use berth_core::error::StoreError;
use berth_core::model::{Tenancy, User};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::sql;

pub(crate) async fn receipt_secret(c: &impl GenericClient) -> Result<Vec<u8>, StoreError> {
    let row = sql::query_one(c, "SELECT value FROM berth_meta WHERE key = 'receipt_secret'", &[]).await?;
    Ok(row.get(0))
}

pub(crate) async fn ensure_tenancy(c: &impl GenericClient, name: &str, new_id: &str) -> Result<Tenancy, StoreError> {
    sql::execute(c, "INSERT INTO tenancies (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING", &[&new_id, &name])
        .await?;
    tenancy_by_name(c, name).await?.ok_or_else(|| StoreError::Backend(format!("tenancy {name} vanished")))
}

pub(crate) async fn tenancy_by_name(c: &impl GenericClient, name: &str) -> Result<Option<Tenancy>, StoreError> {
    let row = sql::query_opt(c, "SELECT id, name FROM tenancies WHERE name = $1", &[&name]).await?;
    Ok(row.map(|row| Tenancy { id: row.get(0), name: row.get(1) }))
}

pub(crate) async fn insert_user(c: &impl GenericClient, user: &User) -> Result<bool, StoreError> {
    let inserted = sql::execute(
        c,
        "INSERT INTO users (id, tenancy_id, name, fingerprint, public_key, stomp_passcode_sha256)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenancy_id, name) DO NOTHING",
        &[&user.id, &user.tenancy_id, &user.name, &user.fingerprint, &user.public_key_der, &user.stomp_passcode_sha256],
    )
    .await?;
    Ok(inserted == 1)
}

const USER_COLUMNS: &str = "u.id, u.tenancy_id, u.name, u.fingerprint, u.public_key, u.stomp_passcode_sha256";

fn user(row: &Row) -> User {
    User {
        id: row.get(0),
        tenancy_id: row.get(1),
        name: row.get(2),
        fingerprint: row.get(3),
        public_key_der: row.get(4),
        stomp_passcode_sha256: row.get(5),
    }
}

pub(crate) async fn user_by_key(
    c: &impl GenericClient,
    tenancy_id: &str,
    user_id: &str,
    fingerprint: &str,
) -> Result<Option<User>, StoreError> {
    let statement =
        format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1 AND u.tenancy_id = $2 AND u.fingerprint = $3");
    let row = sql::query_opt(c, &statement, &[&user_id, &tenancy_id, &fingerprint]).await?;
    Ok(row.as_ref().map(user))
}

pub(crate) async fn user_by_name(
    c: &impl GenericClient,
    tenancy_name: &str,
    user_name: &str,
) -> Result<Option<User>, StoreError> {
    let statement = format!(
        "SELECT {USER_COLUMNS} FROM users u JOIN tenancies t ON t.id = u.tenancy_id WHERE t.name = $1 AND u.name = $2"
    );
    let row = sql::query_opt(c, &statement, &[&tenancy_name, &user_name]).await?;
    Ok(row.as_ref().map(user))
}

pub(crate) async fn tenancies(c: &impl GenericClient) -> Result<Vec<Tenancy>, StoreError> {
    let rows = sql::query(c, "SELECT id, name FROM tenancies ORDER BY name", &[]).await?;
    Ok(rows.iter().map(|row| Tenancy { id: row.get(0), name: row.get(1) }).collect())
}

pub(crate) async fn users(c: &impl GenericClient) -> Result<Vec<User>, StoreError> {
    let statement = format!("SELECT {USER_COLUMNS} FROM users u ORDER BY u.tenancy_id, u.name");
    Ok(sql::query(c, &statement, &[]).await?.iter().map(user).collect())
}
