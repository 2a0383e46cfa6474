//! Cache hints (`ttlMs`, `cacheScope`, SEP-2549, protocol 2026-07-28): what an upstream said about
//! how long a list or a read stays fresh and who may share it, what is left of that later, and
//! how the parts of one aggregated answer combine.
//!
//! Silence is read the way rmcp reads it, on both its client and its server side: no `ttlMs`
//! means stale at once, no `cacheScope` means private. An upstream on 2025-11-25 says neither, so
//! a list with its items in it is never promised fresh on its behalf.

use std::time::Duration;

use rmcp::model::CacheScope;
use tokio::time::Instant;

/// The longest freshness the orchestrator passes on or keeps, as rmcp's client caps it
/// (`MAX_CLIENT_CACHE_TTL`): a server's "fresh for a year" is not a promise worth keeping, and a
/// bound keeps the arithmetic on instants from overflowing.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How long an answer may be treated as fresh, and whether it may be shared across
/// authorization contexts (`public`) or only kept by the client that asked (`private`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheHint {
    /// Freshness, at most [`MAX_TTL`]; zero is stale at once (never stored).
    pub ttl: Duration,
    /// Who may share it.
    pub scope: CacheScope,
}

impl CacheHint {
    /// Stale at once and not to be shared: what silence means.
    pub const UNCACHEABLE: Self = Self {
        ttl: Duration::ZERO,
        scope: CacheScope::Private,
    };

    /// Fresh for `ttl`, shareable.
    pub fn public(ttl: Duration) -> Self {
        Self {
            ttl: ttl.min(MAX_TTL),
            scope: CacheScope::Public,
        }
    }

    /// Fresh for `ttl`, for the asking client only.
    pub fn private(ttl: Duration) -> Self {
        Self {
            ttl: ttl.min(MAX_TTL),
            scope: CacheScope::Private,
        }
    }

    /// The hint a result carried on the wire; a missing field counts as its conservative value.
    pub fn from_wire(ttl_ms: Option<u64>, scope: Option<CacheScope>) -> Self {
        Self {
            ttl: ttl_ms
                .map_or(Duration::ZERO, Duration::from_millis)
                .min(MAX_TTL),
            scope: scope.unwrap_or(CacheScope::Private),
        }
    }

    /// The hint of an answer made of both: the shorter freshness, private if either part is.
    pub fn and(self, other: Self) -> Self {
        Self {
            ttl: self.ttl.min(other.ttl),
            scope: stricter(self.scope, other.scope),
        }
    }

    /// Whether one client's answer may be kept and served to another: fresh for a while, and
    /// public.
    pub fn is_shareable(self) -> bool {
        !self.ttl.is_zero() && self.scope == CacheScope::Public
    }

    /// `ttlMs` as sent.
    pub fn ttl_ms(self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }
}

/// Private if either scope is: an answer with one private part is private as a whole.
fn stricter(a: CacheScope, b: CacheScope) -> CacheScope {
    if a == CacheScope::Private || b == CacheScope::Private {
        CacheScope::Private
    } else {
        CacheScope::Public
    }
}

/// A hint as stated at one moment: its freshness runs out at a fixed instant, so what is left
/// of it can be told at any later time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stated {
    expires: Instant,
    scope: CacheScope,
}

impl Stated {
    /// `hint`, stated at `at`.
    pub fn at(hint: CacheHint, at: Instant) -> Self {
        Self {
            expires: at + hint.ttl.min(MAX_TTL),
            scope: hint.scope,
        }
    }

    /// `hint`, stated now.
    pub fn now(hint: CacheHint) -> Self {
        Self::at(hint, Instant::now())
    }

    /// When its freshness runs out.
    pub fn expires(self) -> Instant {
        self.expires
    }

    /// Both parts: the earlier expiry, private if either is.
    pub fn and(self, other: Self) -> Self {
        Self {
            expires: self.expires.min(other.expires),
            scope: stricter(self.scope, other.scope),
        }
    }

    /// What is left of it at `now`: an upstream's 60 s stated 50 s ago is 10 s.
    pub fn remaining(self, now: Instant) -> CacheHint {
        CacheHint {
            ttl: self.expires.saturating_duration_since(now),
            scope: self.scope,
        }
    }
}

/// The hint of each list one upstream answered when last listed; `None` for a list it does not
/// offer (it adds nothing to that aggregated list, so it does not bound its freshness either).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListHints {
    /// `tools/list`.
    pub tools: Option<Stated>,
    /// `resources/list`.
    pub resources: Option<Stated>,
    /// `resources/templates/list`.
    pub templates: Option<Stated>,
    /// `prompts/list`.
    pub prompts: Option<Stated>,
}

impl ListHints {
    /// Each list's hint over several upstreams: per list, the earliest expiry, private if any
    /// part is.
    pub fn combined<'a>(parts: impl IntoIterator<Item = &'a ListHints>) -> Self {
        fn both(a: Option<Stated>, b: Option<Stated>) -> Option<Stated> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.and(b)),
                (a, b) => a.or(b),
            }
        }
        parts.into_iter().fold(Self::default(), |acc, p| Self {
            tools: both(acc.tools, p.tools),
            resources: both(acc.resources, p.resources),
            templates: both(acc.templates, p.templates),
            prompts: both(acc.prompts, p.prompts),
        })
    }

    /// When the first list that was fresh at `now` goes stale: the moment to list again so the
    /// orchestrator's copy never outlives the upstream's word. Lists stale already (a zero or
    /// absent `ttlMs`) are left out: they are kept current by list-change notifications, and
    /// listing them again at once would only poll.
    pub fn next_expiry(&self, now: Instant) -> Option<Instant> {
        [self.tools, self.resources, self.templates, self.prompts]
            .into_iter()
            .flatten()
            .map(Stated::expires)
            .filter(|&e| e > now)
            .min()
    }
}

/// The hint of an aggregated answer at `now`: the orchestrator's `own` part, fresh from now, with
/// what is left of the upstreams' parts.
pub fn aggregated(own: CacheHint, upstreams: Option<Stated>, now: Instant) -> CacheHint {
    match upstreams {
        Some(parts) => own.and(parts.remaining(now)),
        None => own,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn silence_is_stale_and_private() {
        assert_eq!(CacheHint::from_wire(None, None), CacheHint::UNCACHEABLE);
        assert_eq!(
            CacheHint::from_wire(Some(60_000), None),
            CacheHint::private(MINUTE)
        );
        assert_eq!(
            CacheHint::from_wire(None, Some(CacheScope::Public)),
            CacheHint::public(Duration::ZERO)
        );
        assert!(!CacheHint::from_wire(None, Some(CacheScope::Public)).is_shareable());
        assert!(CacheHint::from_wire(Some(1), Some(CacheScope::Public)).is_shareable());
        assert!(!CacheHint::from_wire(Some(60_000), Some(CacheScope::Private)).is_shareable());
    }

    #[test]
    fn a_ttl_beyond_a_day_is_cut_to_a_day() {
        let hint = CacheHint::from_wire(Some(u64::MAX), Some(CacheScope::Public));
        assert_eq!(hint.ttl, MAX_TTL);
        assert_eq!(hint.ttl_ms(), 86_400_000);
        // And stating it does not overflow the instant.
        let stated = Stated::now(hint);
        assert!(stated.remaining(Instant::now()).ttl <= MAX_TTL);
    }

    #[test]
    fn parts_combine_to_the_shortest_and_private_if_any_is() {
        let a = CacheHint::public(MINUTE);
        let b = CacheHint::public(Duration::from_secs(10));
        let c = CacheHint::private(Duration::from_secs(30));
        assert_eq!(a.and(b), CacheHint::public(Duration::from_secs(10)));
        assert_eq!(a.and(c), CacheHint::private(Duration::from_secs(30)));
        assert_eq!(b.and(c), CacheHint::private(Duration::from_secs(10)));
        assert_eq!(a.and(CacheHint::UNCACHEABLE), CacheHint::UNCACHEABLE);
    }

    #[tokio::test(start_paused = true)]
    async fn what_is_left_of_a_stated_hint_shrinks_with_time() {
        let stated = Stated::now(CacheHint::public(MINUTE));
        tokio::time::advance(Duration::from_secs(50)).await;
        assert_eq!(
            stated.remaining(Instant::now()),
            CacheHint::public(Duration::from_secs(10))
        );
        tokio::time::advance(MINUTE).await;
        assert_eq!(
            stated.remaining(Instant::now()),
            CacheHint::public(Duration::ZERO)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_aggregated_list_carries_the_smallest_remaining_ttl_and_any_privacy() {
        let start = Instant::now();
        let sql = ListHints {
            tools: Some(Stated::at(CacheHint::public(MINUTE), start)),
            ..ListHints::default()
        };
        let cosmos = ListHints {
            tools: Some(Stated::at(
                CacheHint::public(Duration::from_secs(20)),
                start,
            )),
            resources: Some(Stated::at(CacheHint::private(MINUTE), start)),
            ..ListHints::default()
        };
        let all = ListHints::combined([&sql, &cosmos]);
        let own = CacheHint::public(Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(5)).await;
        let now = Instant::now();
        assert_eq!(
            aggregated(own, all.tools, now),
            CacheHint::public(Duration::from_secs(15))
        );
        assert_eq!(
            aggregated(own, all.resources, now),
            CacheHint::private(Duration::from_secs(30))
        );
        // No upstream offers prompts: the orchestrator's own hint alone.
        assert_eq!(aggregated(own, all.prompts, now), own);
        // A silent upstream makes the whole list stale and private.
        let silent = ListHints {
            tools: Some(Stated::at(CacheHint::UNCACHEABLE, start)),
            ..ListHints::default()
        };
        let with_silent = ListHints::combined([&sql, &cosmos, &silent]);
        assert_eq!(
            aggregated(own, with_silent.tools, now),
            CacheHint::UNCACHEABLE
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_listing_is_due_when_the_first_fresh_list_goes_stale() {
        let start = Instant::now();
        let hints = ListHints {
            tools: Some(Stated::at(CacheHint::public(MINUTE), start)),
            resources: Some(Stated::at(
                CacheHint::private(Duration::from_secs(20)),
                start,
            )),
            // Stale already: kept current by notifications, not by polling.
            prompts: Some(Stated::at(CacheHint::UNCACHEABLE, start)),
            templates: None,
        };
        assert_eq!(
            hints.next_expiry(start),
            Some(start + Duration::from_secs(20))
        );
        assert_eq!(
            hints.next_expiry(start + Duration::from_secs(30)),
            Some(start + MINUTE)
        );
        assert_eq!(hints.next_expiry(start + MINUTE), None);
        let silent = ListHints {
            tools: Some(Stated::at(CacheHint::UNCACHEABLE, start)),
            ..ListHints::default()
        };
        assert_eq!(silent.next_expiry(start), None);
    }
}
