//! Slows password guessing: after a few failed logins from one address, its login attempts
//! take turns, one per delay that doubles with every further failure (up to a cap), so
//! opening more connections does not buy more guesses. A success clears the address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Failures an address may have before its attempts wait.
const FREE_FAILURES: u32 = 3;
/// The wait after the first failure past the free ones.
const FIRST_DELAY: Duration = Duration::from_millis(250);
/// The longest wait between two attempts of one address.
const MAX_DELAY: Duration = Duration::from_secs(5);
/// An address without a failure for this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Most addresses remembered; past it, the ones idle longest are forgotten first.
const MAX_PEERS: usize = 10_000;

struct Peer {
    failures: u32,
    last_failure: Instant,
    /// When the next attempt of this address may be checked.
    next_turn: Instant,
}

/// Failed logins per peer address.
#[derive(Default)]
pub struct LoginThrottle {
    // std Mutex: held for a map lookup, never across an await.
    peers: Mutex<HashMap<IpAddr, Peer>>,
}

impl LoginThrottle {
    /// Waits for this address's turn to have a login checked.
    pub async fn wait_turn(&self, ip: IpAddr) {
        let turn = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            match peers.get_mut(&ip) {
                Some(peer) if peer.last_failure + FORGET_AFTER > now => {
                    let Some(delay) = delay_after(peer.failures) else { return };
                    // Each attempt books the slot after the last one booked.
                    let turn = peer.next_turn.max(now);
                    peer.next_turn = turn + delay;
                    turn
                }
                _ => return,
            }
        };
        tokio::time::sleep_until(turn).await;
    }

    /// Counts a failed login; returns how many this address has had in a row.
    pub fn failed(&self, ip: IpAddr) -> u32 {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if peers.len() >= MAX_PEERS && !peers.contains_key(&ip) {
            peers.retain(|_, peer| peer.last_failure + FORGET_AFTER > now);
            if peers.len() >= MAX_PEERS {
                let oldest = peers.iter().min_by_key(|(_, peer)| peer.last_failure).map(|(ip, _)| *ip);
                peers.remove(&oldest.expect("the map is full"));
            }
        }
        let peer = peers.entry(ip).or_insert(Peer { failures: 0, last_failure: now, next_turn: now });
        if peer.last_failure + FORGET_AFTER <= now {
            peer.failures = 0;
        }
        peer.failures += 1;
        peer.last_failure = now;
        peer.failures
    }

    /// Forgets an address's failures after it logged in.
    pub fn succeeded(&self, ip: IpAddr) {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).remove(&ip);
    }
}

/// The wait between attempts after `failures` failures in a row; `None` while free.
fn delay_after(failures: u32) -> Option<Duration> {
    let past_free = failures.checked_sub(FREE_FAILURES).filter(|n| *n > 0)?;
    Some(FIRST_DELAY.saturating_mul(1 << (past_free - 1).min(16)).min(MAX_DELAY))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn the_delay_starts_after_the_free_failures_doubles_and_is_capped() {
        assert_eq!(delay_after(0), None);
        assert_eq!(delay_after(FREE_FAILURES), None);
        assert_eq!(delay_after(FREE_FAILURES + 1), Some(FIRST_DELAY));
        assert_eq!(delay_after(FREE_FAILURES + 2), Some(FIRST_DELAY * 2));
        assert_eq!(delay_after(FREE_FAILURES + 40), Some(MAX_DELAY));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_attempts_of_a_failing_address_take_turns() {
        let throttle = std::sync::Arc::new(LoginThrottle::default());
        for _ in 0..FREE_FAILURES + 40 {
            throttle.failed(PEER);
        }
        let start = Instant::now();
        let attempts: Vec<_> = (0..4)
            .map(|_| {
                let throttle = throttle.clone();
                tokio::spawn(async move {
                    throttle.wait_turn(PEER).await;
                    Instant::now()
                })
            })
            .collect();
        let mut waited = Vec::new();
        for attempt in attempts {
            waited.push(attempt.await.unwrap() - start);
        }
        waited.sort();
        assert_eq!(waited, [Duration::ZERO, MAX_DELAY, MAX_DELAY * 2, MAX_DELAY * 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_or_a_quiet_spell_clears_the_address() {
        let throttle = LoginThrottle::default();
        for _ in 0..FREE_FAILURES + 5 {
            throttle.failed(PEER);
        }
        throttle.succeeded(PEER);
        let start = Instant::now();
        throttle.wait_turn(PEER).await;
        throttle.wait_turn(PEER).await;
        assert_eq!(Instant::now(), start, "no wait after a success");

        for _ in 0..FREE_FAILURES + 5 {
            throttle.failed(PEER);
        }
        tokio::time::advance(FORGET_AFTER).await;
        assert_eq!(throttle.failed(PEER), 1, "failures long ago are forgotten");
    }
}
