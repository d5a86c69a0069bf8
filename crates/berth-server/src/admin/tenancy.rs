//! `berth tenancy list` and `berth user list`, read from the store (no REST API has them).

use std::path::Path;

use anyhow::bail;
use serde_json::json;

use berth_core::model::{Tenancy, User};

use super::table;
use crate::app;
use crate::config::{StoreArgs, StoreChoice};

/// The store's tenancies and users (next to a running server too: the store is only read).
async fn read(data_dir: &Path, store: StoreArgs) -> anyhow::Result<(Vec<Tenancy>, Vec<User>)> {
    let choice = store.chosen()?;
    // Opening would make a new store in a mistyped data dir, and list nothing.
    let database = data_dir.join(crate::data_dir::DATABASE);
    if matches!(choice, StoreChoice::Sqlite) && !database.is_file() {
        bail!("no Berth database in {} (give the server's --data-dir)", data_dir.display());
    }
    let store = app::open_store(data_dir, &choice, false, false, 0).await?.store;
    let read = (store.tenancies().await?, store.users().await?);
    store.close().await?;
    Ok(read)
}

/// Prints the store's tenancies.
///
/// # Errors
/// The store cannot be opened or read.
pub async fn list_tenancies(data_dir: &Path, store: StoreArgs, as_json: bool) -> anyhow::Result<()> {
    let (tenancies, _) = read(data_dir, store).await?;
    if as_json {
        let items: Vec<_> = tenancies.iter().map(|t| json!({"id": t.id, "name": t.name})).collect();
        println!("{}", serde_json::to_string_pretty(&json!({"items": items}))?);
    } else {
        let rows: Vec<Vec<String>> = tenancies.into_iter().map(|t| vec![t.name, t.id]).collect();
        table::print(&["NAME", "ID"], &rows);
    }
    Ok(())
}

/// Prints the users of the store's tenancies, or of one.
///
/// # Errors
/// The store cannot be opened or read, or there is no such tenancy.
pub async fn list_users(data_dir: &Path, store: StoreArgs, tenancy: Option<&str>, as_json: bool) -> anyhow::Result<()> {
    let (tenancies, users) = read(data_dir, store).await?;
    if let Some(name) = tenancy {
        if !tenancies.iter().any(|t| t.name == name) {
            bail!("no tenancy named {name:?}");
        }
    }
    let name_of = |id: &str| tenancies.iter().find(|t| t.id == id).map_or("", |t| t.name.as_str()).to_owned();
    let listed: Vec<_> =
        users.iter().filter(|u| tenancy.is_none_or(|wanted| name_of(&u.tenancy_id) == wanted)).collect();
    if as_json {
        let items: Vec<_> = listed
            .iter()
            .map(|u| {
                json!({"id": u.id, "name": u.name, "tenancyId": u.tenancy_id, "tenancy": name_of(&u.tenancy_id),
                       "fingerprint": u.fingerprint})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json!({"items": items}))?);
    } else {
        let rows: Vec<Vec<String>> = listed
            .iter()
            .map(|u| vec![name_of(&u.tenancy_id), u.name.clone(), u.id.clone(), u.fingerprint.clone()])
            .collect();
        table::print(&["TENANCY", "USER", "ID", "FINGERPRINT"], &rows);
    }
    Ok(())
}
