//! MQTT shells: the daemon's own client session (`session`) and the embedded broker for the
//! nothing-to-install mode (`broker`). What the bytes mean is `core::wire`'s business.
pub mod broker;
pub mod session;

pub use session::{publish_play, publish_retained, start, Ack, Delivery, Session, SessionOptions};
