//! `sqlx::migrate!` embeds `migrations/` when the crate compiles; without this, cargo would
//! not know to rebuild when a migration is added or edited.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
