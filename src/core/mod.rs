//! The core that decides: plain data and plain functions, no I/O.
//!
//! Nothing under `core/` may use tokio, sqlx, rumqttc, rmqtt, axum, tower or `std::fs` /
//! `std::net`: the shells (`daemon`, `store`, `mqtt`, `api`, `cli`) move bytes and hand
//! plain values in; this layer says what they mean. `tests/layering.rs` enforces it.
pub mod approval;
pub mod audit;
pub mod catalog;
pub mod inspect;
pub mod led;
pub mod model;
pub mod play;
pub mod receipt;
pub mod rotation;
pub mod tlog;
pub mod urgent;
pub mod wire;
