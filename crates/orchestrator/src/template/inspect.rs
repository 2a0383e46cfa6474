//! Reading a compiled template without rendering it: whether it holds a reference, and which.

use super::Reference;
use super::tree::{Node, Piece, Ref};

impl Node {
    pub(super) fn has_reference(&self) -> bool {
        match self {
            Node::Literal(_) => false,
            Node::Ref(_) => true,
            Node::Text(pieces) => pieces.iter().any(|p| matches!(p, Piece::Ref(_))),
            Node::Array(nodes) | Node::Concat { parts: nodes, .. } => {
                nodes.iter().any(Node::has_reference)
            }
            Node::Object(fields) => fields.iter().any(|(_, n)| n.has_reference()),
            Node::Zip { items, with, .. } => items.has_reference() || with.has_reference(),
            Node::Join { left, right, .. } => left.has_reference() || right.has_reference(),
            Node::Pick { from, within, .. } => from.has_reference() || within.has_reference(),
            Node::Default { value, fallback } => value.has_reference() || fallback.has_reference(),
        }
    }

    pub(super) fn collect_references(&self, out: &mut Vec<Reference>) {
        let mut push = |r: &Ref| {
            out.push(Reference {
                root: r.root.clone(),
                at: r.at.clone(),
                text: r.text.clone(),
            })
        };
        match self {
            Node::Literal(_) => {}
            Node::Ref(r) => push(r),
            Node::Text(pieces) => {
                for piece in pieces {
                    if let Piece::Ref(r) = piece {
                        push(r);
                    }
                }
            }
            Node::Array(nodes) | Node::Concat { parts: nodes, .. } => {
                for node in nodes {
                    node.collect_references(out);
                }
            }
            Node::Object(fields) => {
                for (_, node) in fields {
                    node.collect_references(out);
                }
            }
            Node::Zip {
                items: a, with: b, ..
            }
            | Node::Join {
                left: a, right: b, ..
            }
            | Node::Pick {
                from: a, within: b, ..
            }
            | Node::Default {
                value: a,
                fallback: b,
            } => {
                a.collect_references(out);
                b.collect_references(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::template::fixtures::compile;
    use crate::template::{Reference, Scope};

    #[test]
    fn is_constant_tells_templates_without_references() {
        for constant in [
            json!(null),
            json!(1),
            json!("plain"),
            json!("$${not.a.ref}"),
            json!({ "a": [1, { "b": "c" }] }),
            json!({ "$concat": [[1], [2]] }),
            json!({ "$default": [null, "x"] }),
        ] {
            let t = compile(constant.clone());
            assert!(t.is_constant(), "{constant}");
            assert!(t.references().is_empty(), "{constant}");
            t.render(&Scope::new())
                .expect("a constant renders in an empty scope");
        }
        let folded = compile(json!({ "a": [1, { "b": "c" }], "$$k": "v" }));
        assert_eq!(
            folded.render(&Scope::new()).expect("renders"),
            json!({ "a": [1, { "b": "c" }], "$k": "v" })
        );
        for variable in [
            json!("${x}"),
            json!("a ${x} b"),
            json!([1, { "a": "${x.y}" }]),
            json!({ "$default": [null, "${x}"] }),
            json!({ "$pick": { "from": [], "where": "f", "in": "${x}" } }),
        ] {
            assert!(!compile(variable.clone()).is_constant(), "{variable}");
        }
        assert_eq!(
            compile(json!({ "$concat": [[1], [2]] }))
                .render(&Scope::new())
                .expect("renders"),
            json!([1, 2])
        );
    }

    #[test]
    fn references_lists_every_root_with_its_place() {
        let t = compile(json!({
            "customerId": "${input.customerId}",
            "title": "Orders of ${input.customerId} (${orders.count})",
            "lines": [1, "${orders.orders[0].lines}"],
            "customers": { "$zip": { "items": "${top.customers}", "with": "${behavior}", "as": "behavior" } },
            "all": { "$concat": [[], "${a.x[*].y}"] },
            "segment": { "$default": ["${behavior.segment}", "$${literal}"] },
            "sales": { "$join": { "left": "${store}", "right": "${online}", "on": "region" } },
            "stock": { "$pick": { "from": "${stock.items}", "where": "id", "in": "${orders.ids}" } }
        }));
        let refs: Vec<(String, String, String)> = t
            .references()
            .into_iter()
            .map(|r| (r.root, r.at, r.text))
            .collect();
        let expect =
            |root: &str, at: &str, text: &str| (root.to_owned(), at.to_owned(), text.to_owned());
        // serde_json objects iterate in key order.
        assert_eq!(
            refs,
            vec![
                expect("a", "all.$concat[1]", "${a.x[*].y}"),
                expect("input", "customerId", "${input.customerId}"),
                expect("top", "customers.$zip.items", "${top.customers}"),
                expect("behavior", "customers.$zip.with", "${behavior}"),
                expect("orders", "lines[1]", "${orders.orders[0].lines}"),
                expect("store", "sales.$join.left", "${store}"),
                expect("online", "sales.$join.right", "${online}"),
                expect("behavior", "segment.$default[0]", "${behavior.segment}"),
                expect("stock", "stock.$pick.from", "${stock.items}"),
                expect("orders", "stock.$pick.in", "${orders.ids}"),
                expect("input", "title", "${input.customerId}"),
                expect("orders", "title", "${orders.count}"),
            ]
        );
        let root_refs = compile(json!("${whole}")).references();
        assert_eq!(
            root_refs,
            vec![Reference {
                root: "whole".into(),
                at: String::new(),
                text: "${whole}".into()
            }]
        );
    }
}
