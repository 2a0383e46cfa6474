//! Behaviour analytics computed from a user's documents: activity summary, engagement score,
//! churn risk and the recommendations that follow from them.
//!
//! Everything here is a pure function of the documents and an `as_of` instant, so the tools'
//! answers change when the documents change (an upserted event counts at once) and the rules can be
//! tested without a store. Documents written by callers may lack fields or carry odd types; such
//! fields are skipped, never a failure.
//!
//! # Engagement score (0-100)
//! - recency, up to 30: `30 × (1 − daysSinceLastActive / 90)`, 0 after 90 days;
//! - frequency, up to 25: `25 × sessionsLast90Days / 12`, capped;
//! - depth, up to 15: `15 × pageViewsPerSession / 6`, capped;
//! - conversion, up to 20: `20 × conversionRate / 0.25`, capped;
//! - cart follow-through, up to 10: `10 × (1 − cartAbandonmentRate)`, 5 without any cart.
//!
//! # Churn risk
//! `high` after 60 days without activity or below 25 points; `medium` after 21 days or below 50
//! points; `low` otherwise.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::model::{
    CategoryShare, ChurnDistribution, ChurnRisk, EngagementSignals, Recommendation, ScoreBreakdown,
    SegmentAnalysis, UserAnalysis, UserBehavior,
};

/// The instant recency is measured from: the end of the data window, the dataset's "today".
///
/// A fixed instant (rather than the wall clock) keeps answers reproducible: the seeded year does
/// not drift into "everyone churned" as real time passes.
pub fn as_of() -> DateTime<Utc> {
    retail_seed::window_end()
}

/// Weighted activity per event type, for category preferences.
fn event_weight(kind: &str) -> f64 {
    match kind {
        "page_view" => 1.0,
        "search" => 0.5,
        "add_to_cart" => 3.0,
        "purchase" => 5.0,
        _ => 0.0,
    }
}

fn time(v: &Value, field: &str) -> Option<DateTime<Utc>> {
    v.get(field)
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// What one user's documents add up to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// `page_view` events.
    pub page_views: u64,
    /// `search` events.
    pub searches: u64,
    /// `add_to_cart` events.
    pub cart_adds: u64,
    /// `purchase` events.
    pub purchases: u64,
    /// Session documents.
    pub sessions: u64,
    /// Sessions with `addedToCart: true`.
    pub carted_sessions: u64,
    /// Sessions with `addedToCart` and `purchased` both true.
    pub converted_carts: u64,
    /// Sessions with `purchased: true`.
    pub purchased_sessions: u64,
    /// Sum of session durations, seconds.
    pub session_seconds: i64,
    /// Sessions started in the 90 days before `as_of`.
    pub sessions_last_90_days: u64,
    /// Sessions per device.
    pub devices: BTreeMap<String, u64>,
    /// Weighted activity per category.
    pub categories: BTreeMap<String, f64>,
    /// Latest event time or session end.
    pub last_active: Option<DateTime<Utc>>,
}

impl Summary {
    /// Adds up a user's `userEvents` and `sessions` documents.
    pub fn from_documents(events: &[Value], sessions: &[Value], as_of: DateTime<Utc>) -> Self {
        let mut s = Summary::default();
        let seen = |t: Option<DateTime<Utc>>, s: &mut Summary| {
            if let Some(t) = t {
                s.last_active = Some(s.last_active.map_or(t, |l| l.max(t)));
            }
        };
        for e in events {
            let kind = e.get("type").and_then(Value::as_str).unwrap_or("");
            match kind {
                "page_view" => s.page_views += 1,
                "search" => s.searches += 1,
                "add_to_cart" => s.cart_adds += 1,
                "purchase" => s.purchases += 1,
                _ => {}
            }
            let weight = event_weight(kind);
            if weight > 0.0 {
                let mut categories: Vec<&str> = e
                    .get("categories")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if let Some(c) = e.get("category").and_then(Value::as_str) {
                    categories.push(c);
                }
                for c in categories {
                    *s.categories.entry(c.to_owned()).or_default() += weight;
                }
            }
            seen(time(e, "timestamp"), &mut s);
        }
        let window_start = as_of - Duration::days(90);
        for session in sessions {
            s.sessions += 1;
            let flag = |f: &str| session.get(f).and_then(Value::as_bool).unwrap_or(false);
            let (carted, purchased) = (flag("addedToCart"), flag("purchased"));
            s.carted_sessions += u64::from(carted);
            s.converted_carts += u64::from(carted && purchased);
            s.purchased_sessions += u64::from(purchased);
            let started = time(session, "startedAt");
            let ended = time(session, "endedAt");
            if let Some(secs) = session.get("durationSeconds").and_then(Value::as_i64) {
                s.session_seconds += secs.max(0);
            } else if let (Some(a), Some(b)) = (started, ended) {
                s.session_seconds += (b - a).num_seconds().max(0);
            }
            if started.is_some_and(|t| t >= window_start && t <= as_of) {
                s.sessions_last_90_days += 1;
            }
            if let Some(d) = session.get("device").and_then(Value::as_str) {
                *s.devices.entry(d.to_owned()).or_default() += 1;
            }
            seen(ended.or(started), &mut s);
        }
        s
    }

    /// Whether there is anything at all.
    pub fn is_empty(&self) -> bool {
        self.sessions == 0
            && self.page_views + self.searches + self.cart_adds + self.purchases == 0
            && self.last_active.is_none()
    }

    /// Abandoned carts over carts, `None` without any cart.
    pub fn cart_abandonment_rate(&self) -> Option<f64> {
        (self.carted_sessions > 0).then(|| {
            (self.carted_sessions - self.converted_carts) as f64 / self.carted_sessions as f64
        })
    }

    /// Purchasing sessions over sessions (0 without sessions).
    pub fn conversion_rate(&self) -> f64 {
        if self.sessions == 0 {
            0.0
        } else {
            self.purchased_sessions as f64 / self.sessions as f64
        }
    }

    /// Page views per session (0 without sessions).
    pub fn page_views_per_session(&self) -> f64 {
        if self.sessions == 0 {
            0.0
        } else {
            self.page_views as f64 / self.sessions as f64
        }
    }

    /// Share of sessions on mobile.
    pub fn mobile_share(&self) -> f64 {
        let total: u64 = self.devices.values().sum();
        if total == 0 {
            0.0
        } else {
            self.devices.get("mobile").copied().unwrap_or(0) as f64 / total as f64
        }
    }

    /// The device of most sessions (ties go to the name first in order).
    pub fn main_device(&self) -> Option<String> {
        self.devices
            .iter()
            .fold(None::<(&String, u64)>, |best, (d, n)| match best {
                Some((_, m)) if m >= *n => best,
                _ => Some((d, *n)),
            })
            .map(|(d, _)| d.clone())
    }

    /// Whole days from the last activity to `as_of` (0 if after it).
    pub fn days_since_last_active(&self, as_of: DateTime<Utc>) -> Option<i64> {
        self.last_active.map(|t| (as_of - t).num_days().max(0))
    }
}

/// The `n` categories with the most weighted activity, with their shares.
pub fn top_categories(categories: &BTreeMap<String, f64>, n: usize) -> Vec<CategoryShare> {
    let total: f64 = categories.values().sum();
    let mut ranked: Vec<(&String, f64)> = categories.iter().map(|(c, a)| (c, *a)).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    ranked
        .into_iter()
        .take(n)
        .map(|(c, a)| CategoryShare {
            category: c.clone(),
            activity: round2(a),
            share: if total > 0.0 { round3(a / total) } else { 0.0 },
        })
        .collect()
}

/// The `get_user_behavior` answer.
pub fn user_behavior(user_id: &str, profile: Option<&Value>, summary: &Summary) -> UserBehavior {
    let field = |f: &str| {
        profile
            .and_then(|p| p.get(f))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    UserBehavior {
        user_id: user_id.to_owned(),
        segment: field("segment"),
        region: field("region"),
        page_views: summary.page_views,
        searches: summary.searches,
        cart_adds: summary.cart_adds,
        purchases: summary.purchases,
        sessions: summary.sessions,
        avg_session_minutes: if summary.sessions == 0 {
            0.0
        } else {
            round2(summary.session_seconds as f64 / 60.0 / summary.sessions as f64)
        },
        last_active: summary.last_active.map(retail_seed::timestamp),
        favorite_categories: top_categories(&summary.categories, 3),
        cart_abandonment_rate: round3(summary.cart_abandonment_rate().unwrap_or(0.0)),
        conversion_rate: round3(summary.conversion_rate()),
        main_device: summary.main_device(),
    }
}

/// Score components, churn class and signals for one user.
#[derive(Debug, Clone, PartialEq)]
pub struct Engagement {
    /// 0-100.
    pub score: u8,
    /// The components.
    pub breakdown: ScoreBreakdown,
    /// Churn class.
    pub churn: ChurnRisk,
    /// The measurements.
    pub signals: EngagementSignals,
}

/// Scores a user; see the module docs for the rules.
pub fn engagement(summary: &Summary, as_of: DateTime<Utc>) -> Engagement {
    let days = summary.days_since_last_active(as_of);
    let recency = days.map_or(0.0, |d| 30.0 * (1.0 - d as f64 / 90.0).clamp(0.0, 1.0));
    let frequency = 25.0 * (summary.sessions_last_90_days as f64 / 12.0).min(1.0);
    let depth = 15.0 * (summary.page_views_per_session() / 6.0).min(1.0);
    let conversion = 20.0 * (summary.conversion_rate() / 0.25).min(1.0);
    let abandonment = summary.cart_abandonment_rate();
    let cart_follow_through = abandonment.map_or(5.0, |a| 10.0 * (1.0 - a));
    let total = recency + frequency + depth + conversion + cart_follow_through;
    let score = total.round().clamp(0.0, 100.0) as u8;
    let churn = match days {
        None => ChurnRisk::High,
        Some(d) if d > 60 || score < 25 => ChurnRisk::High,
        Some(d) if d > 21 || score < 50 => ChurnRisk::Medium,
        Some(_) => ChurnRisk::Low,
    };
    Engagement {
        score,
        breakdown: ScoreBreakdown {
            recency: round2(recency),
            frequency: round2(frequency),
            depth: round2(depth),
            conversion: round2(conversion),
            cart_follow_through: round2(cart_follow_through),
        },
        churn,
        signals: EngagementSignals {
            days_since_last_active: days,
            sessions_last_90_days: summary.sessions_last_90_days,
            avg_page_views_per_session: round2(summary.page_views_per_session()),
            conversion_rate: round3(summary.conversion_rate()),
            cart_abandonment_rate: abandonment.map(round3),
            mobile_share: round3(summary.mobile_share()),
        },
    }
}

/// Actions that follow from the data, most urgent first.
pub fn recommendations(
    summary: &Summary,
    engagement: &Engagement,
    segment: Option<&str>,
    marketing_opt_in: Option<bool>,
) -> Vec<Recommendation> {
    let mut out = Vec::new();
    let mut add = |action: &str, reason: String| {
        out.push(Recommendation {
            action: action.to_owned(),
            reason,
        })
    };
    let days = engagement.signals.days_since_last_active;
    match (engagement.churn, days) {
        (ChurnRisk::High, Some(d)) => add(
            "win_back",
            format!(
                "last active {d} days ago with an engagement score of {}: send a win-back offer{}",
                engagement.score,
                if marketing_opt_in == Some(false) {
                    " (opted out of marketing: use an in-app message)"
                } else {
                    ""
                }
            ),
        ),
        (ChurnRisk::High, None) => add(
            "activate",
            "no recorded activity: send an onboarding sequence".to_owned(),
        ),
        (ChurnRisk::Medium, Some(d)) => add(
            "re_engage",
            format!(
                "activity is cooling ({d} days since the last visit): send a personalised reminder"
            ),
        ),
        _ => {}
    }
    let abandoned = summary.carted_sessions - summary.converted_carts;
    if abandoned >= 2 && summary.cart_abandonment_rate().is_some_and(|a| a >= 0.5) {
        add(
            "cart_recovery",
            format!(
                "{abandoned} of {} carts were abandoned: send cart reminders with free shipping",
                summary.carted_sessions
            ),
        );
    }
    if summary.purchases == 0 && summary.page_views >= 10 {
        add(
            "first_purchase_incentive",
            format!(
                "{} product views but no online purchase: offer a first-order discount",
                summary.page_views
            ),
        );
    }
    if let Some(top) = top_categories(&summary.categories, 1).first()
        && top.share >= 0.3
    {
        add(
            "promote_category",
            format!(
                "{} is {:.0}% of their activity: feature new {} products",
                top.category,
                top.share * 100.0,
                top.category
            ),
        );
    }
    let mobile = summary.mobile_share();
    if summary.sessions >= 5 && mobile >= 0.6 && summary.conversion_rate() < 0.15 {
        add(
            "mobile_checkout",
            format!(
                "{:.0}% of sessions are on mobile but only {:.0}% convert: push the app's one-tap checkout",
                mobile * 100.0,
                summary.conversion_rate() * 100.0
            ),
        );
    }
    if engagement.churn == ChurnRisk::Low && engagement.score >= 70 {
        let action = if segment == Some("premium") {
            "loyalty_invite"
        } else {
            "upgrade_offer"
        };
        add(
            action,
            format!(
                "highly engaged (score {}), converting {:.0}% of sessions",
                engagement.score,
                summary.conversion_rate() * 100.0
            ),
        );
    }
    out
}

/// The `analyze_user_behavior` answer.
pub fn user_analysis(
    customer_id: &str,
    profile: Option<&Value>,
    summary: &Summary,
    as_of: DateTime<Utc>,
) -> UserAnalysis {
    let field = |f: &str| profile.and_then(|p| p.get(f));
    let segment = field("segment").and_then(Value::as_str).map(str::to_owned);
    let e = engagement(summary, as_of);
    let recommendations = recommendations(
        summary,
        &e,
        segment.as_deref(),
        field("marketingOptIn").and_then(Value::as_bool),
    );
    UserAnalysis {
        customer_id: customer_id.to_owned(),
        region: field("region").and_then(Value::as_str).map(str::to_owned),
        segment,
        engagement_score: e.score,
        churn_risk: e.churn,
        as_of: retail_seed::timestamp(as_of),
        signals: e.signals,
        score_breakdown: e.breakdown,
        recommendations,
    }
}

/// The `analyze_users` answer from each member's summary.
pub fn segment_analysis(
    segment: &str,
    members: &[(String, Summary)],
    as_of: DateTime<Utc>,
) -> SegmentAnalysis {
    let mut churn = ChurnDistribution::default();
    let mut categories: BTreeMap<String, f64> = BTreeMap::new();
    let mut scores = 0.0;
    let mut abandonment = (0.0, 0u64);
    let mut sessions = 0u64;
    let mut page_views = 0u64;
    let mut at_risk: Vec<(u8, &str)> = Vec::new();
    for (id, s) in members {
        let e = engagement(s, as_of);
        scores += f64::from(e.score);
        match e.churn {
            ChurnRisk::Low => churn.low += 1,
            ChurnRisk::Medium => churn.medium += 1,
            ChurnRisk::High => {
                churn.high += 1;
                at_risk.push((e.score, id));
            }
        }
        for (c, a) in &s.categories {
            *categories.entry(c.clone()).or_default() += a;
        }
        if let Some(a) = s.cart_abandonment_rate() {
            abandonment.0 += a;
            abandonment.1 += 1;
        }
        sessions += s.sessions;
        page_views += s.page_views;
    }
    at_risk.sort();
    let n = members.len() as f64;
    let mean = |total: f64, count: f64| if count > 0.0 { total / count } else { 0.0 };
    SegmentAnalysis {
        segment: segment.to_owned(),
        user_count: members.len() as u64,
        avg_engagement_score: round2(mean(scores, n)),
        churn_distribution: churn,
        top_categories: top_categories(&categories, 5),
        avg_cart_abandonment_rate: round3(mean(abandonment.0, abandonment.1 as f64)),
        avg_sessions_per_user: round2(mean(sessions as f64, n)),
        total_page_views: page_views,
        high_risk_users: at_risk
            .into_iter()
            .take(20)
            .map(|(_, id)| id.to_owned())
            .collect(),
        as_of: retail_seed::timestamp(as_of),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn session(start: &str, device: &str, carted: bool, purchased: bool) -> Value {
        json!({"startedAt": start, "endedAt": start, "durationSeconds": 600, "device": device,
               "addedToCart": carted, "purchased": purchased})
    }

    fn view(ts: &str, category: &str) -> Value {
        json!({"type": "page_view", "timestamp": ts, "category": category})
    }

    #[test]
    fn summary_counts_and_rates() {
        let now = at("2026-11-01T00:00:00Z");
        let events = vec![
            view("2026-10-20T10:00:00Z", "books"),
            view("2026-10-20T10:01:00Z", "books"),
            view("2026-10-20T10:02:00Z", "home"),
            json!({"type": "add_to_cart", "timestamp": "2026-10-20T10:03:00Z", "category": "home"}),
            json!({"type": "purchase", "timestamp": "2026-10-25T10:04:00Z", "categories": ["home"]}),
            json!({"type": "weird", "timestamp": "not a time"}),
        ];
        let sessions = vec![
            session("2026-10-20T10:00:00Z", "mobile", true, false),
            session("2026-10-25T10:00:00Z", "mobile", true, true),
            session("2026-03-01T10:00:00Z", "desktop", false, false),
        ];
        let s = Summary::from_documents(&events, &sessions, now);
        assert_eq!(
            (s.page_views, s.cart_adds, s.purchases, s.sessions),
            (3, 1, 1, 3)
        );
        assert_eq!(s.cart_abandonment_rate(), Some(0.5));
        assert!((s.conversion_rate() - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(s.sessions_last_90_days, 2);
        assert_eq!(s.days_since_last_active(now), Some(6));
        assert_eq!(s.main_device().as_deref(), Some("mobile"));
        let top = top_categories(&s.categories, 3);
        // home: view 1 + cart 3 + purchase 5 = 9; books: 2.
        assert_eq!(top[0].category, "home");
        assert_eq!(top[0].activity, 9.0);
        assert_eq!(top[1].category, "books");
        assert!((top[0].share - 9.0 / 11.0).abs() < 0.001);
    }

    #[test]
    fn recent_frequent_buyers_score_high_and_lapsed_users_churn() {
        let now = at("2026-11-01T00:00:00Z");
        let mut events = Vec::new();
        let mut sessions = Vec::new();
        for d in 0..14 {
            let ts = format!("2026-10-{:02}T12:00:00Z", d + 10);
            for _ in 0..6 {
                events.push(view(&ts, "electronics"));
            }
            sessions.push(session(&ts, "desktop", d % 2 == 0, d % 2 == 0));
        }
        let active = engagement(&Summary::from_documents(&events, &sessions, now), now);
        assert!(active.score >= 90, "{active:?}");
        assert_eq!(active.churn, ChurnRisk::Low);

        let old: Vec<Value> = events
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e["timestamp"] = json!("2026-03-01T12:00:00Z");
                e
            })
            .collect();
        let old_sessions = vec![session("2026-03-01T12:00:00Z", "desktop", true, false)];
        let lapsed = engagement(&Summary::from_documents(&old, &old_sessions, now), now);
        assert_eq!(lapsed.churn, ChurnRisk::High);
        assert!(lapsed.score < active.score);
        assert_eq!(lapsed.breakdown.recency, 0.0);

        let nothing = engagement(&Summary::default(), now);
        assert_eq!(nothing.churn, ChurnRisk::High);
        assert_eq!(nothing.signals.days_since_last_active, None);
    }

    #[test]
    fn recommendations_follow_the_data() {
        let now = at("2026-11-01T00:00:00Z");
        // Lapsed, many abandoned carts, lots of views, no purchase, all on mobile, loves books.
        let events: Vec<Value> = (0..12)
            .map(|_| view("2026-07-01T00:00:00Z", "books"))
            .collect();
        let sessions: Vec<Value> = (0..6)
            .map(|_| session("2026-07-01T00:00:00Z", "mobile", true, false))
            .collect();
        let s = Summary::from_documents(&events, &sessions, now);
        let e = engagement(&s, now);
        let actions: Vec<String> = recommendations(&s, &e, Some("budget"), Some(false))
            .into_iter()
            .map(|r| r.action)
            .collect();
        assert_eq!(
            actions,
            [
                "win_back",
                "cart_recovery",
                "first_purchase_incentive",
                "promote_category",
                "mobile_checkout"
            ]
        );
        let analysis = user_analysis("CUST-9", Some(&json!({"segment": "budget"})), &s, now);
        assert!(!analysis.recommendations[0].reason.contains("opted out"));
        assert_eq!(analysis.segment.as_deref(), Some("budget"));
    }

    #[test]
    fn segment_analysis_aggregates_members() {
        let now = at("2026-11-01T00:00:00Z");
        let busy = Summary::from_documents(
            &[view("2026-10-30T00:00:00Z", "home")],
            &[session("2026-10-30T00:00:00Z", "tablet", true, true)],
            now,
        );
        let idle = Summary::default();
        let report = segment_analysis("premium", &[("A".into(), busy), ("B".into(), idle)], now);
        assert_eq!(report.user_count, 2);
        assert_eq!(report.churn_distribution.high, 1);
        assert_eq!(report.high_risk_users, ["B"]);
        assert_eq!(report.top_categories[0].category, "home");
        assert_eq!(report.avg_cart_abandonment_rate, 0.0);
        assert_eq!(report.avg_sessions_per_user, 0.5);
    }
}
