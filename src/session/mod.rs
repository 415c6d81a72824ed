//! Sessions: the model every flavour shares, id generation, the clock they live by, and
//! `SessionService`, which holds every operation on sessions (open, get, update, close,
//! transfer, lock, release). Nothing in here knows about HTTP.

pub mod audit;
pub mod clock;
pub mod id;
pub mod model;
pub mod service;

/// The store's outcome and error types, as flavours see them: a flavour imports nothing from
/// `store`.
pub use crate::store::{CreateOutcome, IdentityTransfer, LockOutcome, StoreError, StoreResult};
pub use clock::{now_millis, Clock};
pub use model::*;
pub use service::*;
