//! Momentum-format logs: the line layouts of ec_logger's mainlog and
//! bounce_logger's bouncelog (reference §5.1), with the connection stage
//! numbers of §6. (Named `logs`: `log` is the logging facade's crate.)
//!
//! This part is sans-IO: it turns one record into one line, byte for
//! byte as Momentum 2.2 lays it out; the per-shard writers that feed it
//! from the event stream come on top of it.
//!
//! Owns the record types and their formatting. May call: events (the binding
//! fields), smtp (the client's stages), bounce (classes). Must never: do I/O, or
//! let a field's text end a line or shift the fields after it.

pub mod mainlog;
