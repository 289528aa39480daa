//! The record store: an in-memory [`index::Index`] kept equal to the etcd keyspace under the prefix by
//! [`follower::follow`], which lists once and then follows a watch. Queries read the index only.

pub mod follower;
pub mod history;
pub mod index;
pub mod record;
pub mod serial;

use std::sync::{Arc, RwLock};

/// The index shared between the follower (writer) and the DNS handlers (readers).
pub type SharedIndex = Arc<RwLock<index::Index>>;
