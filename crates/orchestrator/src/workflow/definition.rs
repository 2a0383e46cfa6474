//! Composite tools as written in mcp.json (`orchestrator.composites.<name>`), checked at load
//! time into a [`Workflow`]: every reference resolved to an input or a step, dependencies
//! derived from the references, cycles refused, templates compiled once.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    cache::CacheSpec,
    config::ConfigError,
    template::{Template, TemplateError, join_path},
};

/// Longest a composite may run when its config says nothing.
pub const DEFAULT_DEADLINE_MS: u64 = 30_000;
/// Items of a `forEach` running at once when its config says nothing.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Upper bound on `concurrency`, so one composite cannot monopolise a server.
pub const MAX_CONCURRENCY: usize = 64;

/// `orchestrator.composites.<name>` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompositeConfig {
    /// What the tool does, for agents.
    pub description: String,
    /// A human-readable title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// JSON Schema of the tool's input (default: an object with no required fields).
    #[serde(default = "empty_object_schema")]
    pub input: Value,
    /// Named steps; their order here does not matter, references decide it.
    pub steps: BTreeMap<String, StepConfig>,
    /// The result, as a template over `input` and the steps.
    pub output: Value,
    /// Bound on the whole composite (default 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Cache the whole result (a tier or `{"ttlMs": n}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,
    /// For a saga: what a restart does with a run the process left unfinished.
    #[serde(default, skip_serializing_if = "Recovery::is_backward")]
    pub recovery: Recovery,
}

/// What a restart does with a saga the process left unfinished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Recovery {
    /// Undo what took effect (the default): the agent never got an answer, so nothing stays.
    #[default]
    Backward,
    /// Run the steps that had not finished, with the same saga id and so the same idempotency
    /// keys; a step that fails now undoes the saga as usual. For actions that should complete
    /// once begun (an order the customer was told about).
    Forward,
}

impl Recovery {
    fn is_backward(&self) -> bool {
        *self == Recovery::Backward
    }
}

fn empty_object_schema() -> Value {
    serde_json::json!({ "type": "object" })
}

/// One step as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepConfig {
    /// `<server>.<tool>`, with the names mcp.json and the server use.
    pub call: String,
    /// The tool's arguments, as a template.
    #[serde(default = "empty_object")]
    pub args: Value,
    /// A reference to an array from an earlier step: the step runs once per item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<String>,
    /// Name of the item inside `args` (default `item`).
    #[serde(rename = "as", default, skip_serializing_if = "Option::is_none")]
    pub as_name: Option<String>,
    /// Items running at once (default 4, at most 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Most items the `forEach` may fan out over (default `orchestrator.limits.maxForEachItems`);
    /// a longer list fails the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<usize>,
    /// Whether the step's failure fails the composite (default false: optional).
    #[serde(default)]
    pub critical: bool,
    /// The value an optional step takes when it fails (default: null, and the step is
    /// reported as failed). On a `forEach` it stands for one failed item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Value>,
    /// Cache this step's results (a tier or `{"ttlMs": n}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,
    /// The call that undoes this step, run when a critical step of the composite fails after
    /// this one succeeded. Makes the composite a saga.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensate: Option<CompensateConfig>,
}

/// A step's undo, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompensateConfig {
    /// `<server>.<tool>`; it must be idempotent, since it is retried until it succeeds.
    pub call: String,
    /// Its arguments, as a template over `input`, `saga` and the steps (this one's own result
    /// included: `${order.orderId}`).
    #[serde(default = "empty_object")]
    pub args: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// A checked step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Its name.
    pub name: String,
    /// The upstream server's name.
    pub server: String,
    /// The upstream's own tool name.
    pub tool: String,
    /// Compiled arguments.
    pub args: Template,
    /// Compiled `forEach` source, with the item's name.
    pub for_each: Option<(Template, String)>,
    /// Bound on items running at once.
    pub concurrency: usize,
    /// Bound on the items of a `forEach`.
    pub max_items: ItemLimit,
    /// Failure fails the composite.
    pub critical: bool,
    /// Value on failure, for optional steps.
    pub fallback: Option<Value>,
    /// Cache spec.
    pub cache: Option<CacheSpec>,
    /// Steps this one reads, by index.
    pub depends_on: Vec<usize>,
    /// The call that undoes it, as a step of its own (critical, uncached, reading every step).
    pub compensate: Option<Box<Step>>,
}

/// The most items a `forEach` step may fan out over, and where that was configured, so that the
/// step's failure can say which setting to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemLimit {
    /// Items at most.
    pub max: usize,
    /// The config path that set it (`orchestrator.limits.maxForEachItems`, or the step's
    /// `maxItems`).
    pub set_by: String,
}

/// A checked composite tool.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// The tool's name.
    pub name: String,
    /// As written, for the tool listing.
    pub config: CompositeConfig,
    /// Steps in a valid execution order (dependencies first).
    pub steps: Vec<Step>,
    /// Compiled output.
    pub output: Template,
    /// Bound on the whole run.
    pub deadline: std::time::Duration,
}

fn err(path: String, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path,
        message: message.into(),
    }
}

fn template_error(e: TemplateError, prefix: &str) -> ConfigError {
    let e = e.within(prefix);
    err(e.at().to_owned(), e.message().to_owned())
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Workflow {
    /// Whether any step declares `compensate`: then a critical failure undoes what succeeded.
    pub fn is_saga(&self) -> bool {
        self.steps.iter().any(|s| s.compensate.is_some())
    }

    /// Checks one composite; `servers` are the enabled upstream names. Errors name the path.
    /// `forEach` steps without `maxItems` take the default `orchestrator.limits.maxForEachItems`.
    pub fn compile(
        name: &str,
        config: &CompositeConfig,
        servers: &BTreeSet<String>,
    ) -> Result<Self, ConfigError> {
        Self::compile_with_limit(
            name,
            config,
            servers,
            crate::limits::DEFAULT_MAX_FOR_EACH_ITEMS,
        )
    }

    /// [`Workflow::compile`], with `max_for_each_items` (from `orchestrator.limits`) bounding
    /// every `forEach` step that sets no `maxItems` of its own.
    pub fn compile_with_limit(
        name: &str,
        config: &CompositeConfig,
        servers: &BTreeSet<String>,
        max_for_each_items: usize,
    ) -> Result<Self, ConfigError> {
        let base = format!("orchestrator.composites.{name}");
        if !crate::naming::is_portable_name(name) {
            return Err(err(
                base,
                "composite names must be 1-64 characters of A-Z a-z 0-9 _ -",
            ));
        }
        jsonschema::validator_for(&config.input).map_err(|e| {
            err(
                format!("{base}.input"),
                format!("not a valid JSON Schema: {e}"),
            )
        })?;
        if config.steps.is_empty() {
            return Err(err(
                format!("{base}.steps"),
                "a composite needs at least one step",
            ));
        }
        if config.recovery == Recovery::Forward
            && !config.steps.values().any(|s| s.compensate.is_some())
        {
            return Err(err(
                format!("{base}.recovery"),
                "only a saga (a composite with a step that declares `compensate`) is recovered",
            ));
        }
        if config.deadline_ms == Some(0) {
            return Err(err(format!("{base}.deadlineMs"), "must be at least 1"));
        }
        let names: Vec<&String> = config.steps.keys().collect();
        let index_of = |n: &str| names.iter().position(|s| s.as_str() == n);
        let mut steps = Vec::with_capacity(names.len());
        for (step_name, s) in &config.steps {
            let path = format!("{base}.steps.{step_name}");
            if !is_name(step_name) || step_name == "input" || step_name == "saga" {
                return Err(err(
                    path,
                    "step names are A-Z a-z 0-9 _ - and not `input` or `saga`",
                ));
            }
            let (server, tool, args) = compile_call(&s.call, &s.args, &path, servers)?;
            let item = s.as_name.clone().unwrap_or_else(|| "item".to_owned());
            if s.as_name.is_some() && s.for_each.is_none() {
                return Err(err(
                    format!("{path}.as"),
                    "`as` names the item of a `forEach`",
                ));
            }
            if !is_name(&item) || item == "input" || config.steps.contains_key(&item) {
                return Err(err(
                    format!("{path}.as"),
                    format!(
                        "`{item}` cannot name the item: use a name that is not `input` or a step"
                    ),
                ));
            }
            let for_each = match &s.for_each {
                None => None,
                Some(text) => {
                    let t = Template::compile(&Value::String(text.clone()))
                        .map_err(|e| template_error(e, &format!("{path}.forEach")))?;
                    if t.references().len() != 1
                        || !text.trim().starts_with("${")
                        || !text.trim().ends_with('}')
                    {
                        return Err(err(
                            format!("{path}.forEach"),
                            "expected exactly one reference, like `${top.customers}`",
                        ));
                    }
                    Some((t, item.clone()))
                }
            };
            let concurrency = s.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
            if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
                return Err(err(
                    format!("{path}.concurrency"),
                    format!("must be 1-{MAX_CONCURRENCY}"),
                ));
            }
            let max_items = match s.max_items {
                None => ItemLimit {
                    max: max_for_each_items,
                    set_by: "orchestrator.limits.maxForEachItems".into(),
                },
                Some(_) if s.for_each.is_none() => {
                    return Err(err(
                        format!("{path}.maxItems"),
                        "`maxItems` bounds the items of a `forEach`",
                    ));
                }
                Some(max) if crate::limits::FOR_EACH_ITEMS_RANGE.contains(&max) => ItemLimit {
                    max,
                    set_by: format!("{path}.maxItems"),
                },
                Some(max) => {
                    return Err(err(
                        format!("{path}.maxItems"),
                        format!(
                            "must be {}-{}, got {max}",
                            crate::limits::FOR_EACH_ITEMS_RANGE.start(),
                            crate::limits::FOR_EACH_ITEMS_RANGE.end()
                        ),
                    ));
                }
            };
            if s.critical && s.fallback.is_some() {
                return Err(err(
                    format!("{path}.fallback"),
                    "a critical step has no fallback: its failure fails the composite",
                ));
            }
            let mut depends_on = BTreeSet::new();
            let mut refs: Vec<(String, String)> = args
                .references()
                .into_iter()
                .map(|r| (r.root, join_path(&format!("{path}.args"), &r.at)))
                .collect();
            if let Some((t, _)) = &for_each {
                refs.extend(
                    t.references()
                        .into_iter()
                        .map(|r| (r.root, format!("{path}.forEach"))),
                );
            }
            for (root, at) in refs {
                if root == "input"
                    || root == "saga"
                    || (for_each.is_some() && root == item && !at.ends_with(".forEach"))
                {
                    continue;
                }
                match index_of(&root) {
                    Some(i) if names[i] == step_name => {
                        return Err(err(at, format!("step `{step_name}` refers to itself")));
                    }
                    Some(i) => {
                        depends_on.insert(i);
                    }
                    None => {
                        return Err(err(
                            at,
                            format!(
                                "unknown reference `{root}`: not `input`, a step{}",
                                if for_each.is_some() {
                                    " or the forEach item"
                                } else {
                                    ""
                                }
                            ),
                        ));
                    }
                }
            }
            let compensate = match &s.compensate {
                None => None,
                Some(c) => Some(Box::new(compile_compensation(
                    c,
                    &format!("{path}.compensate"),
                    step_name,
                    s.for_each.is_some(),
                    servers,
                    &index_of,
                )?)),
            };
            steps.push(Step {
                name: step_name.clone(),
                server: server.to_owned(),
                tool: tool.to_owned(),
                args,
                for_each,
                concurrency,
                max_items,
                critical: s.critical,
                fallback: s.fallback.clone(),
                cache: s.cache.clone(),
                depends_on: depends_on.into_iter().collect(),
                compensate,
            });
        }
        let order = topological_order(&steps).map_err(|cycle| {
            err(
                format!("{base}.steps"),
                format!("steps form a cycle: {}", cycle.join(" → ")),
            )
        })?;
        let output = Template::compile(&config.output)
            .map_err(|e| template_error(e, &format!("{base}.output")))?;
        for r in output.references() {
            if r.root != "input" && index_of(&r.root).is_none() {
                return Err(err(
                    join_path(&format!("{base}.output"), &r.at),
                    format!("unknown reference `{}`: not `input` or a step", r.root),
                ));
            }
        }
        // Re-index dependencies into execution order.
        let position: Vec<usize> = {
            let mut p = vec![0; steps.len()];
            for (new, &old) in order.iter().enumerate() {
                p[old] = new;
            }
            p
        };
        let mut ordered: Vec<Step> = order.iter().map(|&i| steps[i].clone()).collect();
        for s in &mut ordered {
            s.depends_on = s.depends_on.iter().map(|&d| position[d]).collect();
        }
        Ok(Self {
            name: name.to_owned(),
            config: config.clone(),
            steps: ordered,
            output,
            deadline: std::time::Duration::from_millis(
                config.deadline_ms.unwrap_or(DEFAULT_DEADLINE_MS),
            ),
        })
    }
}

/// A step's or an undo's `call` and `args` at `path`: `<server>.<tool>` of an enabled server,
/// and an object template.
fn compile_call<'c>(
    call: &'c str,
    args: &Value,
    path: &str,
    servers: &BTreeSet<String>,
) -> Result<(&'c str, &'c str, Template), ConfigError> {
    let Some((server, tool)) = call.split_once('.') else {
        return Err(err(format!("{path}.call"), "expected `<server>.<tool>`"));
    };
    if !servers.contains(server) {
        return Err(err(
            format!("{path}.call"),
            format!("no enabled server `{server}` in mcpServers"),
        ));
    }
    if tool.is_empty() {
        return Err(err(format!("{path}.call"), "the tool name is empty"));
    }
    if !args.is_object() {
        return Err(err(format!("{path}.args"), "expected an object"));
    }
    let args = Template::compile(args).map_err(|e| template_error(e, &format!("{path}.args")))?;
    Ok((server, tool, args))
}

/// Checks a step's `compensate`: a call to an enabled server whose arguments refer only to
/// `input`, `saga` and steps. Not on a `forEach` step: undoing some of its items and not others
/// has no single call.
fn compile_compensation(
    c: &CompensateConfig,
    path: &str,
    step_name: &str,
    for_each: bool,
    servers: &BTreeSet<String>,
    index_of: &dyn Fn(&str) -> Option<usize>,
) -> Result<Step, ConfigError> {
    if for_each {
        return Err(err(
            path.to_owned(),
            "a forEach step cannot be compensated by one call; compensate a step per item",
        ));
    }
    let (server, tool, args) = compile_call(&c.call, &c.args, path, servers)?;
    for r in args.references() {
        if r.root != "input" && r.root != "saga" && index_of(&r.root).is_none() {
            return Err(err(
                join_path(&format!("{path}.args"), &r.at),
                format!(
                    "unknown reference `{}`: not `input`, `saga` or a step",
                    r.root
                ),
            ));
        }
    }
    Ok(Step {
        name: format!("{step_name}.compensate"),
        server: server.to_owned(),
        tool: tool.to_owned(),
        args,
        for_each: None,
        concurrency: 1,
        max_items: ItemLimit {
            max: 1,
            set_by: path.to_owned(),
        },
        critical: true,
        fallback: None,
        cache: None,
        depends_on: Vec::new(),
        compensate: None,
    })
}

/// Kahn's algorithm; on a cycle, returns the names along one cycle.
fn topological_order(steps: &[Step]) -> Result<Vec<usize>, Vec<String>> {
    let n = steps.len();
    let mut indegree: Vec<usize> = steps.iter().map(|s| s.depends_on.len()).collect();
    let mut order = Vec::with_capacity(n);
    let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    while let Some(i) = ready.pop() {
        order.push(i);
        for (j, s) in steps.iter().enumerate() {
            if s.depends_on.contains(&i) {
                indegree[j] -= 1;
                if indegree[j] == 0 {
                    ready.push(j);
                }
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Walk dependencies from a step left over until one repeats: that is a cycle.
    let mut at = (0..n).find(|i| !order.contains(i)).unwrap_or(0);
    let mut seen: Vec<usize> = Vec::new();
    while !seen.contains(&at) {
        seen.push(at);
        at = steps[at]
            .depends_on
            .iter()
            .copied()
            .find(|d| !order.contains(d))
            .unwrap_or(at);
    }
    let start = seen.iter().position(|&s| s == at).unwrap_or(0);
    let mut cycle: Vec<String> = seen[start..]
        .iter()
        .rev()
        .map(|&i| steps[i].name.clone())
        .collect();
    if let Some(first) = cycle.first().cloned() {
        cycle.push(first);
    }
    Err(cycle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn servers() -> BTreeSet<String> {
        ["sql", "cosmos", "rest"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn compile(v: Value) -> Result<Workflow, ConfigError> {
        let config: CompositeConfig =
            serde_json::from_value(v).map_err(|e| err(String::new(), e.to_string()))?;
        Workflow::compile("demo", &config, &servers())
    }

    #[test]
    fn dependencies_come_from_references_and_order_follows() {
        let w = compile(json!({
            "description": "d",
            "input": { "type": "object", "properties": { "orderId": { "type": "string" } } },
            "steps": {
                "shipping": { "call": "rest.get_shipping_status", "args": { "orderId": "${order.orderId}" } },
                "order": { "call": "sql.get_order_details", "args": { "orderId": "${input.orderId}" }, "critical": true },
                "stock": { "call": "rest.check_inventory", "forEach": "${order.lines}", "as": "line", "args": { "productId": "${line.productId}" } }
            },
            "output": { "order": "${order}", "shipping": "${shipping}", "stock": "${stock}" }
        }))
        .expect("valid");
        assert_eq!(w.steps[0].name, "order");
        let order = 0;
        for s in &w.steps[1..] {
            assert_eq!(s.depends_on, vec![order], "{} waits for order", s.name);
        }
    }

    #[test]
    fn load_time_errors_name_the_path() {
        let cases = [
            (
                json!({ "description": "d", "steps": { "a": { "call": "sql.x", "args": { "id": "${ordrs.id}" } } }, "output": {} }),
                "orchestrator.composites.demo.steps.a.args.id",
                "unknown reference `ordrs`",
            ),
            (
                json!({ "description": "d", "steps": { "a": { "call": "sql.x", "args": { "v": "${b.v}" } }, "b": { "call": "sql.y", "args": { "v": "${a.v}" } } }, "output": {} }),
                "orchestrator.composites.demo.steps",
                "cycle",
            ),
            (
                json!({ "description": "d", "steps": { "a": { "call": "nosuch.x" } }, "output": {} }),
                "orchestrator.composites.demo.steps.a.call",
                "no enabled server `nosuch`",
            ),
            (
                json!({ "description": "d", "steps": { "a": { "call": "sqlx" } }, "output": {} }),
                "orchestrator.composites.demo.steps.a.call",
                "<server>.<tool>",
            ),
            (
                json!({ "description": "d", "steps": { "a": { "call": "sql.x" } }, "output": { "v": "${nope}" } }),
                "orchestrator.composites.demo.output.v",
                "unknown reference `nope`",
            ),
            (
                json!({ "description": "d", "input": { "type": 12 }, "steps": { "a": { "call": "sql.x" } }, "output": {} }),
                "orchestrator.composites.demo.input",
                "JSON Schema",
            ),
            (
                json!({ "description": "d", "steps": { "a": { "call": "sql.x", "args": { "v": "${a.v}" } } }, "output": {} }),
                "orchestrator.composites.demo.steps.a.args.v",
                "itself",
            ),
            (
                json!({ "description": "d", "steps": { "a": { "call": "sql.x", "concurrency": 0 } }, "output": {} }),
                "orchestrator.composites.demo.steps.a.concurrency",
                "1-64",
            ),
            (
                json!({ "description": "d", "steps": { "a": { "call": "sql.x", "maxItems": 5 } }, "output": {} }),
                "orchestrator.composites.demo.steps.a.maxItems",
                "bounds the items of a `forEach`",
            ),
            (
                json!({ "description": "d", "steps": {
                    "a": { "call": "sql.x" },
                    "b": { "call": "sql.y", "forEach": "${a.list}", "maxItems": 0 }
                }, "output": {} }),
                "orchestrator.composites.demo.steps.b.maxItems",
                "must be 1-1000000, got 0",
            ),
            (
                json!({ "description": "d", "steps": { "a": { "call": "sql.x", "args": { "v": "${oops" } } }, "output": {} }),
                "orchestrator.composites.demo.steps.a.args.v",
                "",
            ),
        ];
        for (config, path, message) in cases {
            let e = compile(config.clone()).expect_err(&config.to_string());
            assert_eq!(e.path, path, "{config}: {e}");
            assert!(e.message.contains(message), "{config}: {e}");
        }
    }

    #[test]
    fn for_each_limits_come_from_the_step_or_the_global_setting() {
        let config: CompositeConfig =
            serde_json::from_value(json!({ "description": "d", "steps": {
            "a": { "call": "sql.x" },
            "b": { "call": "sql.y", "forEach": "${a.list}" },
            "c": { "call": "sql.z", "forEach": "${a.list}", "maxItems": 7 }
        }, "output": {} }))
            .expect("config");
        let w = Workflow::compile_with_limit("demo", &config, &servers(), 50).expect("valid");
        let limit = |name: &str| {
            w.steps
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.max_items.clone())
                .expect("step")
        };
        assert_eq!(
            limit("b"),
            ItemLimit {
                max: 50,
                set_by: "orchestrator.limits.maxForEachItems".into()
            }
        );
        assert_eq!(
            limit("c"),
            ItemLimit {
                max: 7,
                set_by: "orchestrator.composites.demo.steps.c.maxItems".into()
            }
        );
        let default = Workflow::compile("demo", &config, &servers()).expect("valid");
        let b = default.steps.iter().find(|s| s.name == "b").expect("b");
        assert_eq!(b.max_items.max, crate::limits::DEFAULT_MAX_FOR_EACH_ITEMS);
    }

    #[test]
    fn a_longer_cycle_is_named_in_order() {
        let e = compile(json!({ "description": "d", "steps": {
            "a": { "call": "sql.x", "args": { "v": "${c.v}" } },
            "b": { "call": "sql.x", "args": { "v": "${a.v}" } },
            "c": { "call": "sql.x", "args": { "v": "${b.v}" } }
        }, "output": {} }))
        .expect_err("cycle");
        assert!(
            e.message.contains('a') && e.message.contains('b') && e.message.contains('c'),
            "{e}"
        );
    }
}
