//! The support shared by the integration tests, one file per concern: waiting with a
//! deadline (`wait`), the test city (`city`), starting the daemon (`daemon`), MQTT clients
//! and displays (`mqtt`), HTTP calls (`http`), reading back what was stored (`stored`),
//! real Mosquitto and PostgreSQL (`servers`), the inspection tests' city (`bureau`) and the repository's own files (`repo`).
//! Everything is re-exported here: a test file says `mod common;` and `use common::*;`
//! (or names what it takes).
// Each test binary compiles this module whole but uses only part of it; the rest would
// warn as dead code in every binary that does not need it.
#![allow(dead_code)]

mod bureau;
mod city;
mod daemon;
mod http;
mod mqtt;
mod repo;
mod servers;
mod stored;
mod wait;

// A binary that takes nothing from one of these files would warn that its re-export is
// unused; the imports inside each file are still checked.
#[allow(unused_imports)]
pub use self::{
    bureau::*, city::*, daemon::*, http::*, mqtt::*, repo::*, servers::*, stored::*, wait::*,
};
