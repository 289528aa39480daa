//! BGP mode, the controller's half: the custom resources ([`crd`]), their checking ([`check`]) and who
//! advertises what to which router ([`plan`]). The speakers run the sessions; the controller sends each
//! node its [`proto::announce::v1::BgpConfig`] over the same stream as its layer-2 assignments
//! (`announce.proto`, step 9).

pub mod check;
pub mod crd;
pub mod plan;
pub mod source;

pub mod sessions;

pub use crd::{BFDProfile, BGPAdvertisement, BGPPeer, BGPSessionState};
