//! Where a lease starts its scan of a channel's ready messages.
//!
//! Every leased or deleted message leaves a dead entry at the head of the ready index until
//! vacuum removes it, and PostgreSQL vacuums a table at most once a minute by default: a
//! busy queue's scans from the start walk hundreds of thousands of them. So each node
//! remembers, per queue, side and channel, an id below which the channel had nothing ready
//! that it could take when it last looked (its "floor"), and scans from there.
//!
//! A floor is a hint, never a promise: a lease that finds fewer messages than it asked for
//! above the floors scans again from the start, so a message below a floor is only served
//! after newer ones while there are enough of those to fill every request. Messages fall
//! below floors when they become ready again or commit late, and the floors follow:
//! - a put lowers the floors of its channels to its first id (on every node, by the feed);
//! - a release, dead-lettering or redrive (`Change::Changed`) forgets the queue's floors;
//! - missed changes forget every floor, as does [`RESCAN_AFTER`] passing (a lease another
//!   node rolled back tells nobody).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_core::model::QueueRow;
use berth_core::store::Change;

/// How long the channels and floors of a full scan are trusted.
pub(crate) const RESCAN_AFTER: Duration = Duration::from_secs(1);
/// Puts remembered per queue for scans under way; a scan older than them records nothing.
const RECENT_PUTS: usize = 128;

/// The floors this node knows.
#[derive(Default)]
pub(crate) struct Floors {
    // std Mutex: held only to read or write the map, never across an await.
    queues: Mutex<HashMap<QueueRow, QueueFloors>>,
}

#[derive(Default)]
struct QueueFloors {
    /// Counts the puts and forgets of the queue: a scan records against the count it began at.
    generation: u64,
    /// The generation of the last forget: scans begun before it record nothing.
    forgotten: u64,
    /// The latest puts: (generation, channel, first id).
    puts: VecDeque<(u64, String, i64)>,
    /// The generation of the latest put no longer remembered.
    dropped: u64,
    /// Per side (`true`: the DLQ).
    sides: HashMap<bool, Side>,
}

struct Side {
    /// When a full scan of every channel last listed the side's channels.
    listed_at: Option<Instant>,
    /// Channels with ready messages then, or scanned alone, or put to since.
    channels: HashMap<String, Floor>,
}

struct Floor {
    id: i64,
    /// When a scan from the start last looked at the channel.
    scanned_at: Instant,
}

/// Where a lease scans: each channel from its floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scan {
    pub(crate) channels: Vec<String>,
    pub(crate) floors: Vec<i64>,
    generation: u64,
}

/// What a lease's scan took, to record once its transaction committed.
#[derive(Debug)]
pub(crate) struct Pick {
    pub(crate) scan: Scan,
    /// Scanned every channel from the start: it vouches for the list of the side's channels.
    pub(crate) listed: bool,
    /// Found fewer candidates than it asked for: it read every channel of the scan to its end.
    pub(crate) exhausted: bool,
    /// Each channel's highest id leased.
    pub(crate) taken: HashMap<String, i64>,
    /// Locked candidates not taken (past the byte limit, or of a pick done again from the
    /// start): ready again at the commit, maybe below floors other leases set meanwhile.
    pub(crate) gave_back: bool,
}

impl Scan {
    /// Whether any floor skips anything (else this is already a scan from the start).
    pub(crate) fn skips(&self) -> bool {
        self.floors.iter().any(|&floor| floor > 0)
    }

    /// Scans these channels (from the start, for a full scan).
    pub(crate) fn of(mut self, channels: Vec<String>) -> Scan {
        self.floors = vec![0; channels.len()];
        self.channels = channels;
        self
    }
}

impl Floors {
    /// The scan for a lease of the queue's side (one channel, or all), or `None` when the
    /// channels are not known well enough: a full scan is due.
    pub(crate) fn scan(&self, queue: QueueRow, dlq: bool, channel: Option<&str>, now: Instant) -> Option<Scan> {
        let fresh = |at: Instant| now.duration_since(at) < RESCAN_AFTER;
        let map = self.lock();
        let floors = map.get(&queue)?;
        let side = floors.sides.get(&dlq)?;
        let (channels, ids): (Vec<String>, Vec<i64>) = match channel {
            Some(channel) => {
                let floor = side.channels.get(channel).filter(|floor| fresh(floor.scanned_at))?;
                (vec![channel.to_owned()], vec![floor.id])
            }
            // Channels no full scan vouched for lately are read from the start.
            None if side.listed_at.is_some_and(fresh) => side
                .channels
                .iter()
                .map(|(channel, floor)| (channel.clone(), if fresh(floor.scanned_at) { floor.id } else { 0 }))
                .unzip(),
            None => return None,
        };
        Some(Scan { channels, floors: ids, generation: floors.generation })
    }

    /// A scan from the start, beginning now (before the statements that list its channels).
    pub(crate) fn full_scan(&self, queue: QueueRow) -> Scan {
        // From now on the queue's puts are remembered for this scan.
        let generation = self.lock().entry(queue).or_default().generation;
        Scan { channels: Vec::new(), floors: Vec::new(), generation }
    }

    /// Records what a committed lease of the queue's side took. A channel the scan read from
    /// the start vouches for its floor if the scan took from it or ran out of candidates:
    /// that floor replaces the known one, lower or not.
    pub(crate) fn record(&self, queue: QueueRow, dlq: bool, pick: &Pick, now: Instant) {
        let Pick { scan, listed, exhausted, taken, .. } = pick;
        let mut map = self.lock();
        let Some(floors) = map.get_mut(&queue) else { return };
        // Main-side puts never touch the DLQ side.
        if floors.forgotten > scan.generation || (!dlq && floors.dropped > scan.generation) {
            return;
        }
        // What the scan saw: a floor, and whether the scan vouches for it.
        let mut seen: HashMap<String, (i64, bool)> = scan
            .channels
            .iter()
            .zip(&scan.floors)
            .map(|(channel, &floor)| {
                let vouched = floor == 0 && (*exhausted || taken.contains_key(channel));
                (channel.clone(), (taken.get(channel).map_or(floor, |&id| id + 1), vouched))
            })
            .collect();
        // Lowered by the puts it may not have seen.
        if !dlq {
            for (_, channel, first_id) in floors.puts.iter().filter(|(generation, _, _)| *generation > scan.generation)
            {
                match seen.get_mut(channel) {
                    Some((floor, _)) => *floor = (*floor).min(*first_id),
                    // A channel new since the list was made.
                    None if *listed => drop(seen.insert(channel.clone(), (*first_id, true))),
                    None => {}
                }
            }
        }
        let side = match floors.sides.entry(dlq) {
            Entry::Occupied(side) => side.into_mut(),
            Entry::Vacant(side) if !scan.skips() => side.insert(Side { listed_at: None, channels: HashMap::new() }),
            Entry::Vacant(_) => return,
        };
        let mut lowered = false;
        for (channel, (id, vouched)) in seen {
            match side.channels.entry(channel) {
                Entry::Occupied(floor) if vouched => {
                    let floor = floor.into_mut();
                    lowered |= id < floor.id;
                    *floor = Floor { id, scanned_at: now };
                }
                // Another scan may have recorded a higher floor meanwhile, as truly.
                Entry::Occupied(floor) => floor.into_mut().id = floor.get().id.max(id),
                // A floor of 0 needs no one to vouch for it.
                Entry::Vacant(floor) if vouched || id == 0 => drop(floor.insert(Floor { id, scanned_at: now })),
                Entry::Vacant(_) => {}
            }
        }
        if *listed {
            side.listed_at = Some(now);
        }
        if lowered {
            // A floor was too high: scans under way may have trusted it.
            floors.forget_scans_under_way();
        }
    }

    /// A put committed messages with ids from `first_id` in these channels of the main side.
    pub(crate) fn put(&self, queue: QueueRow, first_id: i64, channels: &[&str]) {
        let mut map = self.lock();
        let Some(floors) = map.get_mut(&queue) else { return };
        floors.generation += 1;
        let generation = floors.generation;
        for channel in channels {
            if floors.puts.len() == RECENT_PUTS {
                if let Some((dropped, _, _)) = floors.puts.pop_front() {
                    floors.dropped = dropped;
                }
            }
            floors.puts.push_back((generation, (*channel).to_owned(), first_id));
            let Some(side) = floors.sides.get_mut(&false) else { continue };
            match side.channels.get_mut(*channel) {
                Some(floor) => floor.id = floor.id.min(first_id),
                // The channel had nothing ready when the list was made: it starts here.
                None => {
                    if let Some(listed_at) = side.listed_at {
                        side.channels.insert((*channel).to_owned(), Floor { id: first_id, scanned_at: listed_at });
                    }
                }
            }
        }
    }

    /// Follows a change of the feed (this node's or another's).
    pub(crate) fn follow(&self, change: &Change) {
        match change {
            // Puts come with their ids by `put`.
            Change::Ready { .. } => {}
            Change::Changed { queue } => {
                if let Some(floors) = self.lock().get_mut(queue) {
                    floors.forget();
                }
            }
            Change::Missed => self.lock().values_mut().for_each(QueueFloors::forget),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<QueueRow, QueueFloors>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl QueueFloors {
    /// Messages of the queue may have become ready below its floors.
    fn forget(&mut self) {
        self.forget_scans_under_way();
        self.sides.clear();
    }

    /// Scans begun until now record nothing.
    fn forget_scans_under_way(&mut self) {
        self.generation += 1;
        self.forgotten = self.generation;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: QueueRow = 7;

    fn pick(scan: Scan, listed: bool, exhausted: bool, took: &[(&str, i64)]) -> Pick {
        let taken = took.iter().map(|(c, id)| ((*c).to_owned(), *id)).collect();
        Pick { scan, listed, exhausted, taken, gave_back: false }
    }

    /// A full scan of every channel that took these highest ids.
    fn listed(floors: &Floors, channels: &[&str], took: &[(&str, i64)], now: Instant) {
        let scan = floors.full_scan(Q).of(channels.iter().map(|c| (*c).to_owned()).collect());
        floors.record(Q, false, &pick(scan, true, true, took), now);
    }

    fn floor_of(floors: &Floors, channel: &str, now: Instant) -> Option<i64> {
        floors.scan(Q, false, Some(channel), now).map(|scan| scan.floors[0])
    }

    #[test]
    fn a_full_scan_sets_floors_past_what_it_took() {
        let floors = Floors::default();
        let now = Instant::now();
        assert_eq!(floors.scan(Q, false, None, now), None);
        listed(&floors, &["", "a"], &[("", 20)], now);
        assert_eq!(floor_of(&floors, "", now), Some(21));
        assert_eq!(floor_of(&floors, "a", now), Some(0));
        assert_eq!(floor_of(&floors, "b", now), None);
        assert_eq!(floors.scan(Q, false, None, now).map(|scan| scan.channels.len()), Some(2));
        assert_eq!(floors.scan(Q, true, None, now), None, "the DLQ side is apart");
    }

    #[test]
    fn one_channel_scanned_alone_does_not_list_the_others() {
        let floors = Floors::default();
        let now = Instant::now();
        let scan = floors.full_scan(Q).of(vec!["a".into()]);
        floors.record(Q, false, &pick(scan, false, false, &[("a", 9)]), now);
        assert_eq!(floor_of(&floors, "a", now), Some(10));
        assert_eq!(floors.scan(Q, false, None, now), None);
    }

    #[test]
    fn floors_are_trusted_for_a_while_only() {
        let floors = Floors::default();
        let now = Instant::now();
        listed(&floors, &[""], &[("", 20)], now);
        assert!(floors.scan(Q, false, None, now + RESCAN_AFTER / 2).is_some());
        assert_eq!(floors.scan(Q, false, None, now + RESCAN_AFTER), None);
        assert_eq!(floor_of(&floors, "", now + RESCAN_AFTER), None);
    }

    #[test]
    fn a_put_lowers_its_channels_and_adds_new_ones() {
        let floors = Floors::default();
        let now = Instant::now();
        listed(&floors, &["", "a"], &[("", 50), ("a", 60)], now);
        floors.put(Q, 40, &["a", "b"]);
        assert_eq!(floor_of(&floors, "", now), Some(51));
        assert_eq!(floor_of(&floors, "a", now), Some(40));
        assert_eq!(floor_of(&floors, "b", now), Some(40));
    }

    #[test]
    fn a_scan_older_than_a_put_cannot_raise_floors_past_it() {
        let floors = Floors::default();
        let now = Instant::now();
        listed(&floors, &[""], &[("", 10)], now);
        let scan = floors.scan(Q, false, None, now).unwrap();
        // The put committed after the scan's snapshot: the scan did not see id 5.
        floors.put(Q, 5, &[""]);
        floors.record(Q, false, &pick(scan, false, false, &[("", 30)]), now);
        assert_eq!(floor_of(&floors, "", now), Some(5));
        // A scan begun after the put raises it again.
        let scan = floors.scan(Q, false, None, now).unwrap();
        floors.record(Q, false, &pick(scan, false, false, &[("", 30)]), now);
        assert_eq!(floor_of(&floors, "", now), Some(31));
    }

    #[test]
    fn a_first_full_scan_keeps_the_puts_made_meanwhile() {
        let floors = Floors::default();
        let now = Instant::now();
        let scan = floors.full_scan(Q).of(vec!["".into()]);
        floors.put(Q, 3, &["", "new"]);
        floors.record(Q, false, &pick(scan, true, true, &[("", 30)]), now);
        assert_eq!(floor_of(&floors, "", now), Some(3));
        assert_eq!(floor_of(&floors, "new", now), Some(3));
    }

    #[test]
    fn a_scan_older_than_what_is_remembered_records_nothing() {
        let floors = Floors::default();
        let now = Instant::now();
        listed(&floors, &[""], &[("", 10)], now);
        let scan = floors.scan(Q, false, None, now).unwrap();
        for id in 0..=RECENT_PUTS as i64 {
            floors.put(Q, 100 + id, &["x"]);
        }
        floors.record(Q, false, &pick(scan, false, false, &[("", 30)]), now);
        assert_eq!(floor_of(&floors, "", now), Some(11));
    }

    #[test]
    fn releases_and_missed_changes_forget_floors() {
        let floors = Floors::default();
        let now = Instant::now();
        listed(&floors, &[""], &[("", 10)], now);
        floors.follow(&Change::Ready { queue: Q, count: 1, channels: vec![] });
        assert_eq!(floor_of(&floors, "", now), Some(11));
        let under_way = floors.scan(Q, false, None, now).unwrap();
        floors.follow(&Change::Changed { queue: Q });
        assert_eq!(floor_of(&floors, "", now), None);
        floors.record(Q, false, &pick(under_way, false, false, &[("", 30)]), now);
        assert_eq!(floor_of(&floors, "", now), None, "a scan begun before the release records nothing");
        listed(&floors, &[""], &[("", 10)], now);
        floors.follow(&Change::Missed);
        assert_eq!(floor_of(&floors, "", now), None);
    }

    #[test]
    fn a_scan_from_the_start_lowers_a_floor_that_was_too_high() {
        let floors = Floors::default();
        let now = Instant::now();
        listed(&floors, &[""], &[("", 99)], now);
        let under_way = floors.scan(Q, false, None, now).unwrap();
        // Ids 50.. were ready again unannounced (a lease rolled back on another node).
        let scan = floors.full_scan(Q).of(vec!["".into()]);
        floors.record(Q, false, &pick(scan, true, false, &[("", 59)]), now);
        assert_eq!(floor_of(&floors, "", now), Some(60));
        floors.record(Q, false, &pick(under_way, false, false, &[("", 119)]), now);
        assert_eq!(floor_of(&floors, "", now), Some(60), "a scan from the old floor records nothing");
    }

    #[test]
    fn every_listed_channel_is_scanned_and_those_not_read_to_the_end_from_the_start() {
        let floors = Floors::default();
        let now = Instant::now();
        listed(&floors, &["", "a"], &[("", 10), ("a", 10)], now);
        // Later a full scan fills its limit from "" alone: "a" was not read, nor vouched for.
        let later = now + RESCAN_AFTER / 2;
        let scan = floors.full_scan(Q).of(vec!["".into(), "a".into()]);
        floors.record(Q, false, &pick(scan, true, false, &[("", 30)]), later);
        let scan = floors.scan(Q, false, None, now + RESCAN_AFTER).unwrap();
        let of = |c: &str| scan.floors[scan.channels.iter().position(|x| x == c).unwrap()];
        assert_eq!((of(""), of("a")), (31, 0));
    }

    #[test]
    fn concurrent_scans_keep_the_higher_floor() {
        let floors = Floors::default();
        let now = Instant::now();
        listed(&floors, &[""], &[("", 5)], now);
        let first = floors.scan(Q, false, None, now).unwrap();
        let second = floors.scan(Q, false, None, now).unwrap();
        floors.record(Q, false, &pick(second, false, false, &[("", 40)]), now);
        floors.record(Q, false, &pick(first, false, false, &[("", 20)]), now);
        assert_eq!(floor_of(&floors, "", now), Some(41));
    }
}
