//! Sessions: the model every flavour shares, id generation, and `SessionService`, which holds
//! every operation on sessions (open, get, update, close, transfer, lock, release). Nothing in
//! here knows about HTTP.

pub mod id;
pub mod model;
pub mod service;

pub use model::*;
pub use service::*;
