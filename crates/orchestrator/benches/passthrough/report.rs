//! How the figures are printed: one titled section per measurement, tables, and aim lines that
//! each end in `met` or `MISSED`.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

/// Prints a section's title.
pub fn section(n: usize, title: &str) {
    println!();
    println!("== {n}. {title}");
}

/// An empty table with `header`, in the bench's style.
pub fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header(header);
    table
}

/// Which way an aim points.
#[derive(Debug, Clone, Copy)]
pub enum Aim {
    /// The figure should be at most this.
    AtMost(f64),
    /// The figure should be under this.
    Under(f64),
    /// The figure should be at least this.
    AtLeast(f64),
}

impl Aim {
    fn met(self, value: f64) -> bool {
        match self {
            Aim::AtMost(a) => value <= a,
            Aim::Under(a) => value < a,
            Aim::AtLeast(a) => value >= a,
        }
    }

    fn describe(self, unit: &str) -> String {
        let (op, a) = match self {
            Aim::AtMost(a) => ("<=", a),
            Aim::Under(a) => ("<", a),
            Aim::AtLeast(a) => (">=", a),
        };
        format!("aim {op} {}{unit}", trim(a))
    }
}

/// Prints `what: VALUE UNIT (aim OP X UNIT) met|MISSED`; `None` (a figure `/proc` could not
/// give) prints `MISSED` with the reason.
pub fn aim(what: &str, value: Option<f64>, decimals: usize, unit: &str, aim: Aim) {
    match value {
        Some(v) => println!(
            "  {what}: {v:.decimals$}{unit} ({}) {}",
            aim.describe(unit),
            if aim.met(v) { "met" } else { "MISSED" }
        ),
        None => println!("  {what}: not measured ({}) MISSED", aim.describe(unit)),
    }
}

/// `12` rather than `12.0`, `0.5` as is.
fn trim(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// `1234567.8` as `1,234,568`.
pub fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 && digits != "0" {
        out.insert(0, '-');
    }
    out
}

/// A figure that may be missing, to `decimals` places, or `-`.
pub fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// The median of `values` (the upper one of an even count), or 0.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
