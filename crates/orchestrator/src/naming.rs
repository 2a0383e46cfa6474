//! How an upstream's names and URIs look to agents, and back: the one mapping both directions
//! use (the catalog when it lists and routes, the relay when it passes an upstream's
//! notification on), so the two can never disagree.
//!
//! - Tools and prompts: `<prefix><separator><name>` (`sql__get_customer`); an empty prefix
//!   leaves the name as the upstream gave it.
//! - Resource URIs: `<server>+<uri>`, reversible because server names cannot hold `+`.
//! - Task ids: `<server>.<sealed id>`, sealed with a key, so they live in [`crate::tasks::id`].

/// Longest tool name common agent APIs accept (`^[a-zA-Z0-9_-]{1,64}$`).
pub const MAX_TOOL_NAME: usize = 64;

/// Longest tool name the MCP specification allows (2025-11-25, "Tool names").
pub const MAX_SPEC_TOOL_NAME: usize = 128;

/// Whether an upstream's own tool name is one the MCP specification allows: 1-128 characters of
/// A-Z a-z 0-9 `_` `-` `.`. One that is not (an empty name, above all, which a prefix would
/// turn into a callable `sql__`) is left out of the catalog rather than exposed or repaired.
pub fn is_spec_tool_name(name: &str) -> bool {
    (1..=MAX_SPEC_TOOL_NAME).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Whether `name` is a tool name common agent APIs accept.
pub fn is_portable_name(name: &str) -> bool {
    (1..=MAX_TOOL_NAME).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The name an agent sees for an upstream's tool or prompt `name`.
pub fn expose_name(prefix: &str, separator: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}{separator}{name}")
    }
}

/// The URI an agent sees for `server`'s resource `uri`.
pub fn expose_uri(server: &str, uri: &str) -> String {
    format!("{server}+{uri}")
}

/// The URI an agent sees for the resource `uri` of a server whose tools are prefixed with
/// `prefix`: a server with an empty prefix keeps its URIs, as it keeps its tool and prompt
/// names, so a client that knows the upstream's URIs can read them.
pub fn expose_uri_of(server: &str, prefix: &str, uri: &str) -> String {
    if prefix.is_empty() {
        uri.to_owned()
    } else {
        expose_uri(server, uri)
    }
}

/// The server and its own URI behind an exposed resource URI, if it has the exposed form.
pub fn split_uri(exposed: &str) -> Option<(&str, &str)> {
    exposed.split_once('+')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uri_maps_there_and_back() {
        let exposed = expose_uri("docs", "file:///a+b.txt");
        assert_eq!(exposed, "docs+file:///a+b.txt");
        assert_eq!(split_uri(&exposed), Some(("docs", "file:///a+b.txt")));
        assert_eq!(split_uri("no-server"), None);
    }

    #[test]
    fn an_unprefixed_server_keeps_its_uris() {
        assert_eq!(expose_uri_of("docs", "", "file:///a.txt"), "file:///a.txt");
        assert_eq!(
            expose_uri_of("docs", "d", "file:///a.txt"),
            "docs+file:///a.txt"
        );
    }

    #[test]
    fn portable_names() {
        assert!(is_portable_name("sql__get_customer"));
        assert!(!is_portable_name(""));
        assert!(!is_portable_name("a.b"));
        assert!(!is_portable_name(&"x".repeat(65)));
        assert!(is_portable_name(&"x".repeat(64)));
    }

    #[test]
    fn spec_tool_names() {
        assert!(is_spec_tool_name("get_customer"));
        assert!(is_spec_tool_name("admin.tools-list_v2"));
        assert!(is_spec_tool_name(&"x".repeat(128)));
        assert!(!is_spec_tool_name(""));
        assert!(!is_spec_tool_name(&"x".repeat(129)));
        assert!(!is_spec_tool_name("get customer"));
        assert!(!is_spec_tool_name("a/b"));
        assert!(!is_spec_tool_name("é"));
    }

    #[test]
    fn an_empty_prefix_keeps_the_name() {
        assert_eq!(expose_name("sql", "__", "query"), "sql__query");
        assert_eq!(expose_name("", "__", "query"), "query");
    }
}
