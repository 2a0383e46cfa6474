//! The containers this store holds and the partition key each one is split by.
//!
//! Containers are fixed, as they are in a provisioned Cosmos DB account: agents read and write
//! documents, they do not create containers. The partition key decides which logical partition a
//! document lives in, and so which queries can stay inside one partition (cheap) and which must fan
//! out (dearer).

use kit::ToolFailure;

/// One container and its partition key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Container {
    /// The container's name as callers spell it.
    pub name: &'static str,
    /// The partition key path, e.g. `/userId`.
    pub partition_key_path: &'static str,
}

impl Container {
    /// The top-level document field holding the partition key (the path without its `/`).
    pub fn partition_key_field(&self) -> &'static str {
        self.partition_key_path.trim_start_matches('/')
    }
}

/// Click-stream events per user: page views, searches, cart additions, purchases.
pub const USER_EVENTS: Container = Container {
    name: "userEvents",
    partition_key_path: "/userId",
};

/// Browsing sessions per user, with their outcome (carted, purchased).
pub const SESSIONS: Container = Container {
    name: "sessions",
    partition_key_path: "/userId",
};

/// Web and app orders, partitioned by the buyer's region.
pub const ONLINE_SALES: Container = Container {
    name: "onlineSales",
    partition_key_path: "/region",
};

/// One profile per customer (region, segment, preferences).
pub const PROFILES: Container = Container {
    name: "profiles",
    partition_key_path: "/customerId",
};

/// Every container, in the order error messages list them.
pub const ALL: [Container; 4] = [USER_EVENTS, SESSIONS, ONLINE_SALES, PROFILES];

/// The names of every container, for JSON Schema enums and messages.
pub const NAMES: [&str; 4] = ["userEvents", "sessions", "onlineSales", "profiles"];

/// Finds a container by name; the error names the `container` argument and lists valid ones.
pub fn lookup(name: &str) -> Result<Container, ToolFailure> {
    ALL.iter().copied().find(|c| c.name == name).ok_or_else(|| {
        ToolFailure::invalid_params(
            "container",
            format!(
                "unknown container `{name}`; valid containers are {}",
                ALL.iter()
                    .map(|c| format!("`{}` (partition key {})", c.name, c.partition_key_path))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_containers() {
        assert_eq!(NAMES, ALL.map(|c| c.name));
        assert_eq!(USER_EVENTS.partition_key_field(), "userId");
        assert_eq!(ONLINE_SALES.partition_key_field(), "region");
    }

    #[test]
    fn unknown_container_names_the_argument_and_lists_valid_ones() {
        let err = lookup("orders").expect_err("unknown");
        let ToolFailure::InvalidParams { field, message } = err else {
            panic!("expected invalid params");
        };
        assert_eq!(field, "container");
        for name in NAMES {
            assert!(message.contains(name), "{message}");
        }
        assert_eq!(lookup("sessions").expect("known"), SESSIONS);
    }
}
