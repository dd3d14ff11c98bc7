//! civicast: keeps public-service slogans rotating on a city's displays and proves every play.
//!
//! # Map, by layer
//!
//! A core that decides, and shells around it that move bytes. Each module's first lines say
//! what it owns and what it must not touch.
//!
//! **The core** (`core/`): plain data and pure functions, no tokio, sqlx, MQTT, HTTP, file
//! system or wall clock (`tests/layering.rs` fails the build's tests if one creeps in).
//! - [`core::model`]: displays, classes, feeds, ad sets and slogans, valid once built.
//! - [`core::wire`]: the MQTT contract's topics and payloads; reading what displays send.
//! - [`core::catalog`]: parsing and validating the operators' files from their text, every
//!   problem with its file, line and field.
//! - [`core::rotation`]: **the rotation rule**: which slogan plays next on a feed, and when
//!   each feed's slots fall.
//! - [`core::play`]: building a play command from a pick: text per class, duration, expiry.
//! - [`core::receipt`]: **the receipt decision**: given the play, membership and the clock,
//!   counted or rejected, and why.
//! - [`core::approval`]: **the approval rule** (four eyes) for ad-set revisions, and
//!   grouping revisions into histories.
//! - [`core::audit`]: audit arithmetic, **one file per question**: [`core::audit::plays`]
//!   (play counts), [`core::audit::compliance`], [`core::audit::sample`] (the weekly
//!   inspection sample), [`core::audit::reconcile`] (planned against played).
//!
//! **The shells**
//! - [`settings`]: the config file and `CIVICAST_*` variables, parsed once into types.
//! - [`files`]: reads `devices/` and `schedules/` from disk for [`core::catalog`].
//! - [`store`]: SQLite and PostgreSQL behind one trait pair; [`store::Db`] opens either
//!   from a [`store::DatabaseUrl`]; [`store::sql`] holds the SQL both backends share.
//! - [`mqtt`]: the daemon's own session ([`mqtt::session`]) and the embedded broker
//!   ([`mqtt::broker`]).
//! - [`daemon`]: **one startup**, [`daemon::App::start`], used by `serve`, `demo`, the tests
//!   and the benchmarks; the tasks as types ([`daemon::Scheduler`], [`daemon::Ingest`],
//!   [`daemon::FileWatcher`], [`daemon::Pruner`]); the state they share
//!   ([`daemon::state::Shared`]).
//! - [`api`]: the HTTP API: tokens and roles, ad sets, inventory, audit routes.
//! - [`console`]: the web console at `/`: sessions, pages in Chinese and English, embedded assets.
//! - [`reports`]: the audit reports as users ask for them (the store read, the core's
//!   arithmetic, the answer's shape), shared by the API and the command line;
//!   [`reports::format`] writes CSV and terminal tables.
//! - [`cli`]: the `civicast` commands, one file each.
//! - [`metrics`] (Prometheus counters), [`memory`] (glibc housekeeping), [`sim`] (a
//!   simulated display fleet), [`city`] (the first city's files).
//!
//! The benchmark harness is not part of this crate: it is the workspace member `bench/`.
pub mod api;
pub mod city;
pub mod cli;
pub mod console;
pub mod core;
pub mod daemon;
pub mod files;
pub mod memory;
pub mod metrics;
pub mod mqtt;
pub mod receipt_log;
pub mod reports;
pub mod settings;
pub mod sim;
pub mod store;
