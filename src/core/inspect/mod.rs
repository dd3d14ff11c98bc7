//! Inspections and findings (issue 14): what can be inspected (units), the checklist and the
//! fixed-frequency rules (`devices/inspections.toml`), the weekly plan, a finding's life as a
//! fold over its append-only events, and the monthly scorecard per operating company.
//!
//! Pure: it is handed text and rows and never reads the disk, the database or the clock.
//! Owns: what a unit, a plan, a finding's state and a scorecard are, and which changes a
//! finding allows. Must not touch SQL, HTTP or files (the store, `api::inspect`, `files`).

pub mod config;
pub mod finding;
pub mod photo;
pub mod plan;
pub mod scorecard;
pub mod units;

pub use config::{ChecklistItem, InspectConfig, Rule};
pub use finding::{Finding, FindingEvent, FindingState, Refusal};
pub use units::{Kind, Unit, Units};

/// What the API needs to plan and record inspections: the units and the configuration,
/// as `civicast check` accepted them.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    pub units: Units,
    pub config: InspectConfig,
}

/// One item of a visit's checklist, as the inspector found it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemResult {
    pub item: String,
    pub pass: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub photos: Vec<String>,
    /// For a failed item: the fix's deadline (RFC 3339), instead of the item's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
}

/// A visit, written once.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Inspection {
    pub id: String,
    pub unit: String,
    pub company: String,
    pub at_ms: i64,
    pub by: String,
    pub by_token: Option<i64>,
    pub recorded_ms: i64,
    pub items: Vec<ItemResult>,
    /// For a unit with a display: what it played around the visit.
    pub evidence: Option<serde_json::Value>,
}
