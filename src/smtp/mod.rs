//! SMTP protocol engines (sans-IO). Temporary module file from the `client`
//! branch: the integrator merges it with the server branch's `mod.rs`.

pub mod client;
