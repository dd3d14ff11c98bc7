//! civicast: keeps public-service slogans rotating on a city's displays and proves every play.
//!
//! A functional core (`model`, `catalog`, `rotation`, `audit`, `wire`) with thin shells
//! around it (`broker`, `mqtt`, `store`, `daemon`, `sim`).
pub mod adsets;
pub mod api;
pub mod city;
pub mod cli;
pub mod core;
pub mod daemon;
pub mod inventory;
pub mod metrics;
pub mod mqtt;
pub mod reports;
pub mod settings;
pub mod sim;
pub mod store;
