//! Slows passcode guessing, over STOMP and in the web console alike: after a few failed logins for one login from one address, its
//! attempts take turns, one per delay that doubles with every further failure (up to a
//! cap), so opening more connections does not buy more guesses; an attempt whose turn is
//! further away than the cap is refused at once rather than holding a connection slot.
//! A success for that login from that address clears it. IPv6 addresses count by /64.

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

/// Whose attempts take turns: one login from one address (an IPv6 /64).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attempter {
    network: IpAddr,
    login: String,
}

impl Attempter {
    /// The attempts of `login` from `ip`.
    pub fn new(ip: IpAddr, login: &str) -> Self {
        let network = match ip {
            IpAddr::V4(_) => ip,
            // One host commonly holds a whole /64.
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        };
        Attempter { network, login: login.to_owned() }
    }
}

/// Failed logins per login and peer address.
#[derive(Default)]
pub struct LoginThrottle {
    // std Mutex: held for a map lookup, never across an await.
    peers: Mutex<HashMap<Attempter, Peer>>,
}

impl LoginThrottle {
    /// Waits for this attempter's turn to have a login checked.
    ///
    /// # Errors
    /// How long until a turn is free, when that is further away than the longest delay:
    /// the attempt is to be refused now.
    pub async fn wait_turn(&self, who: &Attempter) -> Result<(), Duration> {
        let turn = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            match peers.get_mut(who) {
                Some(peer) if peer.last_failure + FORGET_AFTER > now => {
                    let Some(delay) = delay_after(peer.failures) else { return Ok(()) };
                    // Each attempt books the slot after the last one booked.
                    let turn = peer.next_turn.max(now);
                    if turn > now + MAX_DELAY {
                        return Err(turn - now);
                    }
                    peer.next_turn = turn + delay;
                    turn
                }
                _ => return Ok(()),
            }
        };
        tokio::time::sleep_until(turn).await;
        Ok(())
    }

    /// Counts a failed login; returns how many this attempter has had in a row.
    pub fn failed(&self, who: &Attempter) -> u32 {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if peers.len() >= MAX_PEERS && !peers.contains_key(who) {
            peers.retain(|_, peer| peer.last_failure + FORGET_AFTER > now);
            if peers.len() >= MAX_PEERS {
                let oldest = peers.iter().min_by_key(|(_, peer)| peer.last_failure).map(|(who, _)| who.clone());
                peers.remove(&oldest.expect("the map is full"));
            }
        }
        let peer = peers.entry(who.clone()).or_insert(Peer { failures: 0, last_failure: now, next_turn: now });
        if peer.last_failure + FORGET_AFTER <= now {
            peer.failures = 0;
        }
        peer.failures += 1;
        peer.last_failure = now;
        peer.failures
    }

    /// Forgets an attempter's failures after it logged in.
    pub fn succeeded(&self, who: &Attempter) {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).remove(who);
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

    fn peer() -> Attempter {
        Attempter::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), "default/admin")
    }

    #[test]
    fn the_delay_starts_after_the_free_failures_doubles_and_is_capped() {
        assert_eq!(delay_after(0), None);
        assert_eq!(delay_after(FREE_FAILURES), None);
        assert_eq!(delay_after(FREE_FAILURES + 1), Some(FIRST_DELAY));
        assert_eq!(delay_after(FREE_FAILURES + 2), Some(FIRST_DELAY * 2));
        assert_eq!(delay_after(FREE_FAILURES + 40), Some(MAX_DELAY));
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_bit_network_and_logins_apart() {
        let a = Attempter::new("2001:db8::1".parse().unwrap(), "t/u");
        assert_eq!(a, Attempter::new("2001:db8::ffff:2".parse().unwrap(), "t/u"));
        assert_ne!(a, Attempter::new("2001:db8:0:1::1".parse().unwrap(), "t/u"));
        assert_ne!(a, Attempter::new("2001:db8::1".parse().unwrap(), "t/other"));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_attempts_take_turns_and_those_too_far_out_are_refused_at_once() {
        let throttle = std::sync::Arc::new(LoginThrottle::default());
        for _ in 0..FREE_FAILURES + 40 {
            throttle.failed(&peer());
        }
        let start = Instant::now();
        let attempts: Vec<_> = (0..4)
            .map(|_| {
                let throttle = throttle.clone();
                tokio::spawn(async move { throttle.wait_turn(&peer()).await.map(|()| Instant::now() - start) })
            })
            .collect();
        let mut outcomes = Vec::new();
        for attempt in attempts {
            outcomes.push(attempt.await.unwrap());
        }
        outcomes.sort();
        assert_eq!(outcomes[..2], [Ok(Duration::ZERO), Ok(MAX_DELAY)]);
        assert!(outcomes[2..].iter().all(Result::is_err), "{outcomes:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_or_a_quiet_spell_clears_the_attempter() {
        let throttle = LoginThrottle::default();
        for _ in 0..FREE_FAILURES + 5 {
            throttle.failed(&peer());
        }
        throttle.succeeded(&peer());
        let start = Instant::now();
        throttle.wait_turn(&peer()).await.unwrap();
        throttle.wait_turn(&peer()).await.unwrap();
        assert_eq!(Instant::now(), start, "no wait after a success");

        for _ in 0..FREE_FAILURES + 5 {
            throttle.failed(&peer());
        }
        tokio::time::advance(FORGET_AFTER).await;
        assert_eq!(throttle.failed(&peer()), 1, "failures long ago are forgotten");
    }
}
