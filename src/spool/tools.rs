//! Offline spool tools (verify, inspect, show). Read-only; no glommio.
