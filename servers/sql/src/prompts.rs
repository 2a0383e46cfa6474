//! Prompts: ready-made requests an agent can offer its user, each naming the tools of this
//! server that answer it, so the model asks the database instead of guessing.

use retail_seed::period::Period;
use rmcp::model::{GetPromptResult, Prompt, PromptArgument, PromptMessage, Role};

use crate::model::{Customer, MetricType};

/// A report on one customer: profile, orders, what they buy.
pub const CUSTOMER_REPORT: &str = "customer_report";

/// A review of store sales over a period: totals, regions, best customers.
pub const SALES_REVIEW: &str = "sales_review";

/// The prompts this server offers.
pub fn list() -> Vec<Prompt> {
    vec![
        Prompt::new(
            CUSTOMER_REPORT,
            Some(
                "A short report on one customer: who they are, how much and how often they buy, \
                 what they buy most, anything unusual. Uses get_customer, get_customer_orders \
                 and get_order_details.",
            ),
            Some(vec![
                PromptArgument::new("customerId")
                    .with_title("Customer id")
                    .with_description("The customer to report on, e.g. CUST-0001")
                    .with_required(true),
            ]),
        )
        .with_title("Customer report"),
        Prompt::new(
            SALES_REVIEW,
            Some(
                "A review of store sales over a period: revenue, orders and average basket, the \
                 regions, and the best customers. Uses calculate_metrics, get_sales_by_region \
                 and get_top_customers.",
            ),
            Some(vec![
                PromptArgument::new("period")
                    .with_title("Period")
                    .with_description(
                        "`all` (default), `YYYY`, `YYYY-MM`, `YYYY-Qn`, `last_N_days` or \
                         `YYYY-MM-DD..YYYY-MM-DD`",
                    )
                    .with_required(false),
            ]),
        )
        .with_title("Sales review"),
    ]
}

/// `customer_report` for `customer`, looked up already (an unknown id is refused before this).
pub fn customer_report(customer: &Customer) -> GetPromptResult {
    let text = format!(
        "Write a short report on customer {id}: {name}, {segment} segment, region {region}, \
         customer since {since}.\n\
         Use this server's tools:\n\
         - `get_customer` with customerId {id}: the profile with lifetime order count and spend;\n\
         - `get_customer_orders` with customerId {id}: the recent orders, newest first, each \
           with its lines;\n\
         - `get_order_details` for any order worth a closer look.\n\
         Cover: how much and how often they buy, the products they buy most, and anything \
         unusual (cancelled orders, a long gap since the last order). Quote order ids, and \
         state amounts as the tools give them.",
        id = customer.customer_id,
        name = customer.name,
        segment = customer.segment,
        region = customer.region,
        since = customer
            .created_at
            .get(..10)
            .unwrap_or(&customer.created_at),
    );
    GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
        .with_description(format!("Report on customer {}", customer.customer_id))
}

/// `sales_review` over `period` (parsed already, so a bad one is refused before this).
pub fn sales_review(period: &Period) -> GetPromptResult {
    let label = &period.label;
    // Named as the tool's schema names them, so the prompt cannot drift from the tool.
    let metrics: Vec<String> = [
        MetricType::Sales,
        MetricType::Orders,
        MetricType::AverageBasket,
    ]
    .iter()
    .filter_map(|m| serde_json::to_value(m).ok())
    .map(|v| format!("`{}`", v.as_str().unwrap_or_default()))
    .collect();
    let text = format!(
        "Review store sales for the period `{label}`.\n\
         Use this server's tools:\n\
         - `calculate_metrics` with period `{label}`, once per metricType ({metrics});\n\
         - `get_sales_by_region` with period `{label}`: revenue and orders per region;\n\
         - `get_top_customers` (by spend, and by orders) for the best customers{since}.\n\
         Summarise the totals, compare the regions (which lead, which lag), name the top \
         customers with their figures, and end with two or three points worth acting on.",
        since = if period.label == "all" {
            String::new()
        } else {
            let first_day = period.from.get(..10).unwrap_or(&period.from);
            format!(", with `since` set to the period's first day ({first_day})")
        },
        metrics = metrics.join(", "),
    );
    GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
        .with_description(format!("Sales review, period {label}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(result: &GetPromptResult) -> String {
        serde_json::to_value(&result.messages[0].content).expect("serializes")["text"]
            .as_str()
            .expect("text")
            .to_owned()
    }

    #[test]
    fn every_prompt_is_described_and_names_tools_this_server_has() {
        let prompts = list();
        assert_eq!(prompts.len(), 2);
        for prompt in &prompts {
            let description = prompt.description.as_deref().expect("described");
            assert!(description.contains("Uses "), "{description}");
            assert!(prompt.title.is_some());
        }
        let customer = Customer {
            customer_id: "CUST-0001".into(),
            name: "Ada".into(),
            email: "ada@example.com".into(),
            region: "north".into(),
            segment: "premium".into(),
            created_at: "2024-01-02T03:04:05Z".into(),
            order_count: 3,
            total_spent: 100.0,
        };
        let report = text_of(&customer_report(&customer));
        for needle in [
            "CUST-0001",
            "Ada",
            "premium",
            "2024-01-02",
            "get_customer`",
            "get_customer_orders",
            "get_order_details",
        ] {
            assert!(report.contains(needle), "{needle} in {report}");
        }
        let quarter = Period::parse(Some("2024-Q1")).expect("a period");
        let review = text_of(&sales_review(&quarter));
        for needle in [
            "2024-Q1",
            "calculate_metrics",
            "get_sales_by_region",
            "get_top_customers",
            "since` set to the period's first day (2024-01-01)",
            "`sales`, `orders`, `average_basket`",
        ] {
            assert!(review.contains(needle), "{needle} in {review}");
        }
        let all = text_of(&sales_review(&Period::all()));
        assert!(!all.contains("since"), "{all}");
    }
}
