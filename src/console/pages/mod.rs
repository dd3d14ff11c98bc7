//! One handler per page, each with its own template under `templates/console/`.

pub mod about;
pub mod adsets;
pub mod audit;
pub mod displays;
pub mod findings;
pub mod inspect;
pub mod overview;
pub mod plays;
pub mod scorecards;
pub mod signin;
pub mod upload;
pub mod urgent;
