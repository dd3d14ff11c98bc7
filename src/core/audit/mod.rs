//! Audit arithmetic, one file per question an auditor asks: `plays` (play counts by any
//! grouping), `compliance` (did each display meet its cadence while on), `sample` (the
//! weekly inspection sample) and `reconcile` (planned against played).
//!
//! Pure: the store hands rows in; the shells (`reports`, `api`, `cli`) format the answers.

pub mod compliance;
pub mod members;
pub mod plays;
pub mod reconcile;
pub mod sample;

pub use plays::*;
