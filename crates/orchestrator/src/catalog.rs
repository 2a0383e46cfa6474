//! Every upstream's tools, prompts and resources under one namespace, and the route back.
//!
//! Names and URIs are mapped as [`crate::naming`] says, with everything else the upstream said
//! about them passed through unchanged. Names must stay within what agent APIs accept
//! (`^[a-zA-Z0-9_-]{1,64}$`): a tool whose exposed name would not is left out and reported,
//! never silently renamed. A tool whose own name breaks the MCP specification (empty, over 128
//! characters, outside A-Z a-z 0-9 `_` `-` `.`) is left out and reported the same way, even when
//! a prefix would make its exposed name look valid.
//!
//! A tool name answers with a typed [`Route`]: an upstream's tool, a composite, or a built-in;
//! the frontend's `tools/call` is one `match` on it.

use std::{collections::HashMap, sync::Arc};

use rmcp::model::{Prompt, Resource, ResourceTemplate, Tool};
use serde::{Deserialize, Serialize};

use crate::{
    annotations::is_read_only,
    capabilities::Offered,
    config::{Config, MAX_TOOL_NAME},
    error::CallError,
    hints::ListHints,
    naming::{
        MAX_SPEC_TOOL_NAME, expose_name, expose_uri_of, is_portable_name, is_spec_tool_name,
        split_uri,
    },
    upstream::Upstream,
};

/// An upstream's own tool, prompt or resource behind an exposed name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Index of the upstream in the orchestrator's list.
    pub server: usize,
    /// The name (or URI) the upstream knows it by.
    pub name: String,
}

/// Where an exposed tool name leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// An upstream's own tool.
    Upstream(Target),
    /// A composite, by index in `config.workflows`.
    Composite(usize),
    /// A tool the orchestrator itself answers.
    Builtin(Builtin),
}

/// The orchestrator's own tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// `orchestrator__invalidate_cache`: operators drop cached results.
    InvalidateCache,
}

/// A name that could not be exposed, for status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CatalogProblem {
    /// The upstream.
    pub server: String,
    /// What went wrong.
    pub message: String,
}

/// One consistent view of what the orchestrator offers.
#[derive(Debug, Default)]
pub struct Catalog {
    tools: Vec<Tool>,
    prompts: Vec<Prompt>,
    resources: Vec<Resource>,
    templates: Vec<ResourceTemplate>,
    problems: Vec<CatalogProblem>,
    tool_routes: HashMap<String, Target>,
    /// Exposed name → index in `tools`, so a call finds its tool's annotations in O(1).
    tool_positions: HashMap<String, usize>,
    prompt_routes: HashMap<String, Target>,
    server_index: HashMap<String, usize>,
    composite_routes: HashMap<String, usize>,
    /// Resources of servers with an empty prefix, which keep their URIs: URI → server.
    unprefixed_resources: HashMap<String, usize>,
    /// Servers with an empty prefix that offer resource templates, with each template's fixed
    /// start (before its first `{`), to route a URI no listing names.
    unprefixed_templates: Vec<(String, usize)>,
    invalidate_tool: String,
    /// What the upstreams advertised between them, for the front's capabilities.
    offered: Offered,
    /// Per list, how long the upstreams' parts stay fresh.
    hints: ListHints,
}

impl Catalog {
    /// Builds the view from each upstream's current offer.
    pub fn build(config: &Config, upstreams: &[Arc<Upstream>]) -> Self {
        let mut c = Catalog::default();
        let offers: Vec<_> = upstreams.iter().map(|u| u.offer()).collect();
        c.offered = Offered::union(offers.iter().map(|o| &o.capabilities));
        c.hints = ListHints::combined(offers.iter().map(|o| &o.hints));
        for (index, (upstream, offer)) in upstreams.iter().zip(&offers).enumerate() {
            let spec = upstream.spec();
            c.server_index.insert(spec.name.clone(), index);
            let exposed = |name: &str| expose_name(&spec.prefix, &config.separator, name);
            for tool in &offer.tools {
                if !is_spec_tool_name(&tool.name) {
                    c.problems.push(CatalogProblem {
                        server: spec.name.clone(),
                        message: format!(
                            "tool {:?} left out: its name is not 1-{MAX_SPEC_TOOL_NAME} characters of A-Z a-z 0-9 _ - .",
                            tool.name.as_ref()
                        ),
                    });
                    continue;
                }
                if !spec.filter.keeps(&tool.name) {
                    continue;
                }
                let name = exposed(&tool.name);
                if !config.filter.keeps(&name) {
                    continue;
                }
                if !is_portable_name(&name) {
                    c.problems.push(CatalogProblem {
                        server: spec.name.clone(),
                        message: format!(
                            "tool `{}` left out: exposed name `{name}` is not 1-{MAX_TOOL_NAME} characters of A-Z a-z 0-9 _ -",
                            tool.name
                        ),
                    });
                    continue;
                }
                if c.tool_routes.contains_key(&name) {
                    c.problems.push(CatalogProblem {
                        server: spec.name.clone(),
                        message: format!(
                            "tool `{}` left out: `{name}` is already exposed",
                            tool.name
                        ),
                    });
                    continue;
                }
                let mut t = tool.clone();
                t.name = name.clone().into();
                c.tool_positions.insert(name.clone(), c.tools.len());
                c.tools.push(t);
                c.tool_routes.insert(
                    name,
                    Target {
                        server: index,
                        name: tool.name.to_string(),
                    },
                );
            }
            for prompt in &offer.prompts {
                let name = exposed(&prompt.name);
                if c.prompt_routes.contains_key(&name) {
                    continue;
                }
                let mut p = prompt.clone();
                p.name = name.clone();
                c.prompts.push(p);
                c.prompt_routes.insert(
                    name,
                    Target {
                        server: index,
                        name: prompt.name.clone(),
                    },
                );
            }
            for resource in &offer.resources {
                let mut r = resource.clone();
                r.uri = expose_uri_of(&spec.name, &spec.prefix, &resource.uri);
                if spec.prefix.is_empty() {
                    c.unprefixed_resources.entry(r.uri.clone()).or_insert(index);
                }
                c.resources.push(r);
            }
            for template in &offer.templates {
                let mut t = template.clone();
                t.uri_template = expose_uri_of(&spec.name, &spec.prefix, &template.uri_template);
                if spec.prefix.is_empty() {
                    let fixed = t.uri_template.split('{').next().unwrap_or_default();
                    c.unprefixed_templates.push((fixed.to_owned(), index));
                }
                c.templates.push(t);
            }
        }
        c.add_composites(config, upstreams);
        c
    }

    /// Composite tools and the built-in cache invalidation tool join the same list.
    fn add_composites(&mut self, config: &Config, upstreams: &[Arc<Upstream>]) {
        for (index, workflow) in config.workflows.iter().enumerate() {
            if self.tool_routes.contains_key(&workflow.name) {
                self.problems.push(CatalogProblem {
                    server: "composites".into(),
                    message: format!(
                        "composite `{}` left out: an upstream tool has that name",
                        workflow.name
                    ),
                });
                continue;
            }
            // Read-only when every step's tool is listed and annotated read-only.
            let mut read_only = true;
            let saga = workflow.is_saga();
            for (index, step) in workflow.steps.iter().enumerate() {
                let listed = upstreams
                    .iter()
                    .find(|u| u.name() == step.server)
                    .and_then(|u| {
                        let offer = u.offer();
                        let connected = u.connected_since().is_some();
                        let found = offer
                            .tools
                            .iter()
                            .find(|t| t.name == step.tool)
                            .map(is_read_only);
                        if connected && found.is_none() {
                            self.problems.push(CatalogProblem {
                                server: step.server.clone(),
                                message: format!(
                                    "composite `{}` step `{}`: server `{}` does not list tool `{}`",
                                    workflow.name, step.name, step.server, step.tool
                                ),
                            });
                        }
                        found
                    });
                // In a saga, a write nobody can undo is only safe as the step every other one
                // precedes: if it fails nothing of it happened, if it succeeds the saga is done.
                if saga
                    && listed == Some(false)
                    && step.compensate.is_none()
                    && !runs_last(&workflow.steps, index)
                {
                    self.problems.push(CatalogProblem {
                        server: step.server.clone(),
                        message: format!(
                            "saga `{}` step `{}`: `{}.{}` is not annotated read-only and has no `compensate`: a later failure cannot undo it",
                            workflow.name, step.name, step.server, step.tool
                        ),
                    });
                }
                read_only &= listed.unwrap_or(false);
            }
            let schema = match &workflow.config.input {
                serde_json::Value::Object(o) => o.clone(),
                _ => Default::default(),
            };
            let mut tool = Tool::new(
                workflow.name.clone(),
                workflow.config.description.clone(),
                Arc::new(schema),
            );
            tool.title = workflow.config.title.clone();
            let mut annotations = rmcp::model::ToolAnnotations::new();
            annotations.read_only_hint = Some(read_only);
            annotations.open_world_hint = Some(false);
            tool.annotations = Some(annotations);
            self.tool_positions
                .insert(workflow.name.clone(), self.tools.len());
            self.tools.push(tool);
            self.composite_routes.insert(workflow.name.clone(), index);
        }
        let name = format!("orchestrator{}invalidate_cache", config.separator);
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "tags": { "type": "array", "items": { "type": "string" }, "description": "Drop entries carrying any of these tags (e.g. `sales`)" },
                "server": { "type": "string", "description": "With `tool`: drop that tool's entries" },
                "tool": { "type": "string", "description": "The server's own tool name" },
                "all": { "type": "boolean", "description": "Drop every entry" }
            }
        });
        let schema = match schema {
            serde_json::Value::Object(o) => o,
            _ => Default::default(),
        };
        let mut tool = Tool::new(
            name.clone(),
            "Operators: drop cached results by tag, by server and tool, or all of them.",
            Arc::new(schema),
        );
        let mut annotations = rmcp::model::ToolAnnotations::new();
        annotations.read_only_hint = Some(false);
        annotations.idempotent_hint = Some(true);
        annotations.destructive_hint = Some(false);
        tool.annotations = Some(annotations);
        self.tool_positions.insert(name.clone(), self.tools.len());
        self.tools.push(tool);
        self.invalidate_tool = name;
    }

    /// Exposed tools, in server then upstream order, then composites and built-ins.
    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    /// Exposed prompts.
    pub fn prompts(&self) -> &[Prompt] {
        &self.prompts
    }

    /// Exposed resources (URIs mapped).
    pub fn resources(&self) -> &[Resource] {
        &self.resources
    }

    /// Exposed resource templates (URI templates mapped).
    pub fn templates(&self) -> &[ResourceTemplate] {
        &self.templates
    }

    /// What the upstreams offer between them (from their handshakes).
    pub fn offered(&self) -> Offered {
        self.offered
    }

    /// Per list, how long the upstreams' parts stay fresh (without the orchestrator's own).
    pub fn hints(&self) -> &ListHints {
        &self.hints
    }

    /// Names left out and why.
    pub fn problems(&self) -> &[CatalogProblem] {
        &self.problems
    }

    /// Where the exposed tool `name` leads.
    pub fn route(&self, name: &str) -> Result<Route, CallError> {
        if let Some(target) = self.tool_routes.get(name) {
            return Ok(Route::Upstream(target.clone()));
        }
        if let Some(&index) = self.composite_routes.get(name) {
            return Ok(Route::Composite(index));
        }
        if !self.invalidate_tool.is_empty() && name == self.invalidate_tool {
            return Ok(Route::Builtin(Builtin::InvalidateCache));
        }
        Err(CallError::Unknown {
            what: "tool",
            name: name.to_owned(),
        })
    }

    /// Whether the exposed tool `name` only reads. For a composite that means every step's tool
    /// is listed and annotated read-only (decided when the catalog is built).
    pub fn is_read_only(&self, name: &str) -> bool {
        self.tool_positions
            .get(name)
            .and_then(|&i| self.tools.get(i))
            .is_some_and(is_read_only)
    }

    /// The exposed definition of a tool.
    pub fn tool_definition(&self, name: &str) -> Option<&Tool> {
        self.tool_positions
            .get(name)
            .and_then(|&i| self.tools.get(i))
    }

    /// The upstream's prompt behind an exposed prompt name.
    pub fn prompt(&self, name: &str) -> Result<&Target, CallError> {
        self.prompt_routes
            .get(name)
            .ok_or_else(|| CallError::Unknown {
                what: "prompt",
                name: name.to_owned(),
            })
    }

    /// The upstream and its own URI for an exposed resource URI: a listed URI of a server that
    /// keeps its URIs (empty prefix), else `server+uri`, else a URI that starts like one of the
    /// templates of a server that keeps its URIs (the longest such start wins).
    pub fn resource(&self, uri: &str) -> Result<Target, CallError> {
        let unprefixed = |server: usize| Target {
            server,
            name: uri.to_owned(),
        };
        self.unprefixed_resources
            .get(uri)
            .map(|&i| unprefixed(i))
            .or_else(|| {
                split_uri(uri).and_then(|(server, inner)| {
                    self.server_index.get(server).map(|&i| Target {
                        server: i,
                        name: inner.to_owned(),
                    })
                })
            })
            .or_else(|| {
                self.unprefixed_templates
                    .iter()
                    .filter(|(fixed, _)| uri.starts_with(fixed.as_str()))
                    .max_by_key(|(fixed, _)| fixed.len())
                    .map(|&(_, i)| unprefixed(i))
            })
            .ok_or_else(|| CallError::Unknown {
                what: "resource",
                name: uri.to_owned(),
            })
    }

    /// Exposed tool names with their server, for listings.
    pub fn tool_servers(&self) -> impl Iterator<Item = (&Tool, usize)> {
        self.tools
            .iter()
            .filter_map(|t| self.tool_routes.get(t.name.as_ref()).map(|r| (t, r.server)))
    }
}

/// Whether step `index` runs after every other step (each one is among what it reads, directly
/// or through others). Steps are in execution order, so dependencies have lower indices.
fn runs_last(steps: &[crate::workflow::definition::Step], index: usize) -> bool {
    let mut before = vec![false; steps.len()];
    let mut stack = steps[index].depends_on.clone();
    while let Some(d) = stack.pop() {
        if !before[d] {
            before[d] = true;
            stack.extend(steps[d].depends_on.iter().copied());
        }
    }
    (0..steps.len()).all(|i| i == index || before[i])
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use futures::FutureExt as _;

    use super::*;
    use crate::{
        stats::ServerStats,
        upstream::{Offer, scripted::Scripted},
    };

    fn catalog_of(names: &[String]) -> Catalog {
        let text = r#"{ "mcpServers": { "fake": { "command": "never-started" } } }"#;
        let config = Config::parse(text, Path::new("."), &|_| None).expect("valid config");
        let tools = names
            .iter()
            .map(|n| Tool::new(n.clone(), "t", Arc::new(serde_json::Map::new())))
            .collect();
        let link = Arc::new(Scripted::new(Offer::of_tools(tools), |_| {
            futures::future::pending().boxed()
        }));
        let upstream = Arc::new(Upstream::new(
            config.servers[0].clone(),
            link,
            Arc::new(ServerStats::default()),
        ));
        Catalog::build(&config, &[upstream])
    }

    /// A saga over server `fake`, whose `read` tool is annotated read-only and whose other tools
    /// are not; `steps` as written.
    fn saga_catalog(steps: serde_json::Value) -> Catalog {
        let text = serde_json::json!({
            "mcpServers": { "fake": { "command": "never-started" } },
            "orchestrator": { "composites": { "saga": {
                "description": "d", "steps": steps, "output": {}
            } } }
        })
        .to_string();
        let config = Config::parse(&text, Path::new("."), &|_| None).expect("valid config");
        let tools = ["read", "write", "undo", "finish"]
            .iter()
            .map(|n| {
                let mut t = Tool::new(*n, "t", Arc::new(serde_json::Map::new()));
                let mut a = rmcp::model::ToolAnnotations::new();
                a.read_only_hint = Some(*n == "read");
                t.annotations = Some(a);
                t
            })
            .collect();
        let link = Arc::new(Scripted::new(Offer::of_tools(tools), |_| {
            futures::future::pending().boxed()
        }));
        let upstream = Arc::new(Upstream::new(
            config.servers[0].clone(),
            link,
            Arc::new(ServerStats::default()),
        ));
        Catalog::build(&config, &[upstream])
    }

    #[test]
    fn a_saga_write_that_cannot_be_undone_is_flagged_unless_it_runs_last() {
        let catalog = saga_catalog(serde_json::json!({
            "a": { "call": "fake.write", "compensate": { "call": "fake.undo" } },
            "b": { "call": "fake.write", "args": { "x": "${a.id}" } },
            "c": { "call": "fake.read" },
            "last": { "call": "fake.finish", "args": { "x": "${b.id}", "y": "${c.id}" } }
        }));
        let flagged: Vec<&str> = catalog
            .problems()
            .iter()
            .map(|p| p.message.as_str())
            .filter(|m| m.contains("no `compensate`"))
            .collect();
        assert_eq!(flagged.len(), 1, "{flagged:?}");
        assert!(flagged[0].contains("step `b`"), "{flagged:?}");
    }

    #[test]
    fn tools_whose_own_names_break_the_spec_are_left_out_and_reported() {
        let long = "x".repeat(129);
        let names = [String::new(), long.clone(), "two words".into(), "ok".into()];
        let catalog = catalog_of(&names);
        let exposed: Vec<&str> = catalog
            .tool_servers()
            .map(|(t, _)| t.name.as_ref())
            .collect();
        assert_eq!(exposed, ["fake__ok"]);
        assert!(
            catalog.route("fake__").is_err(),
            "an empty name is not callable"
        );
        let problems: Vec<&str> = catalog
            .problems()
            .iter()
            .map(|p| p.message.as_str())
            .collect();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].starts_with("tool \"\" left out"),
            "{problems:?}"
        );
        assert!(problems[1].contains(&long), "{problems:?}");
        assert!(problems[2].contains("\"two words\""), "{problems:?}");
        assert!(catalog.problems().iter().all(|p| p.server == "fake"));
    }
}
