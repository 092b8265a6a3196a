// TEMPORARY (dashboard branch): lets `src/http/dashboard.rs` compile standalone.
// The lead wires `pub mod dashboard;` into the real `http` module on main.
pub mod http {
    pub mod dashboard;
}
