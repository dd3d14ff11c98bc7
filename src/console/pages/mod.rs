//! One handler per page, each with its own template under `templates/console/`.

pub mod about;
pub mod adsets;
pub mod audit;
pub mod displays;
pub mod overview;
pub mod plays;
pub mod signin;
pub mod upload;
pub mod urgent;
