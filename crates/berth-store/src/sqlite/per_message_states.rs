//! Layout 4 kept a state row per changed message (`message_states`); the current layout
//! keeps one per batch. The store reads the old rows once, on its first start, and
//! converts them.

use berth_core::model::QueueRow;
use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::index::{Index, Persist, Phase, Slot};
use super::messages::persist;

/// Layout 4's state rows (one per changed message), applied in id order alongside the
/// batches. Read whole: they exist only until the first start of this version converts them.
pub(super) struct LegacyStates {
    rows: std::vec::IntoIter<LegacyState>,
    next: Option<LegacyState>,
}

struct LegacyState {
    id: i64,
    dlq: bool,
    leased: bool,
    visible_at: i64,
    delivery_count: u32,
    lease_token: i64,
    deleted: bool,
}

impl LegacyStates {
    pub(super) fn read(conn: &Connection) -> rusqlite::Result<Option<Self>> {
        if !has_message_states(conn)? {
            return Ok(None);
        }
        let rows: Vec<LegacyState> = conn
            .prepare(
                "SELECT id, dlq, leased, visible_at, delivery_count, lease_token, deleted
                 FROM message_states ORDER BY id",
            )?
            .query_map([], |row| {
                Ok(LegacyState {
                    id: row.get(0)?,
                    dlq: row.get(1)?,
                    leased: row.get(2)?,
                    visible_at: row.get(3)?,
                    delivery_count: row.get(4)?,
                    lease_token: row.get(5)?,
                    deleted: row.get(6)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut rows = rows.into_iter();
        Ok(Some(LegacyStates { next: rows.next(), rows }))
    }

    /// Applies the rows of messages `first ..= last` to their slots.
    pub(super) fn apply(&mut self, first: i64, last: i64, slots: &mut [Slot]) {
        while let Some(row) = self.next.take_if(|row| row.id <= last) {
            if row.id >= first {
                let slot = &mut slots[(row.id - first) as usize];
                slot.dlq = row.dlq;
                slot.phase = match (row.deleted, row.leased) {
                    (true, _) => Phase::Gone,
                    (false, true) => Phase::Invisible,
                    (false, false) => Phase::Ready,
                };
                slot.visible_at = row.visible_at;
                slot.delivery_count = row.delivery_count;
                slot.lease_token = row.lease_token;
            }
            self.next = self.rows.next();
        }
    }
}

fn has_message_states(conn: &Connection) -> rusqlite::Result<bool> {
    let sql = "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'message_states')";
    conn.query_row(sql, [], |row| row.get(0))
}

/// Writes layout 4's per-message state rows, already read into `index`, as batch state
/// rows, and drops their table. Run once, on open, by the process serving the messages.
pub(crate) fn convert(conn: &Connection, index: &mut Index) -> rusqlite::Result<()> {
    if !has_message_states(conn)? {
        return Ok(());
    }
    // Rolled back when dropped before the commit.
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    // The batch of a message is the one with the smallest id (its last message) >= its id.
    let changed: Vec<(QueueRow, i64)> = tx
        .prepare(
            "SELECT DISTINCT b.queue, b.id FROM message_states s
             JOIN message_batches b ON b.id = (SELECT MIN(id) FROM message_batches WHERE id >= s.id)",
        )?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    // A batch whose messages are all gone is not in the index: its rows go too.
    let writes: Vec<Persist> = changed
        .into_iter()
        .map(|(queue, last)| match index.batch_slots(queue, last) {
            Some(_) => Persist::States { queue, last },
            None => Persist::DropBatch { queue, last },
        })
        .collect();
    persist(&tx, index, &writes)?;
    tx.execute_batch("DROP TABLE message_states")?;
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::super::index::{Phase, NEVER_LEASED};
    use super::super::messages::load;
    use super::super::schema;
    use super::*;

    /// Layout 4's rows: a put of two messages (ids 1, 2) and a put of one (3); message 2 is
    /// leased (delivery 2, token 42), message 3 is in the DLQ; the put of message 4 is left
    /// over, though its only message was deleted.
    const LAYOUT_4: &str = "
        INSERT INTO message_batches (id, queue, created_at, expire_at, meta, bodies) VALUES (2, 1, 0, 99, '[{\"s\":1},{\"s\":1}]', X'6162');
        INSERT INTO message_batches (id, queue, created_at, expire_at, meta, bodies) VALUES (3, 1, 0, 99, '[{\"s\":1}]', X'63');
        INSERT INTO message_states VALUES (2, 0, 1, 500, 2, 42, 0);
        INSERT INTO message_states VALUES (3, 1, 0, 0, 5, 7, 0);
        INSERT INTO message_batches (id, queue, created_at, expire_at, meta, bodies) VALUES (4, 1, 0, 99, '[{\"s\":1}]', X'64');
        INSERT INTO message_states VALUES (4, 0, 0, 0, 1, 9, 1);
    ";

    #[test]
    fn per_message_state_rows_become_one_row_per_batch_with_the_same_state() {
        let conn = Connection::open_in_memory().unwrap();
        schema::migrate(&conn, true).unwrap();
        conn.execute_batch(schema::MESSAGE_STATES).unwrap();
        conn.execute_batch(LAYOUT_4).unwrap();
        let mut index = load(&conn).unwrap();
        convert(&conn, &mut index).unwrap();
        assert!(!has_message_states(&conn).unwrap(), "the per-message table is gone");
        let rows: Vec<i64> = conn
            .prepare("SELECT id FROM message_batch_states ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, [2, 3]);
        let puts: i64 = conn.query_row("SELECT COUNT(*) FROM message_batches", [], |r| r.get(0)).unwrap();
        assert_eq!(puts, 2, "the put whose messages are all gone is dropped, not brought back");
        let reloaded = load(&conn).unwrap();
        let state = |index: &Index, last: i64| -> Vec<(bool, Phase, i64, u32, i64)> {
            index
                .batch_slots(1, last)
                .unwrap()
                .iter()
                .map(|s| (s.dlq, s.phase, s.visible_at, s.delivery_count, s.lease_token))
                .collect()
        };
        assert_eq!(
            state(&reloaded, 2),
            [(false, Phase::Ready, 0, 0, NEVER_LEASED), (false, Phase::Invisible, 500, 2, 42)]
        );
        assert_eq!(state(&reloaded, 3), [(true, Phase::Ready, 0, 5, 7)]);
        assert_eq!(state(&reloaded, 2), state(&index, 2));
    }
}
