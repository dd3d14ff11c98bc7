//! civicast: keeps public-service slogans rotating on a city's displays and proves every play.
pub mod model;
